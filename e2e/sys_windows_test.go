package e2e

import (
	"errors"
	"os"
	"syscall"
)

// setRcvBuf sets a socket's receive buffer (in a dialer's Control, before
// it connects, so the TCP window it advertises is small from the start).
func setRcvBuf(fd uintptr, size int) error {
	return syscall.SetsockoptInt(syscall.Handle(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, size)
}

var errNoPause = errors.New("pausing a process (SIGSTOP) has no Windows equivalent here")

func pauseProcess(*os.Process) error  { return errNoPause }
func resumeProcess(*os.Process) error { return errNoPause }
