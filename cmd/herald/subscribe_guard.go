package main

// The guards that make the r3labs client sound; see the comment at the
// top of subscribe.go.

import (
	"bytes"
	"fmt"
	"io"
	"math/rand/v2"
	"mime"
	"net/http"
	"slices"
	"time"

	sse "github.com/r3labs/sse/v2"
)

// noRetry makes the r3labs client try once: reconnecting is ours.
type noRetry struct{}

func (noRetry) NextBackOff() time.Duration { return -1 } // backoff.Stop
func (noRetry) Reset()                     {}

// notEventStreamError is a 200 answer that is not an event stream: the
// URL points at something else.
type notEventStreamError struct{ contentType string }

func (e *notEventStreamError) Error() string {
	return fmt.Sprintf("the server answered 200 with Content-Type %q, not an event stream; is --server a Herald server?", e.contentType)
}

// checkStreamResponse is the r3labs ResponseValidator: a 200 event stream,
// or the server's JSON error as an *apiError.
func checkStreamResponse(_ *sse.Client, resp *http.Response) error {
	if resp.StatusCode != http.StatusOK {
		defer resp.Body.Close()
		return readAPIError(resp)
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
	token       string
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
	setAuth(r.Header, t.token)
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

// reconnectBackoff is a capped exponential backoff that the loop resets
// after every good connection.
type reconnectBackoff struct {
	policy backoffPolicy
	cur    time.Duration
}

// next returns the delay before the next attempt: base, then doubling up
// to max. With jitter, a delay is drawn from [d/2, d].
func (b *reconnectBackoff) next() time.Duration {
	if b.cur == 0 {
		b.cur = b.policy.base
	} else {
		b.cur = min(b.cur*2, b.policy.max)
	}
	d := b.cur
	if b.policy.jitter && d > 1 {
		d = d/2 + rand.N(d/2+1)
	}
	return d
}

func (b *reconnectBackoff) reset() { b.cur = 0 }
