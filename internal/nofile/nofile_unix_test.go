//go:build unix

package nofile

import (
	"syscall"
	"testing"
)

// Not parallel: it lowers the process's soft limit for a moment.
func TestRaiseNoFileLiftsTheSoftLimitToTheHardLimit(t *testing.T) {
	var orig syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &orig); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = syscall.Setrlimit(syscall.RLIMIT_NOFILE, &orig) })
	lowered := orig
	if half := orig.Max / 2; uint64(half) > uint64(Open()+256) {
		lowered.Cur = half
	}
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lowered); err != nil {
		t.Fatal(err)
	}
	got, err := Raise()
	if err != nil {
		t.Fatal(err)
	}
	var now syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &now); err != nil {
		t.Fatal(err)
	}
	if got != uint64(orig.Max) || uint64(now.Cur) != uint64(orig.Max) {
		t.Errorf("after raising from %d: returned %d, soft limit %d, want the hard limit %d", lowered.Cur, got, now.Cur, orig.Max)
	}
}
