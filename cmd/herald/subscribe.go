package main

// `herald subscribe` streams GET /sse (or, with --transport ws, GET /ws:
// see ws_subscribe.go; with --transport poll, long polls on /poll: see
// poll_subscribe.go) and prints every message envelope as one JSON line,
// exactly once and in order across network cuts and server restarts. The
// reconnect loop (run), the output (deliver) and the judge of every
// message (tracker) are the same for both transports; each transport only
// runs one connection (attemptSSE, attemptWS).
//
// Why the r3labs/sse client, and how it is guarded. DESIGN asks for
// github.com/r3labs/sse/v2 (v2.10.0) as the Go SSE client, and it can be
// made sound because each of its defects sits at a seam we control:
//
//   - At a broken or ended stream its scanner hands out whatever is
//     buffered as if it were a whole event, and stores that event's id: as
//     Last-Event-ID. It never sees a half event here: the response body is
//     wrapped (streamTransport, eventGuard) in a reader that releases bytes
//     only up to the blank line that ends an event and drops an
//     unterminated tail when the stream ends. And its Last-Event-ID is never
//     sent: every connection uses a fresh client, and our RoundTripper
//     deletes the header and sets our own cursor, the id of the last event
//     we accepted.
//   - On a clean end of stream (what a SIGKILLed or restarted server looks
//     like) Subscribe returns nil and does not reconnect, and its
//     exponential backoff is never reset after a good connection (and gives
//     up after 15 minutes). So it runs one connection at a time (a
//     ReconnectStrategy that stops at once) and our loop reconnects after
//     any end: backoff from 100ms doubling to 2s, jittered, reset after
//     each connection that got herald.connected; 429/503 honour
//     Retry-After; other 4xx stop the command with the server's message.
//   - It drops the body of a non-200 answer, so a ResponseValidator reads
//     the server's JSON error; its 64 KiB event limit is below the envelope
//     of a 64 KiB message, so it is raised (our guard fails first, clearly).
//     It fills an event without id: with the previous id, so an event whose
//     id equals the one before it is treated as having none.
//
// On top, every event is validated before it is printed (tracker): a
// complete JSON envelope for a subscribed channel whose offset is exactly
// last+1 in the channel's epoch, or a herald.reset, or an ephemeral
// message (no offset). A replayed message (offset <= last) is dropped; a
// gap, a malformed event or an epoch change without herald.reset abandons
// the connection and resumes from our cursor. A connection that sends
// nothing, not even a heartbeat, for --stall-timeout is dropped and
// resumed, so a silent network cut cannot hang the subscriber.

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"time"

	"github.com/gorilla/websocket"
	sse "github.com/r3labs/sse/v2"

	"github.com/heraldrt/herald/server"
)

// cmdSubscribe implements `herald subscribe`.
//
//	herald subscribe --channel chat_room_7 [--channel B] [--cursor C | --since N...] [--max N] [--timeout D]
func cmdSubscribe(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	opts, err := parseSubscribeFlags(args, processEnv().getenv, stderr)
	if err != nil {
		return err
	}
	return runSubscribe(ctx, opts, stdout, stderr)
}

const (
	// maxEventBytes bounds one SSE event (envelope plus framing). The
	// server's defaults allow 64 KiB of data; this leaves room for any
	// reasonable configuration.
	maxEventBytes = 8 << 20
	// defaultStall is how long a stream may stay silent (no event, no
	// heartbeat) before it is dropped and resumed: three of the server's
	// default 15 s heartbeats.
	defaultStall = 45 * time.Second
	// maxBrokenInARow is how many connections in a row may end in a
	// protocol violation without any message printed before the command
	// gives up.
	maxBrokenInARow = 5
	// maxRetryAfter caps how long a server's Retry-After is honoured.
	maxRetryAfter = 30 * time.Second
)

// backoffPolicy shapes reconnection delays.
type backoffPolicy struct {
	base, max time.Duration
	jitter    bool
}

var defaultBackoff = backoffPolicy{base: 100 * time.Millisecond, max: 2 * time.Second, jitter: true}

