//go:build !linux || noepoll

package bench

// The reactor of `herald bench`'s SSE and WebSocket subscribers where
// there is no epoll (reactor.go): the same methods, with a goroutine
// per connection that reads its socket and, holding the reactor's lock
// like the epoll loop does, hands what came to the parser (conn.go).
// Slower per message, which only matters at hundreds of thousands of
// messages a second; the figures in the README are measured on Linux.
// `go test -tags noepoll` runs the tests on Linux with this reactor.

import (
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"time"
)

// benchReactor reads the connections registered with it.
type benchReactor struct {
	mu       sync.Mutex
	conns    map[*benchRConn]struct{}
	stopping bool
	readers  sync.WaitGroup
}

func newBenchReactor() (*benchReactor, error) {
	return &benchReactor{conns: map[*benchRConn]struct{}{}}, nil
}

// benchRConnSock is a connection's part this reactor keeps.
type benchRConnSock struct {
	conn net.Conn
}

// close ends every connection and waits for their readers.
func (r *benchReactor) close() {
	r.mu.Lock()
	r.stopping = true
	for c := range r.conns {
		r.endLocked(c, errors.New("the run ended"))
	}
	r.mu.Unlock()
	r.readers.Wait()
}

// add takes over conn, handles the bytes that came with the handshake and
// starts the connection's reader.
func (r *benchReactor) add(c *benchRConn, conn net.Conn, leftover []byte) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.stopping {
		_ = conn.Close()
		return errors.New("the run ended")
	}
	c.conn, c.r, c.out = conn, r, conn
	r.conns[c] = struct{}{}
	if len(leftover) > 0 {
		for len(c.sub.buf) < len(leftover) {
			c.sub.grow(0)
		}
		c.rn = copy(c.sub.buf, leftover)
		c.process(time.Now().UnixNano())
		if _, ok := r.conns[c]; !ok {
			return nil // ended by what came with the handshake
		}
	}
	r.readers.Add(1)
	go r.read(c)
	return nil
}

// read reads c until it ends. Only this goroutine fills c's buffer; the
// parsing runs under the reactor's lock, as in the epoll loop.
func (r *benchReactor) read(c *benchRConn) {
	defer r.readers.Done()
	for {
		if c.rn == len(c.sub.buf) {
			c.sub.grow(c.rn)
		}
		n, err := c.conn.Read(c.sub.buf[c.rn:])
		r.mu.Lock()
		if _, ok := r.conns[c]; !ok {
			r.mu.Unlock()
			return // ended meanwhile
		}
		if n > 0 {
			c.rn += n
			c.process(time.Now().UnixNano())
		}
		if _, ok := r.conns[c]; ok && err != nil {
			if errors.Is(err, io.EOF) {
				err = errors.New("the server closed the connection")
			} else {
				err = fmt.Errorf("read: %w", err)
			}
			r.endLocked(c, err)
		}
		r.mu.Unlock()
	}
}

// remove ends a connection from outside the reactor (the run stops it).
func (r *benchReactor) remove(c *benchRConn, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, ok := r.conns[c]; ok {
		r.endLocked(c, err)
	}
}

func (r *benchReactor) endLocked(c *benchRConn, err error) {
	delete(r.conns, c)
	_ = c.conn.Close()
	c.ended <- err // buffered: the first end only
}
