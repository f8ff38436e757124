package ws

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/gorilla/websocket"

	"github.com/heraldrt/herald/protocol"
	"github.com/heraldrt/herald/server"
	"github.com/heraldrt/herald/transports/internal/watch"
	"github.com/heraldrt/herald/transports/internal/writer"
)

// Options configures the WebSocket handler. Zero fields take the
// documented defaults.
type Options struct {
	// PingInterval is how often the server pings. Default 25s.
	PingInterval time.Duration `yaml:"ping_interval"`
	// PongTimeout is how long past a ping a silent peer is kept. Default 10s.
	PongTimeout time.Duration `yaml:"pong_timeout"`
	// WriteTimeout bounds one write. Default 10s.
	WriteTimeout time.Duration `yaml:"write_timeout"`
	// AuthTimeout is how long a connection without credentials may take to
	// send its first frame. Default 10s.
	AuthTimeout time.Duration `yaml:"auth_timeout"`
	// MaxFrameBytes bounds a client frame; a larger one closes the
	// connection with 1009. Default 128 KiB.
	MaxFrameBytes int64 `yaml:"max_frame_bytes"`
	// MaxBatch bounds the messages of one batch push. Default 256.
	MaxBatch int `yaml:"max_batch"`
	// Coalesce is the longest a message waits so that the messages
	// arriving meanwhile share its write, as on SSE. Default 5ms
	// (writer.DefaultCoalesce).
	Coalesce time.Duration `yaml:"coalesce"`
	// Compression negotiates permessage-deflate. Default off: it costs CPU
	// per connection and JSON envelopes are small.
	Compression bool `yaml:"compression"`
}

// WithDefaults returns o with every default applied: what the handler
// runs with.
func (o Options) WithDefaults() Options { return o.withDefaults() }

func (o Options) withDefaults() Options {
	def := func(p *time.Duration, v time.Duration) {
		if *p == 0 {
			*p = v
		}
	}
	def(&o.PingInterval, 25*time.Second)
	def(&o.PongTimeout, 10*time.Second)
	def(&o.WriteTimeout, 10*time.Second)
	def(&o.AuthTimeout, 10*time.Second)
	if o.MaxFrameBytes == 0 {
		o.MaxFrameBytes = 128 << 10
	}
	if o.MaxBatch == 0 {
		o.MaxBatch = 256
	}
	def(&o.Coalesce, writer.DefaultCoalesce)
	return o
}

func (o Options) validate() error {
	var errs []error
	bad := func(key, format string, args ...any) {
		errs = append(errs, &server.ConfigError{Keys: []string{key}, Err: fmt.Errorf(format, args...)})
	}
	for _, d := range []struct {
		name string
		v    time.Duration
	}{
		{"ws.ping_interval", o.PingInterval}, {"ws.pong_timeout", o.PongTimeout},
		{"ws.write_timeout", o.WriteTimeout}, {"ws.auth_timeout", o.AuthTimeout},
	} {
		if d.v < 10*time.Millisecond {
			bad(d.name, "%s %s: want at least 10ms", d.name, d.v)
		}
	}
	if o.MaxFrameBytes < 1024 {
		bad("ws.max_frame_bytes", "ws.max_frame_bytes %d: want at least 1024", o.MaxFrameBytes)
	}
	if o.MaxBatch < 1 {
		bad("ws.max_batch", "ws.max_batch %d: want at least 1", o.MaxBatch)
	}
	return errors.Join(errs...)
}

// Validate reports every problem of o (after defaults), each a
// *server.ConfigError naming its setting, so that the binary can check
// its whole configuration before it opens the store.
func (o Options) Validate() error { return o.withDefaults().validate() }

// Handler serves GET /ws.
type Handler struct {
	srv      *server.Server
	t        *server.Transport // "ws": opens the sessions
	opts     Options
	upgrader websocket.Upgrader
	conns    writer.Group    // the flusher's loops and slow writes, the watcher's loop, the op servers
	flusher  *writer.Flusher // writes every connection
	watcher  *watch.Watcher  // reads every connection
	maxBatch int             // limits.max_batch_messages: publish ops served together
}

