package webhooks

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

func endpointFor(t *testing.T, url string, edit func(*EndpointConfig)) *Endpoint {
	t.Helper()
	c := EndpointConfig{Name: "hook", URL: url, Secret: specSecret, Events: []string{EventMessage}}
	if edit != nil {
		edit(&c)
	}
	eps, err := Config{Endpoints: []EndpointConfig{c}}.Compile(env(nil))
	if err != nil {
		t.Fatal(err)
	}
	return eps[0]
}

func TestSendSignsWhatItSends(t *testing.T) {
	t.Parallel()
	got := make(chan error, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		ts := r.Header.Get(HeaderTimestamp)
		var err error
		switch {
		case r.Method != http.MethodPost || r.Header.Get("Content-Type") != "application/json":
			err = errors.New("not a JSON POST")
		case r.Header.Get("X-Workflow") != "orders" || r.Header.Get("User-Agent") != "herald-test":
			err = errors.New("headers missing")
		case r.Header.Get(HeaderID) != "evt_42" || ts != "1800000000":
			err = errors.New("id or timestamp wrong: " + r.Header.Get(HeaderID) + " " + ts)
		case r.Header.Get(HeaderSignature) != independentSignature(specSecret, "evt_42", 1_800_000_000, body):
			err = errors.New("the signature does not verify")
		}
		got <- err
		w.WriteHeader(http.StatusNoContent)
	}))
	defer srv.Close()
	ep := endpointFor(t, srv.URL, func(c *EndpointConfig) { c.Headers = map[string]string{"X-Workflow": "orders"} })
	s := NewSender(srv.Client(), "herald-test")
	a := s.Send(context.Background(), ep, "evt_42", time.Unix(1_800_000_000, 0), []byte(`{"type":"message"}`))
	if a.Outcome != Delivered || a.Status != http.StatusNoContent || a.Err != nil {
		t.Fatalf("attempt %+v", a)
	}
	if err := <-got; err != nil {
		t.Fatal(err)
	}
}

func TestSendClassifiesAnswers(t *testing.T) {
	t.Parallel()
	now := time.Now().Truncate(time.Second)
	cases := []struct {
		name       string
		status     int
		retryAfter string
		want       Outcome
		wantAfter  time.Duration
	}{
		{"ok", 200, "", Delivered, 0},
		{"unavailable, retry after seconds", 503, "7", Retry, 7 * time.Second},
		{"too many, retry after a date", 429, now.Add(90 * time.Second).UTC().Format(http.TimeFormat), Retry, 90 * time.Second},
		{"a server error", 500, "", Retry, 0},
		{"a refusal other than gone", 400, "", Retry, 0},
		{"gone", 410, "", Gone, 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if tc.retryAfter != "" {
					w.Header().Set("Retry-After", tc.retryAfter)
				}
				w.WriteHeader(tc.status)
			}))
			defer srv.Close()
			a := NewSender(srv.Client(), "t").Send(context.Background(), endpointFor(t, srv.URL, nil), "evt_1", now, []byte(`{}`))
			if a.Outcome != tc.want || a.Status != tc.status || a.RetryAfter != tc.wantAfter || (a.Err == nil) != (tc.want == Delivered) {
				t.Fatalf("attempt %+v (outcome %s), want %s, retry after %s", a, a.Outcome, tc.want, tc.wantAfter)
			}
		})
	}
}

func TestSendGivesUpOnASlowEndpointAtItsTimeout(t *testing.T) {
	t.Parallel()
	stop := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body) // then net/http notices the client leaving
		select {                           // never answers
		case <-r.Context().Done():
		case <-stop:
		}
	}))
	defer srv.Close()
	defer close(stop)
	ep := endpointFor(t, srv.URL, func(c *EndpointConfig) { c.Timeout = 50 * time.Millisecond })
	a := NewSender(srv.Client(), "t").Send(context.Background(), ep, "evt_1", time.Now(), []byte(`{}`))
	if a.Outcome != Retry || a.Status != 0 || !errors.Is(a.Err, context.DeadlineExceeded) {
		t.Fatalf("attempt %+v, want a retry after the deadline", a)
	}
}

