package store

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
)

// The data directory carries a marker, FormatFile, naming the store's
// format version. Open reads it before Badger touches the folder, so that
// a folder written by a newer Herald, a folder that is not Herald's (a
// mistyped data_dir pointing at someone's files), or one that cannot be
// read is refused with a message saying what to do — never silently
// reset, and never filled with a store's files among other things.

// FormatFile is the name of the data directory's format marker.
const FormatFile = "herald-format"

// ErrDataDir is a data directory Open refuses: errors.Is tells it from
// other failures; the message says why and what to do.
var ErrDataDir = errors.New("store: data directory refused")

// formatLine is the marker's content for this version.
func formatLine() string { return "herald store format " + strconv.Itoa(layoutVersion) + "\n" }

// checkDataDir makes dir when missing, and refuses it unless it is empty
// (then marked), marked with a format this version reads, or a store of
// a Herald from before the marker (then marked).
func checkDataDir(dir string, companions []string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return refuse("data directory %q cannot be made (%v): make it, or set data_dir to a folder Herald may write to", dir, err)
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return refuse("data directory %q cannot be read (%v): give the user Herald runs as read and write access to it", dir, err)
	}
	marker := filepath.Join(dir, FormatFile)
	b, err := os.ReadFile(marker)
	switch {
	case err == nil:
		return checkFormat(dir, string(b))
	case !errors.Is(err, fs.ErrNotExist):
		return refuse("%s cannot be read (%v): give the user Herald runs as read and write access to the data directory", marker, err)
	}
	var foreign []string
	badger := false
	for _, e := range entries {
		name := e.Name()
		switch {
		case name == "MANIFEST":
			badger = true
		case isStoreFile(name), slices.Contains(companions, name):
		default:
			foreign = append(foreign, name)
		}
	}
	if len(foreign) > 0 && !badger {
		slices.Sort(foreign)
		if len(foreign) > 3 {
			foreign = append(foreign[:3], "…")
		}
		return refuse("data directory %q holds files that are not Herald's (%s) and no %s: set data_dir to an empty folder, or to a Herald data directory",
			dir, strings.Join(foreign, ", "), FormatFile)
	}
	// Empty, or a store written before the marker existed (format 1).
	if err := writeMarker(dir); err != nil {
		return refuse("data directory %q: writing %s: %v", dir, FormatFile, err)
	}
	return nil
}

// checkFormat reads the marker's content.
func checkFormat(dir, content string) error {
	v, ok := strings.CutPrefix(strings.TrimSpace(content), "herald store format ")
	n, err := strconv.Atoi(v)
	if !ok || err != nil || n < 1 {
		return refuse("%s holds %q, not a Herald store format: the data directory is damaged or not Herald's; restore a backup (herald restore) into an empty folder",
			filepath.Join(dir, FormatFile), abbreviate(content, 40))
	}
	if n > layoutVersion {
		return refuse("data directory %q was written by a newer Herald (store format %d; this version reads format %d): run that newer version, or restore a backup made with this one into an empty folder",
			dir, n, layoutVersion)
	}
	return nil
}

// isStoreFile reports the store's own files and folders, Badger's and
// Herald's.
func isStoreFile(name string) bool {
	switch name {
	case walDirName, "KEYREGISTRY", "DISCARD", "LOCK", "MANIFEST":
		return true
	}
	return strings.HasSuffix(name, ".sst") || strings.HasSuffix(name, ".vlog") || strings.HasSuffix(name, ".mem")
}

// writeMarker writes the marker durably: to a temporary file, synced,
// renamed, and the folder synced.
func writeMarker(dir string) error {
	tmp := filepath.Join(dir, FormatFile+".tmp")
	if err := os.WriteFile(tmp, []byte(formatLine()), 0o600); err != nil {
		return err
	}
	if err := syncFile(tmp); err != nil {
		return err
	}
	if err := os.Rename(tmp, filepath.Join(dir, FormatFile)); err != nil {
		return err
	}
	return syncDir(dir)
}

func refuse(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrDataDir, fmt.Sprintf(format, args...))
}

func abbreviate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
