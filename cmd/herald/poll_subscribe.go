package main

// `herald subscribe --transport poll`: long polls on /poll, under the
// same reconnect loop, tracker and output as SSE and WebSocket
// (subscribe.go, subscribe_tracker.go).
//
// One attempt is a run of polls, each sent as soon as the previous answer
// is printed, until one fails. Every poll carries the cursor and session
// of the last answer taken (DESIGN §3): the cursor is the same opaque
// format as an SSE event id, so --cursor seeds the first poll exactly as
// it seeds Last-Event-ID, and until there is a cursor the tracked
// per-channel positions (at first --since/--epoch) go as since/epoch. A
// poll without either starts at the channels' heads. Every envelope of an
// answer goes through the tracker in order; the answer's cursor is taken
// only once all of it was accepted. On a gap or an epoch change without
// herald.reset the answer is abandoned and the next poll goes out with the
// previous cursor (and the same session, which the server then rebuilds
// from that cursor), so what was printed comes back as replays, which the
// tracker drops.
//
// A poll is GET /poll with the channels in the query, or POST /poll with
// a JSON body when there are many channels (or a long cursor), so the URL
// stays short. The server holds a poll up to --poll-timeout seconds; the
// HTTP client gives up pollSlack later, so a cut network shows up as an
// error instead of a hang (the stall timeout of SSE and WebSocket has no
// use here). A 4xx answer other than 408 and 429 stops the command with
// the server's message; 408, 429, 5xx, network errors and an answer that
// is not a poll answer (a proxy's HTML page) are retried by the loop, with
// its backoff and the server's Retry-After.

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
)

const (
	// defaultPollWait is --poll-timeout's default: the server's default
	// wait, in seconds.
	defaultPollWait = 25
	// pollSlack is how much longer than --poll-timeout a poll may take,
	// answer included, before it is given up as lost.
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

// poller runs the long polls of one `herald subscribe --transport poll`.
type poller struct {
	s      *subscriber
	client *http.Client
	wait   int // --poll-timeout, seconds
}

func newPoller(s *subscriber) *poller {
	tr := s.opts.transport
	if tr == nil {
		// No ResponseHeaderTimeout: the headers of a poll come after
		// the wait. The client's Timeout bounds the whole exchange.
		tr = http.DefaultTransport.(*http.Transport).Clone()
	}
	return &poller{
		s:      s,
		client: &http.Client{Transport: tr, Timeout: pollHTTPTimeout(s.opts.pollWait)},
		wait:   s.opts.pollWait,
	}
}

// pollHTTPTimeout is the HTTP client's bound on one poll: the server's
// wait plus pollSlack.
func pollHTTPTimeout(wait int) time.Duration {
	return time.Duration(wait)*time.Second + pollSlack
}

// pollAnswer is a 200 answer of /poll.
type pollAnswer struct {
	Messages *[]json.RawMessage `json:"messages"`
	Cursor   *string            `json:"cursor"`
	Session  string             `json:"session"`
}

// pollBody is the JSON body of POST /poll.
type pollBody struct {
	Channels []string `json:"channels"`
	Cursor   string   `json:"cursor,omitempty"`
	Session  string   `json:"session,omitempty"`
	Timeout  int      `json:"timeout"`
	Since    []string `json:"since,omitempty"`
	Epoch    []string `json:"epoch,omitempty"`
}

// notPollAnswerError is a 200 answer that is not a poll answer: a proxy's
// page, or --server pointing at something else. It is retried.
type notPollAnswerError struct {
	contentType string
	why         string
	body        string
}

func (e *notPollAnswerError) Error() string {
	return fmt.Sprintf("the poll answer is not Herald JSON (%s; Content-Type %q: %q): a proxy's error page, or --server is not a Herald server",
		e.why, e.contentType, e.body)
}

// pollTimeoutError is a poll that got no answer within the HTTP client's
// bound.
type pollTimeoutError struct {
	d   time.Duration
	err error
}

func (e *pollTimeoutError) Error() string {
	return fmt.Sprintf("no answer to the poll within %s (--poll-timeout + %s): the network is slow or cut: %v", e.d, pollSlack, e.err)
}

func (e *pollTimeoutError) Unwrap() error { return e.err }

// attempt polls until a poll fails, --max is reached or ctx is done.
func (p *poller) attempt(ctx context.Context) (r attemptResult) {
	s := p.s
	// quick backs off from a server (or a proxy) that answers every
	// poll at once with nothing, so the loop cannot spin.
	quick := reconnectBackoff{policy: s.opts.backoff}
	for {
		start := time.Now()
		ans, method, err := p.poll(ctx)
		if err != nil {
			r.err = err
			var ae *apiError
			switch {
			case ctx.Err() != nil:
				r.err = ctx.Err()
				return r
			case errors.As(err, &ae):
				r.fatal, r.retryAfter = !ae.retryable(), ae.RetryAfter
			case errors.Is(err, errPollAnswerTooLarge):
				r.fatal = true
			}
			// The loop logs a failed attempt, but only with --verbose
			// after polls that worked; a failed poll is worth a line.
			if r.connected && !r.fatal {
				s.logf("poll failed: %v", err)
			}
			return r
		}
		if !r.connected {
			s.debugf("polling: session %s (%s /poll, --poll-timeout %ds)", ans.Session, method, p.wait)
		} else if ans.Session != s.t.session {
			s.debugf("poll session %s replaced by %s", s.t.session, ans.Session)
		}
		r.connected = true
		msgs := *ans.Messages
		for i, m := range msgs {
			if !s.deliver(s.t.message(m, false), &r) {
				continue
			}
			switch {
			case !r.done:
				// Broken: the next poll goes out with the previous
				// cursor. Or fatal (output cannot be written).
				return r
			case i < len(msgs)-1:
				// --max inside the answer: its cursor would skip what
				// was not printed. The positions say exactly where this
				// run stopped, and the exit log gives them when all are
				// known (else the previous cursor, which replays some).
				if p.allKnown() {
					s.t.cursor = ""
				}
				return r
			}
		}
		s.t.cursor, s.t.session = *ans.Cursor, ans.Session
		if r.done {
			return r
		}
		if len(msgs) == 0 && time.Since(start) < time.Duration(p.wait)*time.Second/2 {
			if !sleepOrDone(ctx, quick.next()) {
				r.err = ctx.Err()
				return r
			}
		} else {
			quick.reset()
		}
	}
}

// allKnown reports whether the tracker knows every channel's position.
func (p *poller) allKnown() bool {
	for _, ch := range p.s.t.channels {
		if _, _, ok := p.s.t.resumeFrom(ch); !ok {
			return false
		}
	}
	return true
}

var errPollAnswerTooLarge = fmt.Errorf("a poll answer is over %d bytes", maxPollAnswer)

// poll sends one poll and reads its answer. It returns an *apiError for a
// non-200 answer.
func (p *poller) poll(ctx context.Context) (pollAnswer, string, error) {
	req, err := p.request(ctx)
	if err != nil {
		return pollAnswer{}, "", err
	}
	resp, err := p.client.Do(req)
	if err != nil {
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() && ctx.Err() == nil {
			err = &pollTimeoutError{d: p.client.Timeout, err: err}
		}
		return pollAnswer{}, req.Method, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return pollAnswer{}, req.Method, readPollError(resp)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxPollAnswer+1))
	if err != nil {
		return pollAnswer{}, req.Method, fmt.Errorf("reading the poll answer: %w", err)
	}
	if len(body) > maxPollAnswer {
		return pollAnswer{}, req.Method, errPollAnswerTooLarge
	}
	var ans pollAnswer
	bad := func(why string) error {
		return &notPollAnswerError{contentType: resp.Header.Get("Content-Type"), why: why, body: bodySnippet(body)}
	}
	if err := json.Unmarshal(body, &ans); err != nil {
		return pollAnswer{}, req.Method, bad("not JSON")
	}
	if ans.Messages == nil || ans.Cursor == nil {
		return pollAnswer{}, req.Method, bad(`no "messages" or no "cursor"`)
	}
	return ans, req.Method, nil
}

