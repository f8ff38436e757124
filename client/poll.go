package client

// The long-poll subscriber: polls on /poll, under the same reconnect loop
// and tracker as SSE and WebSocket.
//
// One attempt is a run of polls, each sent as soon as the previous answer
// is handed out, until one fails. Every poll carries the cursor and
// session of the last answer taken (PROTOCOL.md, "Long polling"): the
// cursor is the same opaque format as an SSE event id, so a Cursor option
// seeds the first poll exactly as it seeds Last-Event-ID, and until there
// is a cursor the tracked per-channel positions go as since/epoch. A poll
// without either starts at the channels' heads. The subscription's first
// poll asks the server not to wait (timeout 0), so Subscribe returns with
// the session placed; the others wait up to PollTimeout. Every envelope of
// an answer goes through the tracker in order; the answer's cursor is
// taken only once all of it was handed out, or when it ends with the
// server's herald.disconnect, which ends the attempt (reconnect: true
// polls again; false ends the subscription with ErrDisconnected). On a gap
// or an epoch change without herald.reset the answer is abandoned and the
// next poll goes out with the previous cursor (and the same session, which
// the server then rebuilds from that cursor), so what was handed out comes
// back as replays, which the tracker drops.
//
// A poll is GET /poll with the channels in the query, or POST /poll with
// a JSON body when there are many channels (or a long cursor), so the URL
// stays short. The HTTP client gives up pollSlack after the poll's wait,
// so a cut network shows up as an error instead of a hang (the stall
// timeout of SSE and WebSocket has no use here). A 4xx answer other than
// 408 and 429 ends the subscription with the server's message; 408, 429,
// 5xx, network errors and an answer that is not a poll answer (a proxy's
// HTML page) are retried by the loop, with its backoff and the server's
// Retry-After.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/heraldrt/herald/protocol"
)

const (
	// pollSlack is how much longer than its wait a poll may take, answer
	// included, before it is given up as lost.
	pollSlack = 15 * time.Second
	// pollGETMaxChannels is the most channels a poll sends in a GET query;
	// more go in a POST body.
	pollGETMaxChannels = 20
	// pollGETMaxQuery is the longest query a poll sends by GET.
	pollGETMaxQuery = 2048
	// maxPollAnswer bounds the body of one poll answer (the server sends
	// at most 1000 messages by default).
	maxPollAnswer = 512 << 20
)

// poller runs the long polls of one subscription.
type poller struct {
	s      *Subscription
	client *http.Client
	wait   int  // PollTimeout, seconds
	polled bool // the subscription's first poll was sent
}

func newPoller(s *Subscription) *poller {
	return &poller{
		s:      s,
		client: &http.Client{Transport: s.c.pollRT, Timeout: pollHTTPTimeout(s.opts.PollTimeout)},
		wait:   int(s.opts.PollTimeout / time.Second),
	}
}

// pollHTTPTimeout is how long a long-poll subscription waits for the
// answer to one poll whose wait is pollTimeout: pollSlack more, after
// which the poll counts as lost and is sent again.
func pollHTTPTimeout(pollTimeout time.Duration) time.Duration {
	return pollTimeout + pollSlack
}

// notPollAnswerError is a 200 answer that is not a poll answer: a proxy's
// page, or a URL pointing at something else. It is retried.
type notPollAnswerError struct {
	contentType string
	why         string
	body        string
}

func (e *notPollAnswerError) Error() string {
	return fmt.Sprintf("the poll answer is not Herald JSON (%s; Content-Type %q: %q): a proxy's error page, or the URL is not a Herald server",
		e.why, e.contentType, e.body)
}

// pollTimeoutError is a poll that got no answer within the HTTP client's
// bound.
type pollTimeoutError struct {
	d   time.Duration
	err error
}

func (e *pollTimeoutError) Error() string {
	return fmt.Sprintf("no answer to the poll within %s (poll timeout + %s): the network is slow or cut: %v", e.d, pollSlack, e.err)
}

func (e *pollTimeoutError) Unwrap() error { return e.err }

// attempt polls until a poll fails or ctx is done.
func (p *poller) attempt(ctx context.Context) (r attemptResult) {
	s, t := p.s, p.s.t
	// quick backs off from a server (or a proxy) that answers every
	// poll at once with nothing, so the loop cannot spin.
	quick := backoff{min: s.opts.RetryMin, max: s.opts.RetryMax, jitter: true}
	for {
		wait := p.wait
		if !p.polled {
			wait = 0
		}
		start := time.Now()
		ans, method, err := p.poll(ctx, wait)
		if err != nil {
			r.err = err
			var ae *APIError
			switch {
			case ctx.Err() != nil:
				r.err = ctx.Err()
				return r
			case errors.As(err, &ae):
				r.fatal, r.retryAfter = !ae.Retryable(), ae.RetryAfter
				if r.fatal {
					r.err = refused(err)
				}
			case errors.Is(err, errPollAnswerTooLarge):
				r.fatal = true
			}
			// The loop logs a failed attempt, but only at Debug after
			// polls that worked; a failed poll is worth a Warn.
			if r.connected && !r.fatal {
				s.log.Warn("poll failed", "err", err)
			}
			return r
		}
		p.polled = true
		if !r.connected {
			s.log.Debug("polling", "session", ans.Session, "method", method, "poll_timeout", p.wait)
		} else if ans.Session != t.session {
			s.log.Debug("poll session replaced", "old", t.session, "new", ans.Session)
		}
		r.connected = true
		t.inAnswer, t.answerCursor = true, ans.Cursor
		for i, m := range ans.Messages {
			t.lastInAnswer = i == len(ans.Messages)-1
			o := t.message(m, false)
			if o.verdict == verdictDisconnect {
				// The server ended the session; it comes last, after
				// everything the answer's cursor covers.
				t.cursor, t.session = ans.Cursor, ans.Session
			}
			if s.deliver(ctx, o, &r) {
				// Broken: the next poll goes out with the previous
				// cursor. Or the subscription is closing.
				t.inAnswer, t.lastInAnswer = false, false
				return r
			}
		}
		t.inAnswer, t.lastInAnswer = false, false
		if len(ans.Messages) == 0 && t.cursor != "" && ans.Cursor != t.cursor {
			// Nothing, and yet the cursor moved: the server passed over
			// messages excluded for this session.
			t.passOver()
			s.log.Debug("passed over messages excluded for this session", "cursor", ans.Cursor)
		}
		t.cursor, t.session = ans.Cursor, ans.Session
		s.moved()
		// Ready once the answer's session is known (Subscription.Session);
		// an answer with messages made it ready as it handed the first out.
		s.markReady()
		if wait > 0 && len(ans.Messages) == 0 && time.Since(start) < time.Duration(wait)*time.Second/2 {
			if !sleepOrDone(ctx, quick.next()) {
				r.err = ctx.Err()
				return r
			}
		} else {
			quick.reset()
		}
	}
}