// New returns the WebSocket handler for srv. Origins are checked against
// the server's allowed origins (the CORS setting).
func New(srv *server.Server, opts Options) (*Handler, error) {
	opts = opts.withDefaults()
	if err := opts.validate(); err != nil {
		return nil, err
	}
	h := &Handler{srv: srv, t: srv.Transport("ws"), opts: opts, maxBatch: srv.Config().Limits.MaxBatchMessages}
	h.upgrader = websocket.Upgrader{
		HandshakeTimeout:  opts.WriteTimeout,
		CheckOrigin:       originChecker(srv.Config().CORS.AllowedOrigins),
		EnableCompression: opts.Compression,
		// The upgrader only does the handshake (its Conn is dropped after
		// it): no buffers of its own beyond it.
		ReadBufferSize:  256,
		WriteBufferSize: 256,
		WriteBufferPool: &sync.Pool{},
	}
	h.flusher = writer.NewFlusher(&h.conns, writer.Options{
		Coalesce: opts.Coalesce, Heartbeat: opts.PingInterval, Steady: true, WriteTimeout: opts.WriteTimeout,
		// A peer that answers no ping (sends nothing at all) is dropped.
		Expire: opts.PingInterval + opts.PongTimeout,
	})
	h.watcher = watch.New(&h.conns)
	return h, nil
}

// originChecker allows requests without an Origin (not a browser), the
// configured origins ("*": any), and — when none are configured — a page
// served by this host, the browser default.
func originChecker(allowed []string) func(*http.Request) bool {
	anyOrigin := slices.Contains(allowed, "*")
	return func(r *http.Request) bool {
		origin := r.Header.Get("Origin")
		if origin == "" || anyOrigin || slices.Contains(allowed, origin) {
			return true
		}
		if len(allowed) > 0 {
			return false
		}
		u, err := url.Parse(origin)
		return err == nil && strings.EqualFold(u.Host, r.Host)
	}
}

// Wait blocks until every connection being served has ended, or ctx is
// done. net/http's Shutdown does not wait for hijacked connections, so the
// binary calls it after the core has told every session to go.
func (h *Handler) Wait(ctx context.Context) error { return h.conns.Wait(ctx) }

// ServeHTTP upgrades the request and serves the connection until it ends.
//
// Once the session exists, the connection is served by its reader and
// writer goroutines, owned by the Handler, and ServeHTTP returns: the
// request's goroutine and net/http's buffers are freed while the
// connection idles.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	up := &upgrade{ResponseWriter: w}
	if _, err := h.upgrader.Upgrade(up, r, nil); err != nil {
		return // the upgrader answered the client already
	}
	// From here on the connection is the transport's: gorilla's Conn,
	// which did the handshake, is dropped (the transport reads and writes
	// the frames), and so are net/http's request and buffers.
	c := &conn{h: h, netConn: up.conn, deflate: up.deflate()}
	up.ResponseWriter, up.conn = nil, nil
	c.frames = frameReader{maxMessage: h.opts.MaxFrameBytes, tooBig: c.tooBig(), deflate: c.deflate}

	id, err := h.srv.Authenticate(r)
	if err != nil {
		c.closeWith(authCloseCode(err), server.AsError(err).Message)
		c.netConn.Close()
		return
	}
	var pending []byte         // an anonymous connection's first op, served once the session exists
	var auth *protocol.Request // the auth op that identified the connection
	if id.Anonymous {
		var ok bool
		if id, auth, pending, ok = c.authenticateFirstFrame(); !ok {
			c.netConn.Close()
			return
		}
	}
	// A client that reconnects passes back the session it had (?session=,
	// or in its auth frame) to continue it: its exclusions follow it.
	resume := r.URL.Query().Get("session")
	if auth != nil && auth.Session != "" {
		resume = auth.Session
	}
	sess, err := h.t.NewSession(id, r.RemoteAddr, resume)
	if err != nil {
		if errors.Is(err, server.ErrShuttingDown) {
			c.closeWith(websocket.CloseServiceRestart, "server shutting down")
		} else {
			c.closeWith(protocol.ClosePolicy, server.AsError(err).Message) // a session or connection limit
		}
		c.netConn.Close()
		return
	}
	c.sess = sess
	if auth != nil {
		sess.Send(encode(protocol.AuthReply{Reply: protocol.Reply{ID: auth.ID, OK: true}, Session: sess.ID, User: id.User}))
	}
	sess.Send(encode(protocol.ConnectedPush{Type: protocol.PushConnected, Session: sess.ID, User: id.User, UserChannel: server.UserChannel(id.User)}))

	// The flusher writes the connection and closes it when the session
	// ends (stopping the watch first); the watcher hands the reader what
	// the client sends, and the reader closes the session when the client
	// leaves or breaks the protocol.
	st, ok := h.flusher.Start(sess, c.netConn, c, func() {
		if wt := c.watch.Load(); wt != nil {
			wt.Stop()
		}
	})
	if !ok {
		c.closeWith(websocket.CloseServiceRestart, "server shutting down")
		c.netConn.Close()
		sess.Close(server.ReasonShutdown)
		return
	}
	c.stream = st
	if pending != nil {
		c.enqueue(pending)
	}
	wt, ok := h.watcher.Watch(c.netConn, c.read)
	if !ok {
		sess.Close(server.ReasonShutdown) // the flusher tells the client and closes
		return
	}
	c.watch.Store(wt)
	if st.Closed() {
		wt.Stop() // the flusher closed the connection before the watch began
		return
	}
	// What the client sent right after its auth frame waits in the frame
	// reader; parsing it now keeps its order (the watcher's reads come
	// after it, in the same reader).
	c.readMu.Lock()
	c.parseLocked(nil)
	c.readMu.Unlock()
}