// subscribeOptions are the parsed flags of `herald subscribe`.
type subscribeOptions struct {
	base     *url.URL
	token    string
	channels []string
	cursor   string   // --cursor: resume the whole stream
	since    []string // --since: one per channel ("" = from now)
	epochs   []string // --epoch: one per channel, with since
	max      int
	timeout  time.Duration // no message for this long is an error; 0 = wait forever
	stall    time.Duration // no bytes for this long: reconnect; 0 = never
	verbose  bool
	backoff  backoffPolicy
	// via is the --transport: "sse", "ws" or "poll".
	via string
	// pollWait is --poll-timeout, in seconds: how long the server may
	// hold a poll (poll only).
	pollWait int
	// transport carries the SSE and poll requests; nil uses a clone of
	// http.DefaultTransport.
	transport http.RoundTripper
	// wsDialer opens the WebSocket connections; nil uses newWSDialer().
	wsDialer *websocket.Dialer
}

func parseSubscribeFlags(args []string, getenv func(string) string, stderr io.Writer) (subscribeOptions, error) {
	fs := newFlagSet("subscribe", "subscribe --channel NAME [--channel NAME]... [--transport sse|ws|poll] [--cursor C | --since N... [--epoch E...]] [--max N] [--timeout D] [--poll-timeout N] [--verbose]", stderr)
	var (
		cf                      clientFlags
		opts                    subscribeOptions
		channels, since, epochs stringList
		transport               string
	)
	cf.register(fs)
	fs.Var(&channels, "channel", "channel to follow; repeat for several (one stream, one cursor)")
	fs.StringVar(&opts.cursor, "cursor", "", "resume from this cursor (an SSE event id or poll cursor; --verbose logs the last one on exit); sse and poll only")
	fs.Var(&since, "since", "resume after this offset: one per --channel, in the same order (empty for \"from now\")")
	fs.Var(&epochs, "epoch", "the epoch each --since offset belongs to: one per --channel, in the same order")
	fs.StringVar(&transport, "transport", "sse", "transport: sse (Server-Sent Events, GET /sse), ws (WebSocket, GET /ws) or poll (long polling, GET or POST /poll)")
	fs.IntVar(&opts.max, "max", 0, "exit after printing N messages (0 = no limit)")
	fs.DurationVar(&opts.timeout, "timeout", 0, "fail when no message arrives for this long (0 = wait forever)")
	fs.DurationVar(&opts.stall, "stall-timeout", defaultStall, "reconnect when the server sends nothing, not even a heartbeat or ping, for this long (0 = never); sse and ws only (poll: see --poll-timeout)")
	fs.IntVar(&opts.pollWait, "poll-timeout", defaultPollWait, "poll only: seconds the server may hold a poll open when nothing is new (it caps this, 30 by default); an answer that takes 15s longer is given up and the poll is retried")
	fs.BoolVar(&opts.verbose, "verbose", false, "log connects, disconnects, reconnects and dropped duplicates to stderr")
	fs.BoolVar(&opts.verbose, "v", false, "short for --verbose")
	if err := parseFlags(fs, args); err != nil {
		return subscribeOptions{}, err
	}
	base, err := cf.resolve(getenv)
	if err != nil {
		return subscribeOptions{}, err
	}
	opts.base, opts.token, opts.backoff = base, cf.token, defaultBackoff

	switch transport {
	case "sse", "ws", "poll":
		opts.via = transport
	default:
		return subscribeOptions{}, fmt.Errorf("--transport %q is unknown; use sse, ws or poll", transport)
	}
	if len(channels) == 0 {
		return subscribeOptions{}, errors.New("--channel is required")
	}
	seen := make(map[string]bool, len(channels))
	for _, ch := range channels {
		if err := server.ValidateChannel(ch); err != nil {
			return subscribeOptions{}, fmt.Errorf("--channel: %w", err)
		}
		if seen[ch] {
			return subscribeOptions{}, fmt.Errorf("--channel %q is given twice", ch)
		}
		seen[ch] = true
	}
	opts.channels = channels
	if opts.cursor != "" && opts.via == "ws" {
		return subscribeOptions{}, errors.New("--cursor is for --transport sse and poll; a WebSocket subscriber resumes per channel: give --since N (and --epoch E), one each per --channel")
	}
	if opts.cursor != "" && len(since) > 0 {
		return subscribeOptions{}, errors.New("give --cursor or --since, not both")
	}
	if len(since) > 0 {
		if _, err := server.ParsePositions(since, epochs, len(channels)); err != nil {
			return subscribeOptions{}, fmt.Errorf("--since/--epoch: %w", err)
		}
	} else if len(epochs) > 0 {
		return subscribeOptions{}, errors.New("--epoch needs --since")
	}
	opts.since, opts.epochs = since, epochs
	switch {
	case opts.max < 0:
		return subscribeOptions{}, fmt.Errorf("--max %d: want 0 (no limit) or more", opts.max)
	case opts.timeout < 0:
		return subscribeOptions{}, fmt.Errorf("--timeout %s: must not be negative", opts.timeout)
	case opts.stall < 0:
		return subscribeOptions{}, fmt.Errorf("--stall-timeout %s: must not be negative", opts.stall)
	case opts.pollWait < 1:
		return subscribeOptions{}, fmt.Errorf("--poll-timeout %d: want 1 second or more", opts.pollWait)
	}
	return opts, nil
}

