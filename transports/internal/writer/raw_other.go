//go:build !unix

package writer

import "net"

// rawWriter is the non-blocking write of Unix sockets; elsewhere there is
// none and every write goes through the slow path, a goroutine of the
// stream's own.
type rawWriter struct{}

func newRawWriter(net.Conn) rawWriter { return rawWriter{} }

func (rawWriter) ok() bool { return false }

func (rawWriter) tryWrite([]byte) (int, error) { return 0, nil }
