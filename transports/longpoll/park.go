package longpoll

import (
	"bytes"
	"errors"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/heraldrt/herald/server"
)

// A poll that has to wait gives its connection's goroutines and buffers
// back while it waits. net/http holds two goroutines (the handler's and
// a reader watching for the client leaving), a 4 KiB read buffer and a
// 4 KiB write buffer for every request in flight: about 30 KiB for a
// poll that waits 25 s for nothing. A parked poll takes the connection
// over (Hijack) and keeps only what it needs to answer — its session,
// its timer, the response headers — while the handler's watch.Watcher
// watches the socket for the client leaving. When the session has
// something, closes, is taken over by another poll, or the timeout
// passes, a goroutine writes the answer (the same bytes net/http would)
// and hands the connection back to net/http, which serves the client's
// next request on it as on any keep-alive connection.
//
// Only a plain HTTP/1.1 keep-alive request with nothing pipelined behind
// it parks; anything else waits in its handler as before.

// parked is a poll waiting on a hijacked connection.
type parked struct {
	h       *Handler
	sess    *server.Session
	conn    net.Conn
	srv     *http.Server // serves the connection's next request
	header  http.Header  // the response's headers, set before the hijack (CORS, content type)
	timeout time.Duration
	expires time.Time
	// positions: the answer carries the session's positions (positions=1).
	positions bool

	mu    sync.Mutex // guards the fields below
	state parkState
	timer *time.Timer
	extra []byte // bytes the client sent meanwhile (a pipelined request)
	watch interface{ Stop() }
}

type parkState uint8

const (
	waiting   parkState = iota
	answering           // a goroutine is answering
	gone                // the client left; the session is parked for its next poll
)

// maxPipelined bounds what a client may send while its poll waits.
const maxPipelined = 64 << 10

// park takes the connection over to wait without a goroutine. It
// reports false, having touched nothing, when the connection cannot be
// parked (the caller waits in the handler).
func (h *Handler) park(w http.ResponseWriter, r *http.Request, sess *server.Session, timeout time.Duration, positions bool) bool {
	srv, _ := r.Context().Value(http.ServerContextKey).(*http.Server)
	if srv == nil || r.ProtoMajor != 1 || r.ProtoMinor < 1 || r.Close || r.TLS != nil {
		return false
	}
	setHeaders(w.Header())
	header := w.Header().Clone()
	conn, rw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		return false
	}
	if rw.Reader.Buffered() > 0 {
		// A pipelined request sits in net/http's buffer: wait here, answer
		// on the connection ourselves, and hand it back with those bytes.
		extra, _ := rw.Reader.Peek(rw.Reader.Buffered())
		p := &parked{h: h, sess: sess, conn: conn, srv: srv, header: header, timeout: timeout,
			expires: time.Now().Add(timeout), extra: bytes.Clone(extra), state: answering, positions: positions}
		p.answer()
		return true
	}
	p := &parked{h: h, sess: sess, conn: conn, srv: srv, header: header, timeout: timeout, expires: time.Now().Add(timeout), positions: positions}
	p.mu.Lock()
	wt, ok := h.watcher.Watch(conn, p.read)
	if !ok {
		p.mu.Unlock()
		p.state = answering
		p.answer() // shutting down: answer now
		return true
	}
	p.watch = wt
	p.timer = time.AfterFunc(timeout, p.wake)
	p.mu.Unlock()
	h.count(&h.parks)
	sess.Notify(p.notified)
	return true
}

// notified is the session's notification: it may come with nothing to
// answer (Notify calls it at once), so it asks the session first.
func (p *parked) notified() {
	if p.sess.Pending() {
		p.wake()
	}
}

// wake starts the answer, once.
func (p *parked) wake() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.state != waiting {
		return
	}
	p.state = answering
	if !p.h.polls.Go(p.answer) {
		// Shutting down and waited for already: the process is about to
		// exit, and the client reconnects.
		p.state = gone
	}
}

