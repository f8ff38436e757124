//go:build unix

package bench

import (
	"fmt"
	"syscall"
)

// benchRaiseNoFile raises this process's RLIMIT_NOFILE soft limit to the
// hard limit and returns the limit now in force.
func benchRaiseNoFile() (uint64, error) {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return 0, fmt.Errorf("read the open-file limit: %w", err)
	}
	if lim.Cur < lim.Max {
		raised := lim
		raised.Cur = lim.Max
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &raised); err != nil {
			return uint64(lim.Cur), fmt.Errorf("raise the open-file limit to %d: %w", lim.Max, err)
		}
		lim = raised
	}
	return uint64(lim.Cur), nil // int64 on some systems
}
