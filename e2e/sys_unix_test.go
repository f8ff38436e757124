//go:build unix

package e2e

import (
	"os"
	"syscall"
)

// setRcvBuf sets a socket's receive buffer (in a dialer's Control, before
// it connects, so the TCP window it advertises is small from the start).
func setRcvBuf(fd uintptr, size int) error {
	return syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, size)
}

// pauseProcess stops p (SIGSTOP): its sockets stay open, it answers
// nothing, until resumeProcess.
func pauseProcess(p *os.Process) error { return p.Signal(syscall.SIGSTOP) }

// resumeProcess continues a process pauseProcess stopped (SIGCONT).
func resumeProcess(p *os.Process) error { return p.Signal(syscall.SIGCONT) }