// idleTimeout is the cause of a run cancelled by --timeout.
type idleTimeout struct{ d time.Duration }

func (e *idleTimeout) Error() string { return fmt.Sprintf("no message for %s (--timeout)", e.d) }

// runSubscribe follows the stream until ctx is cancelled (nil), --max
// messages are printed (nil), --timeout passes without a message, or the
// server refuses the subscription (the error).
func runSubscribe(ctx context.Context, opts subscribeOptions, stdout, stderr io.Writer) error {
	runCtx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	s := &subscriber{
		opts:   opts,
		t:      newTracker(opts),
		stdout: stdout,
		stderr: stderr,
	}
	attempt := s.attemptSSE
	if opts.via == "ws" {
		attempt = s.attemptWS
	} else if opts.via == "poll" {
		attempt = newPoller(s).attempt
	} else if s.base = opts.transport; s.base == nil {
		s.base = newStreamHTTPTransport()
	}
	if opts.timeout > 0 {
		s.idle = time.AfterFunc(opts.timeout, func() { cancel(&idleTimeout{opts.timeout}) })
		defer s.idle.Stop()
	}
	err := s.run(runCtx, attempt)
	if s.t.cursor != "" {
		s.debugf("stopped; resume with --cursor %s", s.t.cursor)
	} else if flags := s.t.resumeFlags(); flags != "" {
		s.debugf("stopped; resume with %s", flags)
	}
	return err
}

// newStreamHTTPTransport is http.DefaultTransport with a bound on the wait
// for response headers (the body of a stream has no bound).
func newStreamHTTPTransport() http.RoundTripper {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.ResponseHeaderTimeout = 30 * time.Second
	return t
}

// subscriber is one run of `herald subscribe`.
type subscriber struct {
	opts    subscribeOptions
	t       *tracker
	base    http.RoundTripper // SSE only
	stdout  io.Writer
	stderr  io.Writer
	idle    *time.Timer // --timeout; nil without
	printed int
}

// attemptResult is how one connection ended.
type attemptResult struct {
	// connected: a good connection (SSE: got herald.connected; WebSocket:
	// got connected and an ok reply to every subscribe)
	connected bool
	progress  bool // printed at least one message
	broken    bool // abandoned over a protocol violation
	done      bool // --max reached
	fatal     bool // err will not go away by retrying
	err       error
	// retryAfter is the server's Retry-After on a 429 or 503.
	retryAfter time.Duration
}