// upgrade is the response writer the upgrader hijacks: it keeps the
// connection (the flusher writes to it directly) and the handshake's
// answer, which says whether the client and the upgrader agreed on
// compression.
type upgrade struct {
	http.ResponseWriter
	conn net.Conn
	head []byte // the start of the handshake's answer
}

func (u *upgrade) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	conn, rw, err := http.NewResponseController(u.ResponseWriter).Hijack()
	if err != nil {
		return nil, nil, err
	}
	u.conn = conn
	return &handshakeConn{Conn: conn, u: u}, rw, nil
}

// deflate reports whether the handshake's answer accepted
// permessage-deflate.
func (u *upgrade) deflate() bool {
	end := bytes.Index(u.head, []byte("\r\n\r\n"))
	return end >= 0 && bytes.Contains(bytes.ToLower(u.head[:end]), []byte("\r\nsec-websocket-extensions: permessage-deflate"))
}

// handshakeConn records the first write on a hijacked connection: the
// upgrader's answer.
type handshakeConn struct {
	net.Conn
	u *upgrade
}

func (c *handshakeConn) Write(b []byte) (int, error) {
	if c.u.head == nil {
		c.u.head = append([]byte(nil), b...)
	}
	return c.Conn.Write(b)
}

// authenticateFirstFrame waits for the first frame of a connection that
// came without credentials. An auth op sets the identity (auth is that
// op); any other frame leaves the connection anonymous and is returned as
// pending, to be served once the session exists. No frame within the auth
// timeout, a bad token or a binary or oversized frame closes the
// connection (ok false).
func (c *conn) authenticateFirstFrame() (id server.Identity, auth *protocol.Request, pending []byte, ok bool) {
	anon := server.Identity{Anonymous: true}
	frame, err := c.readFirst(time.Now().Add(c.h.opts.AuthTimeout))
	if err != nil {
		var re *readError
		if !errors.As(err, &re) { // a frame fault was answered already
			c.closeWith(protocol.CloseUnauthorized, fmt.Sprintf("no credentials and no frame within %s", c.h.opts.AuthTimeout))
		}
		return anon, nil, nil, false
	}
	req, err := decodeRequest(frame)
	if err != nil || req.Op != protocol.OpAuth {
		return anon, nil, frame, true
	}
	if id, err = c.h.srv.Identify(req.Token); err != nil {
		c.closeWith(authCloseCode(err), server.AsError(err).Message)
		return anon, nil, nil, false
	}
	return id, &req, nil, true
}

// authCloseCode is the close code of a refused identity: 4001 for bad
// credentials, 4008 for a valid identity that is refused (a ban).
func authCloseCode(err error) int {
	if server.AsError(err).Code == http.StatusForbidden {
		return protocol.ClosePolicy
	}
	return protocol.CloseUnauthorized
}

const binaryRefused = "binary frames are not accepted; send JSON text frames"

func (c *conn) tooBig() string {
	return fmt.Sprintf("frame over %d bytes", c.h.opts.MaxFrameBytes)
}

// closeWith sends a close frame before the connection's stream starts
// (a refused connection); the caller then closes the connection. Once the
// stream runs, close frames go through it (sendClose).
func (c *conn) closeWith(code int, reason string) {
	c.writeNow(appendClose(nil, code, reason))
}
