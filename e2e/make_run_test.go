//go:build linux

package e2e

import (
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestMakeRunStopsCleanlyOnCtrlC runs the README's `make run` and presses
// Ctrl-C as a terminal does — SIGINT to the whole foreground process
// group, make and the server — and checks that the server shut down in
// order and make printed no error. (make's own exit status is the
// signal's, as for any interrupted command; what it prints is the point.)
func TestMakeRunStopsCleanlyOnCtrlC(t *testing.T) {
	dir := t.TempDir()
	addr := freeAddr(t)
	cmd := exec.Command("make", "--no-print-directory", "-C", "..", "run",
		"BIN="+filepath.Join(dir, "herald"), "DATA="+filepath.Join(dir, "data"), "RUN_FLAGS=--addr="+addr)
	cmd.Env = cleanEnv()
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	out := &syncBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-done
	})
	s := &server{t: t, addr: addr, exited: done, log: out}
	s.waitReady() // the build, then the dev server's start

	if err := syscall.Kill(-cmd.Process.Pid, syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	select {
	case <-done:
	case <-time.After(60 * time.Second):
		t.Fatalf("make run still running 60s after Ctrl-C:\n%s", out.String())
	}
	log := out.String()
	if strings.Contains(log, "***") || strings.Contains(log, "Error") {
		t.Fatalf("make printed an error on Ctrl-C:\n%s", log)
	}
	if !strings.Contains(log, "stopped") {
		t.Fatalf("the server did not shut down in order (no \"stopped\" in its log):\n%s", log)
	}
}
