package main

// `herald backup FILE` takes a consistent backup of a running server's
// store through its API (GET /api/backup, the API key) and checks it;
// `herald restore FILE --data-dir DIR` writes one into an empty data
// directory, which `herald serve --data-dir DIR` then serves with every
// channel's epoch and offsets as they were.

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"time"

	"github.com/heraldrt/herald/client"
	"github.com/heraldrt/herald/internal/cli"
	"github.com/heraldrt/herald/store"
)

func cmdBackup(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	return runBackup(ctx, args, cli.ProcessEnv(), nil, stdout, stderr)
}

func runBackup(ctx context.Context, args []string, env cli.Env, hc *http.Client, stdout, stderr io.Writer) error {
	fs := cli.NewFlagSet("backup", "backup FILE [--server URL] [--token API_KEY]", stderr)
	var cf cli.ClientFlags
	cf.Register(fs)
	file, err := parseWithFile(fs, args)
	if err != nil {
		return err
	}
	if file == "" {
		fs.Usage()
		return errors.New("name the file to write the backup to")
	}
	if _, err := os.Stat(file); err == nil {
		return fmt.Errorf("%s exists: name a new file (a backup never overwrites one)", file)
	}
	if hc == nil {
		hc = &http.Client{} // no overall timeout: a large store takes a while
	}
	cl, err := cf.Client(env.Getenv, client.Options{HTTPClient: hc})
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, cl.URL("/api/backup").String(), nil)
	if err != nil {
		return err
	}
	if cf.Token != "" {
		req.Header.Set("Authorization", "Bearer "+cf.Token)
	}
	start := env.Now()
	resp, err := hc.Do(req)
	if err != nil {
		return fmt.Errorf("backup: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("backup: %w", client.ErrorFromResponse(resp))
	}
	// Written under another name, checked, then renamed: FILE is a
	// complete backup or nothing.
	partial := file + ".partial"
	f, err := os.OpenFile(partial, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		return fmt.Errorf("backup: %w", err)
	}
	defer os.Remove(partial) // gone once renamed
	n, err := io.Copy(f, resp.Body)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("backup: after %d bytes: %w", n, err)
	}
	info, err := verifyBackupFile(partial)
	if err != nil {
		return fmt.Errorf("backup: what the server sent: %w", err)
	}
	if err := os.Rename(partial, file); err != nil {
		return fmt.Errorf("backup: %w", err)
	}
	fmt.Fprintf(stdout, "backup written to %s: %d bytes, sha256 %s, in %s\n", file, info.Bytes, info.SHA256, env.Now().Sub(start).Round(time.Millisecond))
	return nil
}

// parseWithFile parses args, whose one positional argument, a file, may
// come before the flags or after them. It returns "" when none is given.
func parseWithFile(fs *flag.FlagSet, args []string) (string, error) {
	var file string
	if len(args) > 0 && args[0] != "" && args[0][0] != '-' {
		file, args = args[0], args[1:]
	}
	if err := fs.Parse(args); err != nil {
		return "", err
	}
	if file == "" && fs.NArg() == 1 {
		return fs.Arg(0), nil
	}
	if fs.NArg() > 0 {
		return "", fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	return file, nil
}

// verifyBackupFile checks a backup file's frame and checksum.
func verifyBackupFile(path string) (store.BackupInfo, error) {
	f, err := os.Open(path)
	if err != nil {
		return store.BackupInfo{}, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return store.BackupInfo{}, err
	}
	_, info, err := store.VerifyBackup(f, st.Size())
	return info, err
}

func cmdRestore(_ context.Context, args []string, stdout, stderr io.Writer) error {
	return runRestore(args, cli.ProcessEnv(), stdout, stderr)
}

func runRestore(args []string, env cli.Env, stdout, stderr io.Writer) error {
	fs := cli.NewFlagSet("restore", "restore FILE --data-dir DIR", stderr)
	dir := fs.String("data-dir", "", "the empty (or new) folder to restore into (default $HERALD_DATA_DIR)")
	file, err := parseWithFile(fs, args)
	if err != nil {
		return err
	}
	if *dir == "" {
		*dir = env.Getenv("HERALD_DATA_DIR")
	}
	if file == "" || *dir == "" {
		fs.Usage()
		return errors.New("name the backup file and the folder to restore into (--data-dir)")
	}
	start := env.Now()
	info, err := store.Restore(file, store.Options{Dir: *dir})
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "restored %s (%d bytes, sha256 %s) into %s in %s; serve it with: herald serve --data-dir %s\n",
		file, info.Bytes, info.SHA256, *dir, env.Now().Sub(start).Round(time.Millisecond), *dir)
	return nil
}