func TestBreakerOpensAfterFailuresInARowAndClosesOnRecovery(t *testing.T) {
	t.Parallel()
	var hits atomic.Int64
	var healthy atomic.Bool
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		if !healthy.Load() {
			w.WriteHeader(http.StatusInternalServerError)
		}
	}))
	defer srv.Close()
	ep := endpointFor(t, srv.URL, nil)
	s := NewSender(srv.Client(), "t")
	s.breakerTimeout = 20 * time.Millisecond
	ctx := context.Background()
	for i := range BreakerFailures {
		if a := s.Send(ctx, ep, "evt_1", time.Now(), []byte(`{}`)); a.Outcome != Retry || a.Status != 500 {
			t.Fatalf("attempt %d: %+v", i+1, a)
		}
	}
	if got := s.BreakerState(ep.Name); got != "open" {
		t.Fatalf("breaker %s after %d failures, want open", got, BreakerFailures)
	}
	if a := s.Send(ctx, ep, "evt_1", time.Now(), []byte(`{}`)); !errors.Is(a.Err, ErrBreakerOpen) || hits.Load() != BreakerFailures {
		t.Fatalf("with the breaker open: %+v after %d requests, want no request", a, hits.Load())
	}
	// Another endpoint is not held back by this one's breaker.
	other := endpointFor(t, srv.URL, func(c *EndpointConfig) { c.Name = "other" })
	healthy.Store(true)
	if a := s.Send(ctx, other, "evt_2", time.Now(), []byte(`{}`)); a.Outcome != Delivered {
		t.Fatalf("another endpoint: %+v", a)
	}
	// Once the breaker's timeout has passed, a probe goes through and
	// closes it. (Waiting on the breaker's own clock.)
	deadline := time.Now().Add(10 * time.Second)
	for {
		a := s.Send(ctx, ep, "evt_1", time.Now(), []byte(`{}`))
		if a.Outcome == Delivered {
			break
		}
		if !errors.Is(a.Err, ErrBreakerOpen) || time.Now().After(deadline) {
			t.Fatalf("while recovering: %+v", a)
		}
		time.Sleep(5 * time.Millisecond)
	}
	if got := s.BreakerState(ep.Name); got != "closed" {
		t.Fatalf("breaker %s after a delivery, want closed", got)
	}
}

func TestNextDelay(t *testing.T) {
	t.Parallel()
	r := RetryConfig{Initial: time.Second, Max: 10 * time.Minute, For: 24 * time.Hour}
	cases := []struct {
		failures   int
		retryAfter time.Duration
		jitter     float64
		want       time.Duration
	}{
		{1, 0, 0, time.Second},
		{3, 0, 0, 4 * time.Second},
		{10, 0, 0, 512 * time.Second},
		{11, 0, 0, 10 * time.Minute}, // capped
		{400, 0, 0, 10 * time.Minute},
		{1, 0, 0.5, 750 * time.Millisecond},    // jittered down by a quarter
		{11, 0, 0.5, 450 * time.Second},        // the cap jittered too
		{1, time.Hour, 0, time.Hour},           // Retry-After asks for more
		{1, 48 * time.Hour, 0, 24 * time.Hour}, // but never past r.For
	}
	for _, tc := range cases {
		if got := NextDelay(r, tc.failures, tc.retryAfter, tc.jitter); got != tc.want {
			t.Errorf("NextDelay(failures %d, retry after %s, jitter %v) = %s, want %s", tc.failures, tc.retryAfter, tc.jitter, got, tc.want)
		}
	}
}

func TestRetryAfterIgnoresNonsense(t *testing.T) {
	t.Parallel()
	now := time.Now()
	for _, v := range []string{"", "0", "-3", "soon", now.Add(-time.Hour).UTC().Format(http.TimeFormat)} {
		if got := retryAfter(v, now); got != 0 {
			t.Errorf("Retry-After %q: %s, want 0", v, got)
		}
	}
	if got := retryAfter("999999999", now); got != DefaultRetryFor {
		t.Errorf("a huge Retry-After: %s, want it capped at %s", got, DefaultRetryFor)
	}
	if strings.Contains(Outcome(9).String(), "9") == false {
		t.Error("an unknown outcome does not print its number")
	}
}
