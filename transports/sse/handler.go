package sse

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/heraldrt/herald/protocol"
	"github.com/heraldrt/herald/server"
	"github.com/heraldrt/herald/transports/internal/watch"
	"github.com/heraldrt/herald/transports/internal/writer"
)

// Options configures the SSE handler. Zero fields take the documented
// defaults.
type Options struct {
	// Heartbeat is the longest quiet time before a comment line is sent,
	// so proxies keep the stream open. Default 15s.
	Heartbeat time.Duration `yaml:"heartbeat"`
	// Retry is the reconnection delay suggested to clients (the SSE
	// retry: field). Default 2s.
	Retry time.Duration `yaml:"retry"`
	// WriteTimeout bounds one write and flush; a client that cannot take
	// it is dropped (it resumes from its cursor). Default 10s.
	WriteTimeout time.Duration `yaml:"write_timeout"`
	// Coalesce is the longest an event waits so that the events arriving
	// meanwhile share its write: a stream writes at most once per Coalesce,
	// and the first event after a quiet spell goes at once. Under load this
	// turns one syscall per event into one per batch. Default 5ms
	// (writer.DefaultCoalesce).
	Coalesce time.Duration `yaml:"coalesce"`
}

// WithDefaults returns o with every default applied: what the handler
// runs with.
func (o Options) WithDefaults() Options { return o.withDefaults() }

func (o Options) withDefaults() Options {
	if o.Heartbeat == 0 {
		o.Heartbeat = 15 * time.Second
	}
	if o.Retry == 0 {
		o.Retry = 2 * time.Second
	}
	if o.WriteTimeout == 0 {
		o.WriteTimeout = 10 * time.Second
	}
	if o.Coalesce == 0 {
		o.Coalesce = writer.DefaultCoalesce
	}
	return o
}

func (o Options) validate() error {
	var errs []error
	bad := func(key, format string, args ...any) {
		errs = append(errs, &server.ConfigError{Keys: []string{key}, Err: fmt.Errorf(format, args...)})
	}
	if o.Heartbeat < 100*time.Millisecond {
		bad("sse.heartbeat", "sse.heartbeat %s: want at least 100ms", o.Heartbeat)
	}
	if o.Retry < 0 {
		bad("sse.retry", "sse.retry %s: must not be negative", o.Retry)
	}
	if o.Coalesce < 0 || o.Coalesce > time.Second {
		bad("sse.coalesce", "sse.coalesce %s: want 0 to 1s", o.Coalesce)
	}
	if o.WriteTimeout < 100*time.Millisecond {
		bad("sse.write_timeout", "sse.write_timeout %s: want at least 100ms", o.WriteTimeout)
	}
	return errors.Join(errs...)
}

// Validate reports every problem of o (after defaults), each a
// *server.ConfigError naming its setting, so that the binary can check
// its whole configuration before it opens the store.
func (o Options) Validate() error { return o.withDefaults().validate() }

// Handler serves GET /sse.
type Handler struct {
	srv     *server.Server
	t       *server.Transport // "sse": opens the sessions, caches the frames
	log     *slog.Logger
	opts    Options
	streams writer.Group    // the flusher's loops and slow writes, the watcher's loop
	flusher *writer.Flusher // writes every stream
	watcher *watch.Watcher  // notices a client that leaves
}

// New returns the SSE handler for srv.
func New(srv *server.Server, opts Options) (*Handler, error) {
	opts = opts.withDefaults()
	if err := opts.validate(); err != nil {
		return nil, err
	}
	h := &Handler{srv: srv, t: srv.Transport("sse"), log: srv.Config().Logger, opts: opts}
	h.flusher = writer.NewFlusher(&h.streams, writer.Options{
		Coalesce: opts.Coalesce, Heartbeat: opts.Heartbeat, WriteTimeout: opts.WriteTimeout,
	})
	h.watcher = watch.New(&h.streams)
	return h, nil
}

// setHeaders writes the SSE response headers: the content type, no caching
// anywhere, and X-Accel-Buffering: no so that nginx-style proxies pass
// every event through at once instead of buffering the stream.
func setHeaders(h http.Header) {
	h.Set("Content-Type", "text/event-stream; charset=utf-8")
	h.Set("Cache-Control", "no-cache")
	h.Set("X-Accel-Buffering", "no")
}

