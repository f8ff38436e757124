package client

// The SSE subscriber: one connection to GET /sse per attempt, read by the
// r3labs client behind the guards the package documentation explains.

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"slices"
	"time"

	sse "github.com/r3labs/sse/v2"
)

// maxEventBytes bounds one SSE event (envelope plus framing), and a
// WebSocket frame of a subscription. The server's defaults allow 64 KiB
// of data; this leaves room for any reasonable configuration.
const maxEventBytes = 8 << 20

var (
	errAbandoned   = errors.New("connection abandoned")
	errStalled     = errors.New("stream stalled")
	errStreamEnded = errors.New("the server ended the stream")
	errEventCut    = errors.New("the stream ended in the middle of an event (the partial event was dropped)")
)

// attemptSSE runs one connection with the r3labs client and returns how
// it ended. Only events the tracker accepts are handed out and only their
// ids move the cursor.
func (s *Subscription) attemptSSE(ctx context.Context) (r attemptResult) {
	actx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	var stall *time.Timer
	if d := s.opts.StallTimeout; d > 0 {
		stall = time.AfterFunc(d, func() { cancel(errStalled) })
		defer stall.Stop()
	}
	tr := &streamTransport{
		base:        s.c.sseRT,
		client:      s.c,
		lastEventID: s.t.cursor,
		touch: func() {
			if stall != nil {
				stall.Reset(s.opts.StallTimeout)
			}
		},
	}
	u := s.c.URL("sse")
	u.RawQuery = s.t.streamQuery().Encode()
	c := sse.NewClient(u.String(), sse.ClientMaxBufferSize(maxEventBytes+64<<10))
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
		if s.deliver(ctx, o, &r) {
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
		r.err = fmt.Errorf("no data for %s (stall timeout)", s.opts.StallTimeout)
	case err == nil:
		r.err = errStreamEnded
		if tr.guard != nil && tr.guard.cut {
			r.err = errEventCut
		}
	default:
		r.err = err
		var ae *APIError
		var ns *notEventStreamError
		switch {
		case errors.As(err, &ae):
			r.fatal, r.retryAfter = !ae.Retryable(), ae.RetryAfter
			if r.fatal {
				r.err = refused(err)
			}
		case errors.As(err, &ns):
			r.fatal, r.err = true, refused(err)
		case errors.Is(err, errEventTooLarge), errors.Is(err, bufio.ErrTooLong):
			r.fatal = true
		case tr.guard != nil && tr.guard.cut:
			r.err = fmt.Errorf("%w: %w", errEventCut, err)
		}
	}
	return r
}

// noRetry makes the r3labs client try once: reconnecting is ours.
type noRetry struct{}

func (noRetry) NextBackOff() time.Duration { return -1 } // backoff.Stop
func (noRetry) Reset()                     {}

// notEventStreamError is a 200 answer that is not an event stream: the
// URL points at something else.
type notEventStreamError struct{ contentType string }

func (e *notEventStreamError) Error() string {
	return fmt.Sprintf("the server answered 200 with Content-Type %q, not an event stream; is the URL a Herald server?", e.contentType)
}

// checkStreamResponse is the r3labs ResponseValidator: a 200 event stream,
// or the server's JSON error as an *APIError.
func checkStreamResponse(_ *sse.Client, resp *http.Response) error {
	if resp.StatusCode != http.StatusOK {
		defer resp.Body.Close()
		return ErrorFromResponse(resp)
	}
	ct := resp.Header.Get("Content-Type")
	if mt, _, _ := mime.ParseMediaType(ct); mt != "text/event-stream" {
		resp.Body.Close()
		return &notEventStreamError{ct}
	}
	return nil
}

// streamTransport sends the stream request with our credentials and our
// Last-Event-ID — never the library's — and hands the library the body
// through an eventGuard.
type streamTransport struct {
	base        http.RoundTripper
	client      *Client
	lastEventID string
	touch       func()
	guard       *eventGuard // the last response's body
}

func (t *streamTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	r := req.Clone(req.Context())
	r.Header.Del("Last-Event-ID")
	if t.lastEventID != "" {
		r.Header.Set("Last-Event-ID", t.lastEventID)
	}
	t.client.setAuth(r.Header)
	resp, err := t.base.RoundTrip(r)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode == http.StatusOK {
		t.guard = newEventGuard(resp.Body, maxEventBytes, t.touch)
		resp.Body = t.guard
	}
	return resp, nil
}

var errEventTooLarge = fmt.Errorf("an SSE event is over %d bytes", maxEventBytes)

// eventGuard reads an event stream and releases it only in whole events:
// bytes up to and including the blank line that ends an event. When the
// stream ends or breaks, an unfinished event is dropped, so a reader never
// sees half an event (nor its id:). Line endings are CRLF, LF or CR, as in
// the SSE specification.
type eventGuard struct {
	body  io.ReadCloser
	max   int
	touch func() // called whenever bytes arrive

	buf     []byte // buf[off:end] released, not yet read; buf[end:] unfinished event
	off     int
	end     int
	scanned int  // buf[:scanned] has been scanned for event ends
	bol     bool // at the beginning of a line
	afterCR bool // the last byte scanned was a CR
	err     error
	// cut is set when the stream ended inside an event.
	cut bool
}

func newEventGuard(body io.ReadCloser, max int, touch func()) *eventGuard {
	return &eventGuard{body: body, max: max, touch: touch, bol: true}
}

func (g *eventGuard) Read(p []byte) (int, error) {
	for g.off == g.end {
		if g.err != nil {
			return 0, g.err
		}
		g.fill()
	}
	n := copy(p, g.buf[g.off:g.end])
	g.off += n
	return n, nil
}

// fill reads once from the body and releases whatever events that ends.
func (g *eventGuard) fill() {
	if g.off > 0 { // drop what was read
		n := copy(g.buf, g.buf[g.off:])
		g.buf = g.buf[:n]
		g.end -= g.off
		g.scanned -= g.off
		g.off = 0
	}
	g.buf = slices.Grow(g.buf, 32<<10)
	n, err := g.body.Read(g.buf[len(g.buf):cap(g.buf)])
	g.buf = g.buf[:len(g.buf)+n]
	if n > 0 && g.touch != nil {
		g.touch()
	}
	g.scan()
	if err == nil && len(g.buf)-g.end > g.max {
		err = errEventTooLarge
	}
	if err != nil {
		if len(bytes.Trim(g.buf[g.end:], "\r\n")) > 0 {
			g.cut = true
		}
		g.buf = g.buf[:g.end]
		g.scanned = g.end
		g.err = err
	}
}

// scan moves end past every event end (an empty line) in the new bytes.
func (g *eventGuard) scan() {
	for i := g.scanned; i < len(g.buf); i++ {
		switch c := g.buf[i]; {
		case c == '\n' && g.afterCR:
			// The LF of a CRLF: the line ended at the CR.
			g.afterCR = false
			if g.end == i {
				g.end = i + 1
			}
		case c == '\r' || c == '\n':
			if g.bol {
				g.end = i + 1 // an empty line ends the event
			}
			g.bol, g.afterCR = true, c == '\r'
		default:
			g.bol, g.afterCR = false, false
		}
	}
	g.scanned = len(g.buf)
}

func (g *eventGuard) Close() error { return g.body.Close() }
