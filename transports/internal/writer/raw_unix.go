//go:build unix

package writer

import (
	"net"
	"syscall"
)

// rawWriter writes to a socket without waiting: a non-blocking write(2)
// through the descriptor Go's poller already holds non-blocking, which
// takes what fits in the socket buffer and returns.
type rawWriter struct{ rc syscall.RawConn }

// newRawWriter returns the connection's raw writer, or nil when it has
// none (a TLS connection, a pipe in a test): such a stream writes only
// through the slow path.
func newRawWriter(conn net.Conn) rawWriter {
	sc, ok := conn.(syscall.Conn)
	if !ok {
		return rawWriter{}
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return rawWriter{}
	}
	return rawWriter{rc: rc}
}

func (w rawWriter) ok() bool { return w.rc != nil }

// tryWrite writes as much of b as the socket takes now.
func (w rawWriter) tryWrite(b []byte) (int, error) {
	n := 0
	var werr error
	err := w.rc.Write(func(fd uintptr) bool {
		for n < len(b) {
			m, err := syscall.Write(int(fd), b[n:])
			if m > 0 {
				n += m
			}
			switch {
			case err == nil:
				if m <= 0 {
					return true // cannot happen on a socket; never spin
				}
			case err == syscall.EINTR:
			case err == syscall.EAGAIN:
				return true
			default:
				werr = err
				return true
			}
		}
		return true // never wait in Go's poller: the slow path does that
	})
	if err == nil {
		err = werr
	}
	return n, err
}