// ServeHTTP opens a session for the request's channels and streams it.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	id, err := h.srv.Authenticate(r)
	if err != nil {
		server.WriteError(w, r, err, h.log)
		return
	}
	q := r.URL.Query()
	channels := q["channel"]
	positions, err := server.ParsePositions(q["since"], q["epoch"], len(channels))
	if err != nil {
		server.WriteError(w, r, err, h.log)
		return
	}
	cursor := r.Header.Get("Last-Event-ID")
	if cursor == "" {
		cursor = q.Get("cursor")
	}
	sess, info, err := h.t.Open(r.Context(), id, server.OpenRequest{
		RemoteAddr: r.RemoteAddr,
		Channels:   channels,
		Cursor:     cursor,
		Session:    q.Get("session"), // else the one the cursor names
		Positions:  positions,
	})
	if err != nil {
		server.WriteError(w, r, err, h.log)
		return
	}

	connected, err := json.Marshal(info)
	if err != nil {
		sess.Close(server.ReasonInternal)
		server.WriteError(w, r, err, h.log)
		return
	}
	if r.ProtoMajor >= 2 {
		h.serveStream(w, r, sess, connected)
		return
	}
	// Take the connection over from net/http: the stream writes its own
	// chunks (one write per batch of events, where net/http's chunked
	// writer costs three), and the request's goroutine and buffers are
	// freed while the stream idles.
	conn, rw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		sess.Close(server.ReasonInternal)
		server.WriteError(w, r, fmt.Errorf("sse: streaming needs an HTTP/1.x connection: %w", err), h.log)
		return
	}
	if rw.Reader.Buffered() > 0 {
		// A client that sends after a GET pipelines requests; a stream
		// cannot answer them.
		conn.Close()
		sess.Close(server.ReasonClientGone)
		return
	}
	setHeaders(w.Header())
	st := &stream{conn: conn, chunked: r.ProtoAtLeast(1, 1), sess: sess, t: h.t}
	buf := appendResponseHead(nil, r, w.Header())
	start := len(buf)
	buf = appendChunkRoom(buf)
	buf = appendRetry(buf, h.opts.Retry.Milliseconds())
	buf = appendEvent(buf, protocol.EventConnected, connected, sess.Cursor())
	buf = st.endChunk(buf, start)
	if err := writeAll(conn, buf, h.opts.WriteTimeout); err != nil {
		conn.Close()
		sess.Close(server.ReasonWriteError)
		return
	}
	wt, ok := h.watcher.Watch(conn, st.read)
	if !ok {
		conn.Close() // shutting down: the client reconnects elsewhere or later
		sess.Close(server.ReasonShutdown)
		return
	}
	if _, ok := h.flusher.Start(sess, conn, st, wt.Stop); !ok {
		wt.Stop()
		conn.Close()
		sess.Close(server.ReasonShutdown)
	}
}

// serveStream streams a response that cannot be taken over — an HTTP/2
// stream, one of many on its connection — through net/http: the same
// writer and framing (without HTTP/1.1 chunks: HTTP/2 frames the body),
// while the handler waits for the stream to end or the client to leave.
func (h *Handler) serveStream(w http.ResponseWriter, r *http.Request, sess *server.Session, connected []byte) {
	setHeaders(w.Header())
	conn := newRespConn(w, r)
	st := &stream{conn: conn, sess: sess, t: h.t}
	w.WriteHeader(http.StatusOK)
	buf := appendRetry(nil, h.opts.Retry.Milliseconds())
	buf = appendEvent(buf, protocol.EventConnected, connected, sess.Cursor())
	_ = conn.SetWriteDeadline(time.Now().Add(h.opts.WriteTimeout)) // where net/http cannot, writes have no deadline
	if _, err := conn.Write(buf); err != nil {
		sess.Close(server.ReasonWriteError)
		return
	}
	_ = conn.SetWriteDeadline(time.Time{})
	if _, ok := h.flusher.Start(sess, conn, st, nil); !ok {
		sess.Close(server.ReasonShutdown)
		return
	}
	select {
	case <-conn.closed: // the session ended: the writer said why and closed
	case <-r.Context().Done():
		sess.Close(server.ReasonClientGone)
		<-conn.closed // the writer's close turn; it writes nothing to a client gone
	}
}

// writeAll writes b within timeout, then lifts the deadline: the
// stream's later writes never wait (writer.Flusher).
func writeAll(conn net.Conn, b []byte, timeout time.Duration) error {
	if err := conn.SetWriteDeadline(time.Now().Add(timeout)); err != nil {
		return err
	}
	if _, err := conn.Write(b); err != nil {
		return err
	}
	return conn.SetWriteDeadline(time.Time{})
}

// Wait blocks until every stream has ended, or ctx is done. The streams'
// connections are hijacked, so net/http's Shutdown does not wait for them;
// the binary calls Wait after the core has told every session to go.
func (h *Handler) Wait(ctx context.Context) error { return h.streams.Wait(ctx) }

