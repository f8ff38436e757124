package store

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// Open refuses a data directory it must not use, saying what to do, and
// leaves it as it was; it marks one it takes.
func TestOpenChecksTheDataDirectory(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name    string
		prepare func(t *testing.T, dir string) string // returns the data_dir to open
		want    string                                // in the error; "" opens
	}{
		{"missing: made", func(t *testing.T, dir string) string { return filepath.Join(dir, "new", "data") }, ""},
		{"empty", func(t *testing.T, dir string) string { return dir }, ""},
		{"someone's files", func(t *testing.T, dir string) string {
			write(t, filepath.Join(dir, "notes.txt"), "hello")
			if err := os.Mkdir(filepath.Join(dir, "photos"), 0o700); err != nil {
				t.Fatal(err)
			}
			return dir
		}, `holds files that are not Herald's (notes.txt, photos)`},
		{"a newer format", func(t *testing.T, dir string) string {
			write(t, filepath.Join(dir, FormatFile), "herald store format 9\n")
			return dir
		}, "written by a newer Herald (store format 9; this version reads format 1)"},
		{"a damaged marker", func(t *testing.T, dir string) string {
			write(t, filepath.Join(dir, FormatFile), "\x00\x00garbage")
			return dir
		}, "not a Herald store format"},
		{"the application's own files only", func(t *testing.T, dir string) string {
			write(t, filepath.Join(dir, "dev-credentials.json"), "{}")
			return dir
		}, ""},
		{"a file, not a folder", func(t *testing.T, dir string) string {
			p := filepath.Join(dir, "data")
			write(t, p, "x")
			return p
		}, "cannot be made"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			dir := c.prepare(t, t.TempDir())
			before := listDir(dir)
			s, err := Open(Options{Dir: dir, Companions: []string{"dev-credentials.json"}})
			if c.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				defer s.Close()
				if b, err := os.ReadFile(filepath.Join(dir, FormatFile)); err != nil || string(b) != "herald store format 1\n" {
					t.Fatalf("marker: %q %v", b, err)
				}
				return
			}
			if !errors.Is(err, ErrDataDir) || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("open: %v, want ErrDataDir saying %q", err, c.want)
			}
			if after := listDir(dir); after != before {
				t.Fatalf("the refused folder changed: %s, was %s", after, before)
			}
		})
	}
}

// A store written before the marker existed is taken, marked, and keeps
// what it held.
func TestOpenMarksAStoreFromBeforeTheMarker(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	s, err := Open(Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Append(context.Background(), "c", Record{ID: "a", Payload: []byte("kept")}); err != nil {
		t.Fatal(err)
	}
	_ = s.Close()
	if err := os.Remove(filepath.Join(dir, FormatFile)); err != nil {
		t.Fatal(err)
	}
	s, err = Open(Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	page, err := s.Read(context.Background(), "c", 0, 10)
	if err != nil || len(page.Entries) != 1 || string(page.Entries[0].Payload) != "kept" {
		t.Fatalf("read: %+v %v", page, err)
	}
	if _, err := os.Stat(filepath.Join(dir, FormatFile)); err != nil {
		t.Fatalf("not marked again: %v", err)
	}
}

// A store whose files are damaged is not opened, and not reset: the
// error says what to do and the files stay as they were.
func TestOpenRefusesADamagedStoreWithoutResettingIt(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	s, err := Open(Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 100 {
		if _, err := s.Append(context.Background(), "c", Record{ID: string(rune('a' + i%26)), Payload: []byte("data")}); err != nil {
			t.Fatal(err)
		}
	}
	_ = s.Close()
	manifest := filepath.Join(dir, "MANIFEST")
	if err := os.Truncate(manifest, 5); err != nil {
		t.Fatal(err)
	}
	before := listDir(dir)
	_, err = Open(Options{Dir: dir})
	if err == nil || !strings.Contains(err.Error(), "Herald never resets a data directory") || !strings.Contains(err.Error(), "herald restore") {
		t.Fatalf("open a store with a truncated MANIFEST: %v, want a refusal saying what to do", err)
	}
	if after := listDir(dir); after != before {
		t.Fatalf("the damaged store changed: %s, was %s", after, before)
	}
}

func write(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}

// listDir names a folder's entries and sizes, or says it is missing.
func listDir(dir string) string {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return "unreadable: " + err.Error()
	}
	var b strings.Builder
	for _, e := range entries {
		if info, err := e.Info(); err == nil {
			fmt.Fprintf(&b, "%s:%d ", e.Name(), info.Size())
		}
	}
	return b.String()
}
