package longpoll

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/heraldrt/herald/protocol"
	"github.com/heraldrt/herald/server"
	"github.com/heraldrt/herald/transports/internal/watch"
	"github.com/heraldrt/herald/transports/internal/writer"
)

// Options configures the long-poll handler. Zero fields take the
// documented defaults.
type Options struct {
	// DefaultTimeout is a poll's wait when it names none. Default 25s.
	DefaultTimeout time.Duration `yaml:"default_timeout"`
	// MaxTimeout caps the timeout a poll may ask for; keep it under the
	// idle timeouts of the proxies in front (nginx: 60s). Default 30s.
	MaxTimeout time.Duration `yaml:"max_timeout"`
	// Grace is how long past its timeout a session waits for the next
	// poll before it is closed. Default 10s.
	Grace time.Duration `yaml:"grace"`
	// MaxMessages bounds the messages of one answer; the rest come with
	// the next poll, at once. Default 1000.
	MaxMessages int `yaml:"max_messages"`
}

// WithDefaults returns o with every default applied: what the handler
// runs with.
func (o Options) WithDefaults() Options { return o.withDefaults() }

func (o Options) withDefaults() Options {
	if o.DefaultTimeout == 0 {
		o.DefaultTimeout = 25 * time.Second
	}
	if o.MaxTimeout == 0 {
		o.MaxTimeout = 30 * time.Second
	}
	if o.Grace == 0 {
		o.Grace = 10 * time.Second
	}
	if o.MaxMessages == 0 {
		o.MaxMessages = 1000
	}
	return o
}

func (o Options) validate() error {
	var errs []error
	bad := func(keys []string, format string, args ...any) {
		errs = append(errs, &server.ConfigError{Keys: keys, Err: fmt.Errorf(format, args...)})
	}
	if o.MaxTimeout < time.Second || o.MaxTimeout%time.Second != 0 {
		bad([]string{"poll.max_timeout"}, "poll.max_timeout %s: want whole seconds, at least 1s", o.MaxTimeout)
	}
	if o.DefaultTimeout < 0 || o.DefaultTimeout > o.MaxTimeout || o.DefaultTimeout%time.Second != 0 {
		bad([]string{"poll.default_timeout", "poll.max_timeout"}, "poll.default_timeout %s: want whole seconds up to poll.max_timeout (%s)", o.DefaultTimeout, o.MaxTimeout)
	}
	if o.Grace < 0 {
		bad([]string{"poll.grace"}, "poll.grace %s: must not be negative", o.Grace)
	}
	if o.MaxMessages < 1 {
		bad([]string{"poll.max_messages"}, "poll.max_messages %d: want at least 1", o.MaxMessages)
	}
	return errors.Join(errs...)
}

// Validate reports every problem of o (after defaults), each a
// *server.ConfigError naming its setting, so that the binary can check
// its whole configuration before it opens the store.
func (o Options) Validate() error { return o.withDefaults().validate() }

// Handler serves GET and POST /poll.
type Handler struct {
	srv     *server.Server
	t       *server.Transport // "poll": attaches the polls to their sessions
	log     *slog.Logger
	opts    Options
	polls   writer.Group   // parked polls' answers and hand-backs, the watcher's loop
	watcher *watch.Watcher // notices a parked poll's client leaving
	parks   atomic.Uint64  // polls parked so far (tests look)
	left    atomic.Uint64  // parked polls whose client left
	changed chan struct{}  // one slot: signalled when parks or left grows
}

// New returns the long-poll handler for srv.
func New(srv *server.Server, opts Options) (*Handler, error) {
	opts = opts.withDefaults()
	if err := opts.validate(); err != nil {
		return nil, err
	}
	h := &Handler{srv: srv, t: srv.Transport("poll"), log: srv.Config().Logger, opts: opts, changed: make(chan struct{}, 1)}
	h.watcher = watch.New(&h.polls)
	return h, nil
}