var errPollAnswerTooLarge = fmt.Errorf("a poll answer is over %d bytes", maxPollAnswer)

// poll sends one poll and reads its answer. It returns an *APIError for a
// non-200 answer.
func (p *poller) poll(ctx context.Context, wait int) (protocol.PollAnswer, string, error) {
	req, err := p.request(ctx, wait)
	if err != nil {
		return protocol.PollAnswer{}, "", err
	}
	resp, err := p.client.Do(req)
	if err != nil {
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() && ctx.Err() == nil {
			err = &pollTimeoutError{d: p.client.Timeout, err: err}
		}
		return protocol.PollAnswer{}, req.Method, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return protocol.PollAnswer{}, req.Method, readPollError(resp)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxPollAnswer+1))
	if err != nil {
		return protocol.PollAnswer{}, req.Method, fmt.Errorf("reading the poll answer: %w", err)
	}
	if len(body) > maxPollAnswer {
		return protocol.PollAnswer{}, req.Method, errPollAnswerTooLarge
	}
	bad := func(why string) error {
		return &notPollAnswerError{contentType: resp.Header.Get("Content-Type"), why: why, body: bodySnippet(body)}
	}
	// Both fields must be there: a JSON answer without them is not
	// Herald's.
	var ans struct {
		protocol.PollAnswer
		Messages *[]json.RawMessage `json:"messages"`
		Cursor   *string            `json:"cursor"`
	}
	if err := json.Unmarshal(body, &ans); err != nil {
		return protocol.PollAnswer{}, req.Method, bad("not JSON")
	}
	if ans.Messages == nil || ans.Cursor == nil {
		return protocol.PollAnswer{}, req.Method, bad(`no "messages" or no "cursor"`)
	}
	return protocol.PollAnswer{Messages: *ans.Messages, Cursor: *ans.Cursor, Session: ans.Session}, req.Method, nil
}

// request builds the next poll from the tracker: GET with a query, or
// POST with a JSON body when the query would be long.
func (p *poller) request(ctx context.Context, wait int) (*http.Request, error) {
	t := p.s.t
	b := protocol.PollRequest{Channels: t.channels, Cursor: t.cursor, Session: t.session, Timeout: &wait}
	if t.cursor == "" {
		b.Since, b.Epoch = t.positionLists()
	}
	u := p.s.c.URL("poll")
	q := url.Values{"channel": b.Channels, "timeout": {strconv.Itoa(wait)}}
	if b.Cursor != "" {
		q.Set("cursor", b.Cursor)
	}
	if b.Session != "" {
		q.Set("session", b.Session)
	}
	if b.Since != nil {
		q["since"] = b.Since
	}
	if b.Epoch != nil {
		q["epoch"] = b.Epoch
	}
	var req *http.Request
	var err error
	if raw := q.Encode(); len(b.Channels) <= pollGETMaxChannels && len(raw) <= pollGETMaxQuery {
		u.RawQuery = raw
		req, err = http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	} else {
		var body []byte
		if body, err = json.Marshal(b); err != nil {
			return nil, err
		}
		req, err = http.NewRequestWithContext(ctx, http.MethodPost, u.String(), bytes.NewReader(body))
		if err == nil {
			req.Header.Set("Content-Type", "application/json")
			// A poll is idempotent (the cursor says what the client
			// has): let the transport retry it on a stale keep-alive
			// connection, as it does a GET. A nil value is not sent.
			req.Header["Idempotency-Key"] = nil
		}
	}
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", "application/json")
	p.s.c.setAuth(req.Header)
	return req, nil
}

// readPollError reads a non-200 answer into an *APIError, saying so when
// the body is not JSON (a proxy's page rather than the server's error).
func readPollError(resp *http.Response) *APIError {
	body, _ := io.ReadAll(io.LimitReader(resp.Body, maxErrorBody))
	replay := *resp
	replay.Body = io.NopCloser(bytes.NewReader(body))
	ae := ErrorFromResponse(&replay)
	if len(bytes.TrimSpace(body)) > 0 && !json.Valid(body) {
		ct := resp.Header.Get("Content-Type")
		if mt, _, err := mime.ParseMediaType(ct); err == nil {
			ct = mt
		}
		ae.Message = fmt.Sprintf("not a Herald JSON error (Content-Type %q, a proxy's page?): %s", ct, strings.TrimSpace(ae.Message))
	}
	return ae
}
