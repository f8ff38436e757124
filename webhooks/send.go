package webhooks

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/sony/gobreaker/v2"
)

// Outcome is how one delivery attempt ended.
type Outcome int

const (
	// Delivered: the endpoint answered 2xx.
	Delivered Outcome = iota
	// Retry: the request failed (no answer, a timeout, a status other
	// than 2xx and 410) or the breaker is open: try again later.
	Retry
	// Gone: the endpoint answered 410 Gone; it wants no more events and
	// is disabled until an operator enables it again.
	Gone
)

func (o Outcome) String() string {
	switch o {
	case Delivered:
		return "delivered"
	case Retry:
		return "retry"
	case Gone:
		return "gone"
	}
	return "outcome(" + strconv.Itoa(int(o)) + ")"
}

// Attempt is the result of one delivery attempt.
type Attempt struct {
	Outcome Outcome
	// Status is the HTTP status, 0 when there was no answer.
	Status int
	// RetryAfter is what the endpoint's Retry-After asked for (0: nothing).
	RetryAfter time.Duration
	// Err says what went wrong; nil when delivered.
	Err error
}

// ErrBreakerOpen is the error of an attempt not made because the
// endpoint's breaker is open: it failed too often in a row, and is
// probed again after BreakerTimeout.
var ErrBreakerOpen = errors.New("webhooks: the endpoint's breaker is open")

const (
	// BreakerFailures is how many failed attempts in a row open an
	// endpoint's breaker, unless its breaker.failures says otherwise.
	BreakerFailures = 5
	// BreakerTimeout is how long a breaker stays open before one probe
	// (half-open) may go through, unless its breaker.timeout says
	// otherwise.
	BreakerTimeout = 30 * time.Second
	// maxAnswerBytes is how much of an answer's body is read (and
	// dropped), so that the connection can be reused.
	maxAnswerBytes = 64 << 10
)

// Sender makes signed delivery attempts, through one breaker per endpoint.
// It is safe for concurrent use.
type Sender struct {
	client         *http.Client
	userAgent      string
	breakerTimeout time.Duration

	mu       sync.Mutex
	breakers map[string]*gobreaker.CircuitBreaker[Attempt]
}

// NewSender returns a Sender using client (its own timeouts apply on top
// of each endpoint's), sending userAgent.
func NewSender(client *http.Client, userAgent string) *Sender {
	return &Sender{client: client, userAgent: userAgent,
		breakers: map[string]*gobreaker.CircuitBreaker[Attempt]{}}
}

// breaker returns ep's breaker, made on first use with ep's settings (or
// the Sender's timeout, when set: tests).
func (s *Sender) breaker(ep *Endpoint) *gobreaker.CircuitBreaker[Attempt] {
	s.mu.Lock()
	defer s.mu.Unlock()
	b, ok := s.breakers[ep.Name]
	if !ok {
		timeout, failures := ep.Breaker.Timeout, uint32(max(ep.Breaker.Failures, 1))
		if s.breakerTimeout > 0 {
			timeout = s.breakerTimeout
		}
		if timeout <= 0 {
			timeout = BreakerTimeout
		}
		b = gobreaker.NewCircuitBreaker[Attempt](gobreaker.Settings{
			Name:        ep.Name,
			Timeout:     timeout,
			ReadyToTrip: func(c gobreaker.Counts) bool { return c.ConsecutiveFailures >= failures },
		})
		s.breakers[ep.Name] = b
	}
	return b
}

// BreakerState returns the state of an endpoint's breaker: closed,
// half-open or open (closed before its first request).
func (s *Sender) BreakerState(endpoint string) string {
	s.mu.Lock()
	b, ok := s.breakers[endpoint]
	s.mu.Unlock()
	if !ok {
		return gobreaker.StateClosed.String()
	}
	return b.State().String()
}

// Send POSTs body to ep, signed with id and now, and says how it went. A
// 410 counts as a success for the breaker: the endpoint answered.
func (s *Sender) Send(ctx context.Context, ep *Endpoint, id string, now time.Time, body []byte) Attempt {
	a, err := s.breaker(ep).Execute(func() (Attempt, error) {
		a := s.post(ctx, ep, id, now, body)
		if a.Outcome == Retry {
			return a, a.Err
		}
		return a, nil
	})
	if errors.Is(err, gobreaker.ErrOpenState) || errors.Is(err, gobreaker.ErrTooManyRequests) {
		return Attempt{Outcome: Retry, Err: ErrBreakerOpen}
	}
	return a
}

func (s *Sender) post(ctx context.Context, ep *Endpoint, id string, now time.Time, body []byte) Attempt {
	ctx, cancel := context.WithTimeout(ctx, ep.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, ep.URLParsed.String(), bytes.NewReader(body))
	if err != nil {
		return Attempt{Outcome: Retry, Err: fmt.Errorf("webhooks: %s: %w", ep.Name, err)}
	}
	for k, v := range ep.Headers {
		req.Header.Set(k, v)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", s.userAgent)
	Sign(req.Header, ep.Keys, id, now, body)
	resp, err := s.client.Do(req)
	if err != nil {
		return Attempt{Outcome: Retry, Err: fmt.Errorf("webhooks: %s: %w", ep.Name, err)}
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, maxAnswerBytes))
	_ = resp.Body.Close()
	a := Attempt{Status: resp.StatusCode}
	switch {
	case resp.StatusCode >= 200 && resp.StatusCode < 300:
		a.Outcome = Delivered
	case resp.StatusCode == http.StatusGone:
		a.Outcome = Gone
		a.Err = fmt.Errorf("webhooks: %s answered 410 Gone: it wants no more events", ep.Name)
	default:
		a.Outcome = Retry
		a.RetryAfter = retryAfter(resp.Header.Get("Retry-After"), now)
		a.Err = fmt.Errorf("webhooks: %s answered %d", ep.Name, resp.StatusCode)
	}
	return a
}

// retryAfter reads a Retry-After header: seconds, or an HTTP date
// (relative to now). It returns 0 for none or nonsense.
func retryAfter(v string, now time.Time) time.Duration {
	if v == "" {
		return 0
	}
	if secs, err := strconv.ParseInt(v, 10, 64); err == nil {
		if secs <= 0 {
			return 0
		}
		return time.Duration(min(secs, int64(DefaultRetryFor/time.Second))) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil && t.After(now) {
		return t.Sub(now)
	}
	return 0
}

// NextDelay is how long to wait after the failures-th failed attempt (1
// for the first): Initial doubled per failure up to Max, then jittered
// down by up to half (jitter in [0,1), e.g. rand.Float64()) so endpoints
// recovering together are not hit together; at least what the endpoint's
// Retry-After asked for, but never beyond r.For.
func NextDelay(r RetryConfig, failures int, retryAfter time.Duration, jitter float64) time.Duration {
	d := r.Initial
	for i := 1; i < failures && d < r.Max; i++ {
		d *= 2
	}
	d = min(d, r.Max)
	d -= time.Duration(float64(d) / 2 * jitter)
	return min(max(d, retryAfter), r.For)
}