// count adds one to c and signals changed.
func (h *Handler) count(c *atomic.Uint64) {
	c.Add(1)
	select {
	case h.changed <- struct{}{}:
	default:
	}
}

// Wait blocks until every parked poll has been answered, or ctx is done.
// A parked poll's connection is hijacked, so net/http's Shutdown does
// not wait for it; the binary calls Wait after the core has closed every
// session (which answers every parked poll).
func (h *Handler) Wait(ctx context.Context) error { return h.polls.Wait(ctx) }

// parse reads a poll, from the query (GET) or a JSON body (POST, for
// many channels): the same fields either way, protocol.PollRequest.
func (h *Handler) parse(w http.ResponseWriter, r *http.Request) (protocol.PollRequest, time.Duration, error) {
	var req protocol.PollRequest
	if r.Method == http.MethodPost {
		r.Body = http.MaxBytesReader(w, r.Body, h.srv.Config().Limits.MaxBodyBytes)
		dec := json.NewDecoder(r.Body)
		dec.DisallowUnknownFields()
		if err := dec.Decode(&req); err != nil {
			return req, 0, badRequest("poll body: %v", err)
		}
	} else {
		q := r.URL.Query()
		req = protocol.PollRequest{Channels: q["channel"], Cursor: q.Get("cursor"), Session: q.Get("session"), Since: q["since"], Epoch: q["epoch"]}
		switch v := q.Get("positions"); v {
		case "", "0", "false":
		case "1", "true":
			req.Positions = true
		default:
			return req, 0, badRequest("positions %q: want 1 or 0", v)
		}
		if v := q.Get("timeout"); v != "" {
			n, err := strconv.Atoi(v)
			if err != nil {
				return req, 0, badRequest("timeout %q is not a whole number of seconds", v)
			}
			req.Timeout = &n
		}
	}
	timeout := h.opts.DefaultTimeout
	if req.Timeout != nil {
		max := int(h.opts.MaxTimeout / time.Second)
		if *req.Timeout < 0 || *req.Timeout > max {
			return req, 0, badRequest("timeout %d: want 0 to %d seconds", *req.Timeout, max)
		}
		timeout = time.Duration(*req.Timeout) * time.Second
	}
	return req, timeout, nil
}

// ServeHTTP answers one poll.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	id, err := h.srv.Authenticate(r)
	if err != nil {
		server.WriteError(w, r, err, h.log)
		return
	}
	req, timeout, err := h.parse(w, r)
	if err != nil {
		server.WriteError(w, r, err, h.log)
		return
	}
	positions, err := server.ParsePositions(req.Since, req.Epoch, len(req.Channels))
	if err != nil {
		server.WriteError(w, r, err, h.log)
		return
	}
	// A poll session outlives the request: it is parked between polls.
	sess, err := h.t.Attach(r.Context(), id, server.AttachRequest{
		Session: req.Session, Channels: req.Channels, Cursor: req.Cursor, Positions: positions, RemoteAddr: r.RemoteAddr,
	})
	if err != nil {
		server.WriteError(w, r, err, h.log)
		return
	}
	// Anything already there is answered at once; otherwise the poll
	// waits — parked, without a goroutine, where it can be (park.go).
	var items []server.Item
	select {
	case <-sess.Ready():
		items = sess.DrainLimit(items, h.opts.MaxMessages)
	default:
	}
	if len(items) == 0 && timeout > 0 && !sess.Pending() && h.park(w, r, sess, timeout, req.Positions) {
		return
	}
	items = h.wait(r.Context().Done(), sess, timeout, items)
	body := h.finish(sess, items, timeout, req.Positions)
	if r.Context().Err() != nil {
		return // the client left; the next poll's cursor says what it got
	}
	setHeaders(w.Header())
	_, _ = w.Write(body)
}

// setHeaders sets an answer's content type and forbids caching it.
func setHeaders(h http.Header) {
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "no-store")
}