// run is the reconnect loop, the same for every transport: attempt runs
// one connection.
func (s *subscriber) run(ctx context.Context, attempt func(context.Context) attemptResult) error {
	bo := reconnectBackoff{policy: s.opts.backoff}
	brokenInARow := 0
	for {
		r := attempt(ctx)
		switch {
		case r.done:
			return nil
		case ctx.Err() != nil:
			return runEnd(ctx)
		case r.fatal:
			return r.err
		}
		switch {
		case r.progress:
			brokenInARow = 0
		case r.broken:
			brokenInARow++
			if brokenInARow >= maxBrokenInARow {
				return fmt.Errorf("giving up after %d inconsistent streams in a row: %w", brokenInARow, r.err)
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
		if r.connected && !r.broken {
			s.debugf("reconnecting in %s: %v", d.Round(time.Millisecond), r.err)
		} else {
			s.logf("reconnecting in %s: %v", d.Round(time.Millisecond), r.err)
		}
		if !sleepOrDone(ctx, d) {
			return runEnd(ctx)
		}
	}
}

// runEnd is what run returns once ctx is done: the --timeout error, or nil
// for a cancel (SIGINT, SIGTERM).
func runEnd(ctx context.Context) error {
	var idle *idleTimeout
	if errors.As(context.Cause(ctx), &idle) {
		return idle
	}
	return nil
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

var (
	errAbandoned   = errors.New("connection abandoned")
	errStalled     = errors.New("stream stalled")
	errStreamEnded = errors.New("the server ended the stream")
	errEventCut    = errors.New("the stream ended in the middle of an event (the partial event was dropped)")
)

// attemptSSE runs one connection with the r3labs client and returns how
// it ended. Only events the tracker accepts are printed and only their ids
// move the cursor.
func (s *subscriber) attemptSSE(ctx context.Context) (r attemptResult) {
	actx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	var stall *time.Timer
	if s.opts.stall > 0 {
		stall = time.AfterFunc(s.opts.stall, func() { cancel(errStalled) })
		defer stall.Stop()
	}
	tr := &streamTransport{
		base:        s.base,
		token:       s.opts.token,
		lastEventID: s.t.cursor,
		touch: func() {
			if stall != nil {
				stall.Reset(s.opts.stall)
			}
		},
	}
	c := sse.NewClient(s.t.streamURL(s.opts.base), sse.ClientMaxBufferSize(maxEventBytes+64<<10))
	c.Connection = &http.Client{Transport: tr}
	c.ReconnectStrategy = noRetry{}
	c.ResponseValidator = checkStreamResponse

	ended := false // the connection is abandoned: r tells why
	var prevID []byte
	handler := func(ev *sse.Event) {
		if ended {
			return // events the library had buffered before we gave up
		}
		// The library copies the previous id into an event that has none.
		own := len(ev.ID) > 0 && !bytes.Equal(ev.ID, prevID)
		prevID = ev.ID
		o := s.t.handle(streamEvent{name: string(ev.Event), data: ev.Data, id: string(ev.ID), hasID: own})
		if s.deliver(o, &r) {
			ended = true
			cancel(errAbandoned)
		}
	}
	err := c.SubscribeWithContext(actx, "", handler)
	switch {
	case ended:
	case ctx.Err() != nil:
		r.err = ctx.Err()
	case errors.Is(context.Cause(actx), errStalled):
		r.err = fmt.Errorf("no data for %s (--stall-timeout)", s.opts.stall)
	case err == nil:
		r.err = errStreamEnded
		if tr.guard != nil && tr.guard.cut {
			r.err = errEventCut
		}
	default:
		r.err = err
		var ae *apiError
		var ns *notEventStreamError
		switch {
		case errors.As(err, &ae):
			r.fatal, r.retryAfter = !ae.retryable(), ae.RetryAfter
		case errors.As(err, &ns), errors.Is(err, errEventTooLarge), errors.Is(err, bufio.ErrTooLong):
			r.fatal = true
		case tr.guard != nil && tr.guard.cut:
			r.err = fmt.Errorf("%w: %w", errEventCut, err)
		}
	}
	return r
}

// deliver acts on the tracker's judgement of one message, for every
// transport: it logs the note, prints an accepted line, and reports
// whether the connection ends (--max reached, a disconnect notice, a
// broken stream, or output that cannot be written), filling in r.
func (s *subscriber) deliver(o outcome, r *attemptResult) (end bool) {
	if o.note != "" {
		s.debugf("%s", o.note)
	}
	switch o.verdict {
	case verdictPrint:
		if err := s.emit(o.line); err != nil {
			r.err, r.fatal = err, true
			return true
		}
		r.progress = true
		if s.opts.max > 0 && s.printed >= s.opts.max {
			r.done, r.err = true, nil
			return true
		}
	case verdictConnected:
		r.connected = true
	case verdictDisconnect:
		r.err, r.fatal = o.err, !o.reconnect
		return true
	case verdictBroken:
		r.broken, r.err = true, o.err
		return true
	}
	return false
}

// emit prints one accepted line.
func (s *subscriber) emit(line []byte) error {
	buf := make([]byte, 0, len(line)+1)
	buf = append(append(buf, line...), '\n')
	if _, err := s.stdout.Write(buf); err != nil {
		return fmt.Errorf("write output: %w", err)
	}
	s.printed++
	if s.idle != nil {
		s.idle.Reset(s.opts.timeout)
	}
	return nil
}

func (s *subscriber) logf(format string, args ...any) {
	fmt.Fprintf(s.stderr, "herald subscribe: "+format+"\n", args...)
}

func (s *subscriber) debugf(format string, args ...any) {
	if s.opts.verbose {
		s.logf(format, args...)
	}
}
