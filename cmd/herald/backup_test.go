package main

import (
	"bytes"
	"context"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/heraldrt/herald/internal/cli"
)

// herald backup writes FILE only when what the server sent is a complete
// backup, never overwrites a file, and says why it failed; herald restore
// needs a file and a folder.
func TestBackupAndRestoreRefusals(t *testing.T) {
	t.Parallel()
	cut := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer key-0123456789abcdef" {
			w.WriteHeader(http.StatusUnauthorized)
			_, _ = w.Write([]byte(`{"error":{"code":"unauthorized","message":"the API needs credentials"}}`))
			return
		}
		_, _ = w.Write([]byte("HERALD BACKUP 1\nsome bytes, then the connection ends"))
	}))
	defer cut.Close()
	dir := t.TempDir()
	existing := filepath.Join(dir, "old.backup")
	if err := os.WriteFile(existing, []byte("keep me"), 0o600); err != nil {
		t.Fatal(err)
	}
	env := cli.Env{Getenv: func(string) string { return "" }, Now: time.Now}
	cases := []struct {
		name string
		run  func() error
		want string
		file string // must not exist afterwards
	}{
		{"no file named", func() error {
			return runBackup(context.Background(), []string{"--server", cut.URL}, env, nil, &bytes.Buffer{}, &bytes.Buffer{})
		}, "name the file", ""},
		{"an existing file", func() error {
			return runBackup(context.Background(), []string{existing, "--server", cut.URL, "--token", "key-0123456789abcdef"}, env, nil, &bytes.Buffer{}, &bytes.Buffer{})
		}, "exists: name a new file", ""},
		{"refused by the server", func() error {
			return runBackup(context.Background(), []string{filepath.Join(dir, "a.backup"), "--server", cut.URL, "--token", "wrong"}, env, nil, &bytes.Buffer{}, &bytes.Buffer{})
		}, "the API needs credentials", filepath.Join(dir, "a.backup")},
		{"cut short", func() error {
			return runBackup(context.Background(), []string{filepath.Join(dir, "b.backup"), "--server", cut.URL, "--token", "key-0123456789abcdef"}, env, nil, &bytes.Buffer{}, &bytes.Buffer{})
		}, "not a complete Herald backup", filepath.Join(dir, "b.backup")},
		{"restore without a folder", func() error {
			return runRestore([]string{existing}, env, &bytes.Buffer{}, &bytes.Buffer{})
		}, "--data-dir", ""},
		{"restore of a file that is not a backup", func() error {
			return runRestore([]string{existing, "--data-dir", filepath.Join(dir, "r")}, env, &bytes.Buffer{}, &bytes.Buffer{})
		}, "not a complete Herald backup", filepath.Join(dir, "r")},
	}
	for _, c := range cases {
		err := c.run()
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want an error saying %q", c.name, err, c.want)
		}
		if c.file != "" {
			if _, err := os.Stat(c.file); err == nil {
				t.Errorf("%s: %s was written", c.name, c.file)
			}
			if _, err := os.Stat(c.file + ".partial"); err == nil {
				t.Errorf("%s: %s.partial was left", c.name, c.file)
			}
		}
	}
	if b, _ := os.ReadFile(existing); string(b) != "keep me" {
		t.Fatalf("the existing file now holds %q", b)
	}
}
