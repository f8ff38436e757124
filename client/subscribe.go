package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/heraldrt/herald/protocol"
)

// Transport is how a subscription reaches the server.
type Transport string

// The transports (PROTOCOL.md).
const (
	// SSE streams GET /sse: one connection, events in order, the cursor
	// after every message. The default.
	SSE Transport = "sse"
	// WebSocket subscribes on GET /ws, one subscribe op per channel, and
	// resumes per channel by offset and epoch.
	WebSocket Transport = "ws"
	// LongPoll polls /poll, sending back each answer's cursor: for
	// networks that buffer streams or refuse the upgrade.
	LongPoll Transport = "poll"
)

// Position is where a subscriber stands on one channel: the offset of
// the last stored message it handled and the epoch that offset belongs
// to ("" when not known: the server takes the channel's current epoch).
// Offset 0 with no epoch means everything kept.
type Position struct {
	Offset uint64
	Epoch  string
}

// Defaults of SubscribeOptions.
const (
	// DefaultStallTimeout: three of the server's default 15 s heartbeats.
	DefaultStallTimeout = 45 * time.Second
	// DefaultPollTimeout: the server's default wait.
	DefaultPollTimeout = 25 * time.Second
	// DefaultRetryMin and DefaultRetryMax bound the reconnection backoff.
	DefaultRetryMin = 100 * time.Millisecond
	DefaultRetryMax = 2 * time.Second
)

// SubscribeOptions says what to follow, over which transport, from where.
type SubscribeOptions struct {
	// Transport: SSE (default), WebSocket or LongPoll.
	Transport Transport
	// Channels to follow, at least one, each once.
	Channels []string
	// Cursor resumes an SSE or long-poll subscription: a Subscription's
	// Cursor (an SSE event id or a poll answer's cursor). It names the
	// session, which continues. Not for WebSocket, which resumes by
	// Positions.
	Cursor string
	// Positions resume channels from per-channel positions (a mobile app
	// after a cold start). A channel without one starts at its head: only
	// messages published from now on. A Cursor, when given, wins for the
	// channels it holds.
	Positions map[string]Position
	// Session continues a session: the id from a Subscription's Session.
	// Messages published with exclude_session naming it stay passed over.
	// The server ignores an id that is not the caller's and starts a new
	// session.
	Session string
	// StallTimeout: a connection that brings nothing, not even a
	// heartbeat or ping, for this long is dropped and resumed (SSE,
	// WebSocket). Default DefaultStallTimeout; negative: never.
	StallTimeout time.Duration
	// PollTimeout is how long the server may hold a poll when nothing is
	// new, in whole seconds (LongPoll; the server caps it). Default
	// DefaultPollTimeout. A poll unanswered 15 s past it is given up and
	// sent again.
	PollTimeout time.Duration
	// RetryMin and RetryMax bound the wait before a reconnection: from
	// RetryMin, doubling up to RetryMax, jittered, and back to RetryMin
	// after every connection that worked. A server's Retry-After (429,
	// 503) is honoured up to 30 s. Defaults DefaultRetryMin and
	// DefaultRetryMax.
	RetryMin, RetryMax time.Duration
}

func (o SubscribeOptions) withDefaults() SubscribeOptions {
	if o.Transport == "" {
		o.Transport = SSE
	}
	if o.StallTimeout == 0 {
		o.StallTimeout = DefaultStallTimeout
	} else if o.StallTimeout < 0 {
		o.StallTimeout = 0
	}
	if o.PollTimeout == 0 {
		o.PollTimeout = DefaultPollTimeout
	}
	if o.RetryMin == 0 {
		o.RetryMin = DefaultRetryMin
	}
	if o.RetryMax == 0 {
		o.RetryMax = max(DefaultRetryMax, o.RetryMin)
	}
	return o
}

