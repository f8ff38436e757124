package e2e

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// herald serve refuses a data directory it must not use — one written by
// a newer Herald, one holding someone else's files — and exits saying
// what to do, without touching it; a data directory of its own, from
// before a restart, is served as it was.
func TestServeRefusesADataDirectoryItMustNotUse(t *testing.T) {
	t.Parallel()
	newer := t.TempDir()
	if err := os.WriteFile(filepath.Join(newer, "herald-format"), []byte("herald store format 7\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	foreign := t.TempDir()
	if err := os.WriteFile(filepath.Join(foreign, "thesis.docx"), []byte("years of work"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct{ dir, want string }{
		{newer, "was written by a newer Herald (store format 7; this version reads format 1): run that newer version, or restore a backup"},
		{foreign, "holds files that are not Herald's (thesis.docx) and no herald-format: set data_dir to an empty folder"},
	} {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		cmd := exec.CommandContext(ctx, heraldBin, "serve", "--addr", freeAddr(t), "--data-dir", c.dir, "--api-key", apiKey)
		cmd.Env = cleanEnv()
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		err := cmd.Run()
		cancel()
		if err == nil || cmd.ProcessState.ExitCode() == 0 || !strings.Contains(stderr.String(), c.want) {
			t.Fatalf("herald serve on %s: %v, stderr:\n%s\nwant a refusal saying %q", c.dir, err, stderr.String(), c.want)
		}
		entries, _ := os.ReadDir(c.dir)
		if len(entries) != 1 {
			t.Fatalf("the refused folder %s now holds %d entries, want its one file", c.dir, len(entries))
		}
	}
	srv := startServer(t)
	publishN(t, srv.url(), "kept", 5)
	if err := srv.terminate(); err != nil {
		t.Fatal(err)
	}
	srv.start()
	messageIDs(t, srv.url(), "kept", 5)
}
