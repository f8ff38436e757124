//go:build unix

package nofile

import (
	"fmt"
	"os"
	"syscall"
)

// Raise raises the process's open-file soft limit to its hard
// limit — every connection is a descriptor, and a soft limit (often
// 1,024) is what caps a server that the hard limit would let hold far
// more — and returns the limit in force.
func Raise() (uint64, error) {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return 0, fmt.Errorf("read the open-file limit: %w", err)
	}
	if lim.Cur < lim.Max {
		raised := lim
		raised.Cur = lim.Max
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &raised); err != nil {
			return uint64(lim.Cur), fmt.Errorf("raise the open-file limit from %d to %d: %w", lim.Cur, lim.Max, err)
		}
		lim = raised
	}
	return uint64(lim.Cur), nil // int64 on some systems
}

// Open counts the descriptors open now, or returns -1 when the
// system does not list them.
func Open() int {
	fds, err := os.ReadDir("/dev/fd")
	if err != nil {
		return -1
	}
	return len(fds) - 1 // ReadDir's own descriptor
}