func (o SubscribeOptions) validate() error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf("client: "+format, args...)) }
	switch o.Transport {
	case SSE, WebSocket, LongPoll:
	default:
		bad("transport %q is unknown; use client.SSE, client.WebSocket or client.LongPoll", o.Transport)
	}
	if len(o.Channels) == 0 {
		bad("name at least one channel")
	}
	seen := make(map[string]bool, len(o.Channels))
	for _, ch := range o.Channels {
		if seen[ch] {
			bad("channel %q is given twice", ch)
		}
		seen[ch] = true
	}
	for ch := range o.Positions {
		if !seen[ch] {
			bad("a position for channel %q, which is not among the channels", ch)
		}
	}
	if o.Cursor != "" && o.Transport == WebSocket {
		bad("a cursor is for SSE and long polling; a WebSocket subscription resumes by Positions")
	}
	if o.PollTimeout < time.Second || o.PollTimeout%time.Second != 0 {
		bad("poll timeout %s: want whole seconds, at least 1s", o.PollTimeout)
	}
	if o.RetryMin < 0 || o.RetryMax < o.RetryMin {
		bad("retry bounds %s–%s: want 0 ≤ RetryMin ≤ RetryMax", o.RetryMin, o.RetryMax)
	}
	return errors.Join(errs...)
}

// Kind says what an Event is.
type Kind int

const (
	// KindMessage is a stored message: its offset is the channel's
	// previous one + 1, in its epoch. Handle it, then persist the
	// subscription's Cursor or Positions.
	KindMessage Kind = iota + 1
	// KindReset is herald.reset: the channel's history no longer reaches
	// back to the subscriber's position (or its epoch changed). Reload
	// the channel's state; what is kept follows.
	KindReset
	// KindEphemeral is a message without an offset, live only: an
	// ephemeral publish, a presence event (herald.join, leave, state,
	// online, offline) or herald.unsubscribed. It moves no position.
	KindEphemeral
)

func (k Kind) String() string {
	switch k {
	case KindMessage:
		return "message"
	case KindReset:
		return "reset"
	case KindEphemeral:
		return "ephemeral"
	}
	return fmt.Sprintf("kind(%d)", int(k))
}

// Event is one message of a subscription.
type Event struct {
	Kind Kind
	// Raw is the envelope, one line of JSON, as the server sent it.
	Raw json.RawMessage
	// Envelope is Raw decoded.
	Envelope protocol.Envelope
}

// Subscription follows channels exactly once and in order: every stored
// message is handed out once, in offset order per channel, across network
// cuts, server restarts and the subscription's own reconnects. It runs
// one goroutine, which Close stops. Next is for one goroutine at a time;
// Cursor, Positions and Session may be called from any.
type Subscription struct {
	c    *Client
	opts SubscribeOptions
	log  *slog.Logger
	t    *tracker // the loop's

	events    chan delivery
	ready     chan struct{} // closed once something worked
	readyOnce sync.Once
	done      chan struct{} // closed when the loop has ended
	err       error         // why the loop ended; set before done is closed
	stop      context.CancelFunc

	mu    sync.Mutex
	state *snapshot
}

// delivery is an event and the resume state after it.
type delivery struct {
	ev   Event
	snap *snapshot
}