// request builds the next poll from the tracker: GET with a query, or
// POST with a JSON body when the query would be long.
func (p *poller) request(ctx context.Context) (*http.Request, error) {
	t := p.s.t
	b := pollBody{Channels: t.channels, Cursor: t.cursor, Session: t.session, Timeout: p.wait}
	if t.cursor == "" {
		b.Since, b.Epoch = t.pollPositions()
	}
	u := apiEndpoint(p.s.opts.base, "poll")
	q := url.Values{"channel": b.Channels, "timeout": {strconv.Itoa(b.Timeout)}}
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
	setAuth(req.Header, p.s.opts.token)
	return req, nil
}

// pollPositions are the since and epoch lists of a poll without a cursor:
// each channel's tracked position ("" = from its head), the epochs only
// when one is known; nil when no position is known.
func (t *tracker) pollPositions() (since, epochs []string) {
	known, anyEpoch := false, false
	for _, ch := range t.channels {
		off, epoch, ok := t.resumeFrom(ch)
		s := ""
		if ok {
			known, s = true, strconv.FormatUint(off, 10)
		}
		anyEpoch = anyEpoch || epoch != ""
		since, epochs = append(since, s), append(epochs, epoch)
	}
	if !known {
		return nil, nil
	}
	if !anyEpoch {
		epochs = nil
	}
	return since, epochs
}

// readPollError reads a non-200 answer into an *apiError, saying so when
// the body is not JSON (a proxy's page rather than the server's error).
func readPollError(resp *http.Response) *apiError {
	body, _ := io.ReadAll(io.LimitReader(resp.Body, maxErrorBody))
	replay := *resp
	replay.Body = io.NopCloser(bytes.NewReader(body))
	ae := readAPIError(&replay)
	if len(bytes.TrimSpace(body)) > 0 && !json.Valid(body) {
		ct := resp.Header.Get("Content-Type")
		if mt, _, err := mime.ParseMediaType(ct); err == nil {
			ct = mt
		}
		ae.Msg = fmt.Sprintf("not a Herald JSON error (Content-Type %q, a proxy's page?): %s", ct, strings.TrimSpace(ae.Msg))
	}
	return ae
}