// appendResponseHead writes the status line and headers of a stream: the
// headers the handler chain set (CORS), and chunked framing on HTTP/1.1
// (an HTTP/1.0 client reads until the connection closes).
func appendResponseHead(b []byte, r *http.Request, h http.Header) []byte {
	if r.ProtoAtLeast(1, 1) {
		h.Set("Transfer-Encoding", "chunked")
		b = append(b, "HTTP/1.1 200 OK\r\n"...)
	} else {
		h.Set("Connection", "close")
		b = append(b, "HTTP/1.0 200 OK\r\n"...)
	}
	var hb bytes.Buffer
	_ = h.Write(&hb)
	b = append(b, hb.Bytes()...)
	return append(b, "\r\n"...)
}

// stream is one open SSE response on a hijacked connection. No goroutine
// waits on an idle stream: the handler's writer.Flusher takes a turn on it
// when its session has something (Frame frames it), and its watch.Watcher
// calls read when the client sends something or leaves.
type stream struct {
	conn    net.Conn
	chunked bool
	sess    *server.Session
	t       *server.Transport
}

// read is told what the client sent (watch.OnRead). A client sends
// nothing on a stream, so what it sends is dropped, and the end of its
// side means it is gone.
func (st *stream) read(_ []byte, err error) bool {
	if err != nil {
		st.sess.Close(server.ReasonClientGone) // the flusher's close turn closes the connection
	}
	return true
}

// Frame frames one turn (writer.Framer) as one chunk: the queued events,
// or a heartbeat comment, or — when the session has closed and the
// client is to be told — the last events, why, and the end of the body.
func (st *stream) Frame(t *writer.Turn) int {
	if t.Kind == writer.TurnClose {
		reason := st.sess.Reason()
		if !reason.Told() {
			return 0 // the client is gone or cannot be written to
		}
		t.Items = st.sess.Drain(t.Items[:0])
		start := len(t.Buf)
		b := appendItems(appendChunkRoom(t.Buf), t.Items, st.head)
		b = appendEvent(b, protocol.EventDisconnect, server.DisconnectData(reason), "")
		b = st.endChunk(b, start)
		if st.chunked {
			b = append(b, "0\r\n\r\n"...) // the end of the body
		}
		t.Buf = b
		n := len(t.Items)
		clear(t.Items)
		return n
	}
	t.Items = st.sess.Drain(t.Items[:0])
	n := len(t.Items)
	if n == 0 && t.Kind != writer.TurnHeartbeat {
		return 0
	}
	start := len(t.Buf)
	b := appendChunkRoom(t.Buf)
	if n > 0 {
		b = appendItems(b, t.Items, st.head)
		clear(t.Items) // drop message references until the next turn
	} else {
		b = appendComment(b, "")
	}
	t.Buf = st.endChunk(b, start)
	return n
}

// head returns the part of m's event every subscriber shares, encoded
// once per message and cached in it (server.Transport.Frame).
func (st *stream) head(m *server.Message) []byte { return st.t.Frame(m, eventHead) }

// appendItems frames every item as an SSE event; head gives a message's
// shared event head (eventHead, or its cached copy).
func appendItems(b []byte, items []server.Item, head func(*server.Message) []byte) []byte {
	for i := range items {
		it := &items[i]
		switch {
		case it.Msg == nil:
			continue // transport frames of other transports never reach SSE
		case it.Kind == server.KindSkip:
			// The client excluded itself from this message: an id-only
			// event moves its cursor past it without dispatching anything
			// (the WHATWG parser sets lastEventId before it drops an event
			// with no data).
			if it.Cursor != "" {
				b = append(b, "id: "...)
				b = it.AppendCursor(b)
				b = append(b, '\n', '\n')
			}
			continue
		}
		b = append(b, head(it.Msg)...)
		if it.Cursor != "" {
			b = append(b, "id: "...)
			b = it.AppendCursor(b) // base64url, ".", a session id: no line break to drop
			b = append(b, '\n')
		}
		b = append(b, '\n')
	}
	return b
}

// chunkHead is the room left before a chunk's data for its size line: the
// size in 8 hex digits (leading zeros are valid) and CRLF.
const chunkHead = 8 + 2

// appendChunkRoom appends the room of a chunk size line.
func appendChunkRoom(b []byte) []byte { return append(b, "00000000\r\n"...) }

// endChunk ends the chunk whose room starts at b[start:]: on a chunked
// stream the size line is filled in and CRLF appended; on an HTTP/1.0
// stream (no chunks) the room is cut out.
func (st *stream) endChunk(b []byte, start int) []byte {
	if !st.chunked {
		return append(b[:start], b[start+chunkHead:]...)
	}
	n := len(b) - start - chunkHead
	if n == 0 {
		return b[:start] // an empty chunk would end the body
	}
	const hex = "0123456789abcdef"
	for i := 7; i >= 0; i-- {
		b[start+i] = hex[n&0xf]
		n >>= 4
	}
	return append(b, "\r\n"...)
}
