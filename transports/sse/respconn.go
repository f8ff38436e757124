package sse

import (
	"net"
	"net/http"
	"sync"
	"time"
)

// respConn lets the stream writer write an SSE response it cannot take
// over: an HTTP/2 stream (one of many on the connection, framed by
// net/http). Each write goes through the ResponseWriter and is flushed;
// Close ends the response, by letting the handler, which waits for it,
// return. Reads are never made (the handler learns that the client left
// from the request's context).
type respConn struct {
	w      http.ResponseWriter
	rc     *http.ResponseController
	remote net.Addr
	once   sync.Once
	closed chan struct{}
}

func newRespConn(w http.ResponseWriter, r *http.Request) *respConn {
	return &respConn{w: w, rc: http.NewResponseController(w), remote: addr(r.RemoteAddr), closed: make(chan struct{})}
}

func (c *respConn) Write(b []byte) (int, error) {
	n, err := c.w.Write(b)
	if err == nil {
		err = c.rc.Flush()
	}
	return n, err
}

func (c *respConn) Close() error {
	c.once.Do(func() { close(c.closed) })
	return nil
}

func (c *respConn) Read([]byte) (int, error)           { <-c.closed; return 0, net.ErrClosed }
func (c *respConn) SetWriteDeadline(t time.Time) error { return c.rc.SetWriteDeadline(t) }
func (c *respConn) SetReadDeadline(t time.Time) error  { return nil }
func (c *respConn) SetDeadline(t time.Time) error      { return c.rc.SetWriteDeadline(t) }
func (c *respConn) LocalAddr() net.Addr                { return addr("") }
func (c *respConn) RemoteAddr() net.Addr               { return c.remote }

// addr is a network address known only by its text.
type addr string

func (a addr) Network() string { return "tcp" }
func (a addr) String() string  { return string(a) }
