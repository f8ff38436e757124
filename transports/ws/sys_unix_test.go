//go:build unix

package ws

import "syscall"

// setRcvBuf sets a socket's receive buffer (in a dialer's Control).
func setRcvBuf(fd uintptr, size int) error {
	return syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, size)
}