// read is told what the client sent while its poll waits
// (watch.OnRead): the end of its side means it left.
func (p *parked) read(b []byte, err error) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if err == nil {
		p.extra = append(p.extra, b...)
		if len(p.extra) <= maxPipelined {
			return true
		}
	}
	if p.state != waiting {
		return false
	}
	p.state = gone
	if !p.h.polls.Go(p.leave) {
		p.conn.Close() // shutting down
	}
	return false
}

// leave ends a poll whose client left (or floods its connection):
// nothing is answered, and the session waits for the client's next poll,
// whose cursor says what it got — as when a client leaves a poll net/http
// serves.
func (p *parked) leave() {
	p.stop()
	p.sess.Park(p.sess.Cursor(), p.timeout+p.h.opts.Grace)
	p.conn.Close()
	p.h.count(&p.h.left)
}

// stop ends the waiting: the timer, the session's notification (back to
// Ready) and the watch.
func (p *parked) stop() {
	if p.timer != nil {
		p.timer.Stop()
	}
	p.sess.Notify(nil)
	if p.watch != nil {
		p.watch.Stop()
	}
}

// answer collects what the session has (waiting out the rest of the
// timeout when it has nothing), writes the answer and hands the
// connection back.
func (p *parked) answer() {
	p.stop()
	h := p.h
	items := h.wait(nil, p.sess, max(time.Until(p.expires), 0), nil)
	body := h.finish(p.sess, items, p.timeout, p.positions)
	p.mu.Lock()
	extra := p.extra
	p.mu.Unlock()
	if err := p.write(body); err != nil {
		p.conn.Close()
		return
	}
	conn := p.conn
	if len(extra) > 0 {
		conn = &prefixConn{Conn: conn, prefix: extra}
	}
	if !h.polls.Go(func() { p.handBack(conn) }) {
		conn.Close()
	}
}

// write sends the answer as net/http would have: status line, the
// handler chain's headers, Date and Content-Length, then the body.
func (p *parked) write(body []byte) error {
	hdr := p.header
	hdr.Set("Date", time.Now().UTC().Format(http.TimeFormat))
	hdr.Set("Content-Length", strconv.Itoa(len(body)))
	var b bytes.Buffer
	b.Grow(256 + len(body))
	b.WriteString("HTTP/1.1 200 OK\r\n")
	_ = hdr.Write(&b)
	b.WriteString("\r\n")
	b.Write(body)
	if err := p.conn.SetWriteDeadline(time.Now().Add(writeTimeout)); err != nil {
		return err
	}
	if _, err := p.conn.Write(b.Bytes()); err != nil {
		return err
	}
	return p.conn.SetWriteDeadline(time.Time{})
}

// writeTimeout bounds the write of a parked poll's answer.
const writeTimeout = 10 * time.Second

// handBack gives the connection back to net/http for the client's next
// request: Serve on a listener that yields this one connection, then
// ends (the connection's own goroutine serves on).
func (p *parked) handBack(conn net.Conn) {
	l := &oneConn{conn: conn, addr: conn.LocalAddr()}
	_ = p.srv.Serve(l)
	if !l.taken {
		conn.Close() // the server is shutting down
	}
}

// oneConn is a listener that yields one connection, then reports that it
// has ended.
type oneConn struct {
	mu    sync.Mutex
	conn  net.Conn
	addr  net.Addr
	taken bool
}

var errHandedBack = errors.New("longpoll: connection handed back")

func (l *oneConn) Accept() (net.Conn, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.taken {
		return nil, errHandedBack
	}
	l.taken = true
	return l.conn, nil
}

func (l *oneConn) Close() error   { return nil }
func (l *oneConn) Addr() net.Addr { return l.addr }

// prefixConn reads prefix before the connection: what a client sent
// while its poll was parked is its next request.
type prefixConn struct {
	net.Conn
	prefix []byte
}

func (c *prefixConn) Read(b []byte) (int, error) {
	if len(c.prefix) > 0 {
		n := copy(b, c.prefix)
		c.prefix = c.prefix[n:]
		return n, nil
	}
	return c.Conn.Read(b)
}
