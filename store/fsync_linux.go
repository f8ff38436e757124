package store

import (
	"os"
	"syscall"
)

// datasync makes f's data durable: fdatasync(2), which skips the
// metadata a write into an already allocated file leaves unchanged.
func datasync(f *os.File) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	if err := rc.Control(func(fd uintptr) {
		for {
			serr = syscall.Fdatasync(int(fd))
			if serr != syscall.EINTR {
				return
			}
		}
	}); err != nil {
		return err
	}
	return serr
}