// finish ends a poll's use of its session — parked for the client's next
// poll, with the cursor handed out — and returns the answer.
func (h *Handler) finish(sess *server.Session, items []server.Item, timeout time.Duration, withPositions bool) []byte {
	cursor := sess.Cursor()
	var positions []protocol.Position
	if withPositions {
		positions = sess.Positions()
	}
	var notice []byte // why the server ended the session, if it did
	select {
	case <-sess.Done():
		if reason := sess.Reason(); reason.Told() {
			notice = server.DisconnectData(reason)
		}
	default:
	}
	sess.Park(cursor, timeout+h.opts.Grace)
	return answer(items, cursor, sess.ID, notice, positions)
}

// wait collects what the session has, waiting up to timeout for the
// first of it; then it takes whatever else is ready at once (catch-up
// pages included), up to MaxMessages.
// done ends the wait early (the client left); nil when none. items are
// what was drained already.
func (h *Handler) wait(done <-chan struct{}, sess *server.Session, timeout time.Duration, items []server.Item) []server.Item {
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	preempted := sess.Preempted()
wait:
	for len(items) == 0 {
		select {
		case <-sess.Ready():
			items = sess.DrainLimit(items, h.opts.MaxMessages)
		case <-timer.C:
			break wait // a 0s poll answers from here, with what is ready
		case <-sess.Done():
			break wait
		case <-preempted:
			return items
		case <-done:
			return items
		}
	}
	// A channel's batch rule makes the answer wait, up to its timeout
	// after the first message, for its size (the session's pacing, with no
	// wait of the poll's own).
	pacing := sess.Pacing(0)
	first := time.Now()
hold:
	for len(items) < h.opts.MaxMessages {
		due, wait := pacing.Due(first, len(items), time.Now())
		if due {
			break
		}
		timer.Reset(wait)
		select {
		case <-sess.Ready():
			items = sess.DrainLimit(items, h.opts.MaxMessages-len(items))
		case <-timer.C:
		case <-sess.Done():
			break hold
		case <-done:
			return items
		}
	}
	for len(items) < h.opts.MaxMessages {
		select {
		case <-sess.Ready():
			n := len(items)
			if items = sess.DrainLimit(items, h.opts.MaxMessages-len(items)); len(items) == n {
				return items
			}
		default:
			return items
		}
	}
	return items
}

// answer encodes a protocol.PollAnswer, {"messages":[…],"cursor":"…",
// "session":"…"[,"positions":[…]]}, by hand: envelopes are copied as they are, never
// re-encoded. A disconnect notice, when the server ended the
// session, comes last among the messages as
// {"event":"herald.disconnect","data":{"reason","reconnect"}}.
func answer(items []server.Item, cursor, session string, notice []byte, positions []protocol.Position) []byte {
	n := 128 + len(cursor) + len(session) + len(notice)
	for i := range items {
		if items[i].Msg != nil {
			n += len(items[i].Msg.Raw) + 1
		}
	}
	b := make([]byte, 0, n)
	b = append(b, `{"messages":[`...)
	first := true
	for i := range items {
		it := &items[i]
		if it.Msg == nil || it.Kind == server.KindSkip {
			continue // a skip only moves the cursor
		}
		if !first {
			b = append(b, ',')
		}
		first = false
		b = append(b, it.Msg.Raw...)
	}
	if notice != nil {
		if !first {
			b = append(b, ',')
		}
		b = append(b, `{"event":"`+protocol.EventDisconnect+`","data":`...)
		b = append(b, notice...)
		b = append(b, '}')
	}
	b = append(b, `],"cursor":"`...)
	b = append(b, cursor...) // base64url: no escaping needed
	b = append(b, `","session":"`...)
	b = append(b, session...)
	b = append(b, '"')
	if positions != nil {
		b = append(b, `,"positions":`...)
		p, _ := json.Marshal(positions) // names, hex epochs and numbers: it cannot fail
		b = append(b, p...)
	}
	return append(b, "}\n"...)
}

func badRequest(format string, args ...any) error { return server.Invalidf(format, args...) }