// Subscribe starts following opts.Channels and returns once the first
// connection is established (SSE: herald.connected; WebSocket: every
// subscribe acknowledged; long polling: the first answer) — so a message
// published after Subscribe returns is received even by a subscription
// that starts at the channels' heads. Until then it retries as it will
// later; ctx bounds that wait only. A refusal for good (a bad channel,
// 401, 403) is an error wrapping ErrRefused.
func (c *Client) Subscribe(ctx context.Context, opts SubscribeOptions) (*Subscription, error) {
	opts = opts.withDefaults()
	if err := opts.validate(); err != nil {
		return nil, err
	}
	loopCtx, stop := context.WithCancel(context.Background())
	s := &Subscription{
		c:      c,
		opts:   opts,
		log:    c.opts.Logger.With("transport", string(opts.Transport)),
		t:      newTracker(opts),
		events: make(chan delivery),
		ready:  make(chan struct{}),
		done:   make(chan struct{}),
		stop:   stop,
	}
	s.state = s.t.snapshot()
	var attempt func(context.Context) attemptResult
	switch opts.Transport {
	case WebSocket:
		attempt = s.attemptWS
	case LongPoll:
		attempt = newPoller(s).attempt
	default:
		attempt = s.attemptSSE
	}
	go func() {
		defer close(s.done)
		s.err = s.run(loopCtx, attempt)
	}()
	select {
	case <-s.ready:
		return s, nil
	case <-s.done:
		stop()
		return nil, s.err
	case <-ctx.Done():
		s.Close()
		return nil, ctx.Err()
	}
}

// Next returns the next event: a stored message, a reset or an ephemeral
// message. It waits until there is one, ctx is done (ctx.Err(); the
// subscription goes on), or the subscription ends: Close (ErrClosed) or
// an error it cannot recover from (wrapping ErrRefused, ErrDisconnected
// or ErrInconsistent), which every later Next returns too.
func (s *Subscription) Next(ctx context.Context) (Event, error) {
	select {
	case d := <-s.events:
		s.apply(d.snap)
		return d.ev, nil
	case <-s.done:
		return Event{}, s.end()
	case <-ctx.Done():
		return Event{}, ctx.Err()
	}
}

// end is the subscription's terminal error.
func (s *Subscription) end() error {
	if s.err == nil {
		return ErrClosed
	}
	return s.err
}

// Close stops the subscription and waits for its goroutine. Cursor,
// Positions and Session keep saying where it stopped.
func (s *Subscription) Close() error {
	s.stop()
	<-s.done
	return nil
}

// Cursor returns the cursor that resumes right after the last event Next
// returned (SSE, long polling): pass it as SubscribeOptions.Cursor. It is
// "" when no cursor says exactly that — on WebSocket, and in the middle of
// a poll answer — and Positions do.
func (s *Subscription) Cursor() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.state.cursor
}

// Session returns the subscription's session id: what exclude_session
// (or exclude_sender with session) names to keep a publish from it, and
// what SubscribeOptions.Session continues.
func (s *Subscription) Session() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.state.session
}

// Positions returns each channel's position after the last event Next
// returned, for the channels whose position is known: pass them as
// SubscribeOptions.Positions to resume on any transport.
func (s *Subscription) Positions() map[string]Position {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[string]Position, len(s.state.pos))
	for i, p := range s.state.pos {
		if p.known {
			out[s.opts.Channels[i]] = Position{Offset: p.offset, Epoch: p.epoch}
		}
	}
	return out
}

// apply makes snap the state the accessors report, unless a newer one is
// there already (the loop publishes changes that carry no event, such as
// a poll answer's cursor, once the events before them were taken).
func (s *Subscription) apply(snap *snapshot) {
	s.mu.Lock()
	if snap.seq > s.state.seq {
		s.state = snap
	}
	s.mu.Unlock()
}

// markReady lets Subscribe return: a connection worked, or there is an
// event to hand out.
func (s *Subscription) markReady() { s.readyOnce.Do(func() { close(s.ready) }) }

// hand gives ev to Next, with the state after it, and waits until Next
// takes it; false when the subscription is closing.
func (s *Subscription) hand(ctx context.Context, ev Event) bool {
	s.markReady()
	select {
	case s.events <- delivery{ev: ev, snap: s.t.snapshot()}:
		return true
	case <-ctx.Done():
		return false
	}
}

// moved publishes a change of the resume state that no event carries.
func (s *Subscription) moved() { s.apply(s.t.snapshot()) }

