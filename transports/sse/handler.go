package sse

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/heraldrt/herald/server"
)

// Options configures the SSE handler. Zero fields take the documented
// defaults.
type Options struct {
	// Heartbeat is the longest quiet time before a comment line is sent,
	// so proxies keep the stream open. Default 15s.
	Heartbeat time.Duration
	// Retry is the reconnection delay suggested to clients (the SSE
	// retry: field). Default 2s.
	Retry time.Duration
	// WriteTimeout bounds one write and flush; a client that cannot take
	// it is dropped (it resumes from its cursor). Default 10s.
	WriteTimeout time.Duration
}

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
	return o
}

func (o Options) validate() error {
	var errs []error
	if o.Heartbeat < 100*time.Millisecond {
		errs = append(errs, fmt.Errorf("sse.heartbeat %s: want at least 100ms", o.Heartbeat))
	}
	if o.Retry < 0 {
		errs = append(errs, fmt.Errorf("sse.retry %s: must not be negative", o.Retry))
	}
	if o.WriteTimeout < 100*time.Millisecond {
		errs = append(errs, fmt.Errorf("sse.write_timeout %s: want at least 100ms", o.WriteTimeout))
	}
	return errors.Join(errs...)
}

// Handler serves GET /sse.
type Handler struct {
	srv  *server.Server
	opts Options
}

// New returns the SSE handler for srv.
func New(srv *server.Server, opts Options) (*Handler, error) {
	opts = opts.withDefaults()
	if err := opts.validate(); err != nil {
		return nil, err
	}
	return &Handler{srv: srv, opts: opts}, nil
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
		h.srv.WriteError(w, r, err)
		return
	}
	q := r.URL.Query()
	channels := q["channel"]
	positions, err := server.ParsePositions(q["since"], q["epoch"], len(channels))
	if err != nil {
		h.srv.WriteError(w, r, err)
		return
	}
	cursor := r.Header.Get("Last-Event-ID")
	if cursor == "" {
		cursor = q.Get("cursor")
	}
	sess, info, err := h.srv.Open(r.Context(), id, server.OpenRequest{
		Transport: "sse",
		Channels:  channels,
		Cursor:    cursor,
		Positions: positions,
	})
	if err != nil {
		h.srv.WriteError(w, r, err)
		return
	}
	defer sess.Close(server.ReasonClientGone)

	connected, err := json.Marshal(info)
	if err != nil {
		h.srv.WriteError(w, r, err)
		return
	}
	setHeaders(w.Header())
	w.WriteHeader(http.StatusOK)

	st := stream{w: w, rc: http.NewResponseController(w), opts: h.opts}
	buf := appendRetry(nil, h.opts.Retry.Milliseconds())
	buf = appendEvent(buf, server.EventConnected, connected, sess.Cursor())
	if err := st.write(buf); err != nil {
		sess.Close(server.ReasonWriteError)
		return
	}
	st.loop(r, sess)
}

// stream is one open SSE response.
type stream struct {
	w    http.ResponseWriter
	rc   *http.ResponseController
	opts Options
	buf  []byte
}

// loop writes the session's items until the client or the session ends.
func (st *stream) loop(r *http.Request, sess *server.Session) {
	heartbeat := time.NewTimer(st.opts.Heartbeat)
	defer heartbeat.Stop()
	var items []server.Item
	for {
		select {
		case <-r.Context().Done():
			return
		case <-sess.Done():
			// Flush what was queued before the close, then say why.
			items = sess.Drain(items[:0])
			st.buf = appendItems(st.buf[:0], items)
			reason := sess.Reason()
			st.buf = appendEvent(st.buf, server.EventDisconnect, disconnectData(reason), "")
			_ = st.write(st.buf)
			return
		case <-sess.Ready():
			items = sess.Drain(items[:0])
			if len(items) == 0 {
				continue
			}
			st.buf = appendItems(st.buf[:0], items)
			clear(items) // drop message references until the next drain
			if err := st.write(st.buf); err != nil {
				sess.Close(server.ReasonWriteError)
				return
			}
		case <-heartbeat.C:
			st.buf = appendComment(st.buf[:0], "")
			if err := st.write(st.buf); err != nil {
				sess.Close(server.ReasonWriteError)
				return
			}
		}
		heartbeat.Reset(st.opts.Heartbeat)
	}
}

// appendItems frames every item as an SSE event.
func appendItems(b []byte, items []server.Item) []byte {
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
				b = appendField(b, it.Cursor)
				b = append(b, '\n', '\n')
			}
			continue
		}
		b = append(b, it.Msg.Frame(server.FrameSSE, eventHead)...)
		if it.Cursor != "" {
			b = append(b, "id: "...)
			b = appendField(b, it.Cursor)
			b = append(b, '\n')
		}
		b = append(b, '\n')
	}
	return b
}

func disconnectData(reason server.Reason) []byte {
	b, _ := json.Marshal(struct {
		Reason    string `json:"reason"`
		Reconnect bool   `json:"reconnect"`
	}{reason.String(), reason.Reconnect()})
	return b
}

// write sends b and flushes it within the write timeout.
func (st *stream) write(b []byte) error {
	if err := st.rc.SetWriteDeadline(time.Now().Add(st.opts.WriteTimeout)); err != nil && !errors.Is(err, http.ErrNotSupported) {
		return err
	}
	if _, err := st.w.Write(b); err != nil {
		return err
	}
	return st.rc.Flush()
}