const (
	// maxBrokenInARow is how many connections in a row may end in a
	// protocol violation without any message handed out before the
	// subscription gives up.
	maxBrokenInARow = 5
	// maxRetryAfter caps how long a server's Retry-After is honoured.
	maxRetryAfter = 30 * time.Second
)

// attemptResult is how one connection ended.
type attemptResult struct {
	// connected: a good connection (SSE: got herald.connected; WebSocket:
	// got connected and an ok reply to every subscribe; poll: an answer)
	connected bool
	progress  bool // handed out at least one message
	broken    bool // abandoned over a protocol violation
	fatal     bool // err will not go away by retrying
	err       error
	// retryAfter is the server's Retry-After on a 429 or 503.
	retryAfter time.Duration
}

// run is the reconnect loop, the same for every transport: attempt runs
// one connection. It returns nil once ctx is done (Close), else the error
// that ended the subscription for good.
func (s *Subscription) run(ctx context.Context, attempt func(context.Context) attemptResult) error {
	bo := backoff{min: s.opts.RetryMin, max: s.opts.RetryMax, jitter: true}
	brokenInARow := 0
	for {
		r := attempt(ctx)
		switch {
		case ctx.Err() != nil:
			return nil
		case r.fatal:
			return r.err
		}
		if r.connected {
			s.markReady()
		}
		switch {
		case r.progress:
			brokenInARow = 0
		case r.broken:
			brokenInARow++
			if brokenInARow >= maxBrokenInARow {
				return fmt.Errorf("giving up after %d inconsistent streams in a row: %w: %w", brokenInARow, ErrInconsistent, r.err)
			}
		}
		if r.connected && !r.broken {
			bo.reset()
		}
		d := bo.next()
		if r.retryAfter > d {
			d = min(r.retryAfter, maxRetryAfter)
		}
		// A connection that worked and ended (server restart, shutdown
		// notice) is routine; a failure to connect or a bad stream is not.
		level := slog.LevelWarn
		if r.connected && !r.broken {
			level = slog.LevelDebug
		}
		s.log.Log(ctx, level, "reconnecting", "in", d.Round(time.Millisecond), "err", r.err)
		if !sleepOrDone(ctx, d) {
			return nil
		}
	}
}

// deliver acts on the tracker's judgement of one message, for every
// transport: it logs the note, hands an accepted event to Next, publishes
// a moved position, and reports whether the connection ends (a disconnect
// notice, a broken stream, or the subscription closing), filling in r.
func (s *Subscription) deliver(ctx context.Context, o outcome, r *attemptResult) (end bool) {
	if o.note != "" {
		s.log.Debug(o.note, o.attrs...)
	}
	switch o.verdict {
	case verdictDeliver:
		if !s.hand(ctx, o.event) {
			r.err = ctx.Err()
			return true
		}
		r.progress = true
	case verdictConnected:
		r.connected = true
		s.moved() // first: Subscribe returns once ready, and Session must tell the session then
		s.markReady()
	case verdictDisconnect:
		r.err, r.fatal = o.err, !o.reconnect
		return true
	case verdictBroken:
		r.broken, r.err = true, o.err
		return true
	default:
		if o.moved {
			s.moved()
		}
	}
	return false
}

// sleepOrDone waits d or until ctx is done; it reports whether d passed.
func sleepOrDone(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// backoff is a capped exponential backoff that the loop resets after
// every good connection.
type backoff struct {
	min, max time.Duration
	jitter   bool
	cur      time.Duration
}

// next returns the delay before the next attempt: min, then doubling up
// to max. With jitter, a delay is drawn from [d/2, d].
func (b *backoff) next() time.Duration {
	if b.cur == 0 {
		b.cur = b.min
	} else {
		b.cur = min(b.cur*2, b.max)
	}
	d := b.cur
	if b.jitter && d > 1 {
		d = d/2 + rand.N(d/2+1)
	}
	return d
}

func (b *backoff) reset() { b.cur = 0 }
