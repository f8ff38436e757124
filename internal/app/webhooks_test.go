package app

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/heraldrt/herald/server"
	"github.com/heraldrt/herald/store"
	"github.com/heraldrt/herald/webhooks"
)

const testSecret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"

// hookReceiver counts the events it is sent, refusing them with a 503
// while refuse is set.
type hookReceiver struct {
	srv    *httptest.Server
	refuse atomic.Bool
	mu     sync.Mutex
	ids    map[string]int
	got    chan struct{} // signalled on every accepted request
}

func newHookReceiver(t testing.TB) *hookReceiver {
	r := &hookReceiver{ids: map[string]int{}, got: make(chan struct{}, 1)}
	keys := []webhooks.Secret{mustSecret(t)}
	r.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		body, _ := io.ReadAll(req.Body)
		if r.refuse.Load() {
			http.Error(w, "not now", http.StatusServiceUnavailable)
			return
		}
		if err := webhooks.Verify(req.Header, body, keys, time.Now(), webhooks.DefaultTolerance); err != nil {
			http.Error(w, err.Error(), http.StatusUnauthorized)
			return
		}
		var evs []struct {
			ID string `json:"id"`
		}
		if len(body) > 0 && body[0] != '[' {
			body = append(append([]byte{'['}, body...), ']')
		}
		if err := json.Unmarshal(body, &evs); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		r.mu.Lock()
		for _, ev := range evs {
			r.ids[ev.ID]++
		}
		r.mu.Unlock()
		select {
		case r.got <- struct{}{}:
		default:
		}
	}))
	t.Cleanup(r.srv.Close)
	return r
}

func (r *hookReceiver) count() (distinct, total int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, n := range r.ids {
		total += n
	}
	return len(r.ids), total
}

// wait returns once the receiver holds n distinct events, or fails t
// after the deadline.
func (r *hookReceiver) wait(t testing.TB, n int, within time.Duration) {
	t.Helper()
	deadline := time.After(within)
	for {
		if d, _ := r.count(); d >= n {
			return
		}
		select {
		case <-r.got:
		case <-time.After(100 * time.Millisecond): // a request accepted between count and select
		case <-deadline:
			d, _ := r.count()
			t.Fatalf("the receiver holds %d of %d events after %s", d, n, within)
		}
	}
}

func mustSecret(t testing.TB) webhooks.Secret {
	s, err := webhooks.ParseSecret(testSecret)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func hookConfig(url string, batch int) webhooks.EndpointConfig {
	return webhooks.EndpointConfig{Name: "hook", URL: url, Secret: testSecret, Events: []string{webhooks.EventMessage},
		Batch:   webhooks.BatchConfig{Size: batch, Timeout: 20 * time.Millisecond},
		Retry:   webhooks.RetryConfig{Initial: 20 * time.Millisecond, Max: 100 * time.Millisecond},
		Breaker: webhooks.BreakerConfig{Timeout: time.Second}}
}

func publishN(t testing.TB, a *App, channel string, n int) {
	t.Helper()
	system := server.Identity{System: true}
	for from := 0; from < n; from += 1000 {
		reqs := make([]server.PublishRequest, 0, 1000)
		for i := from; i < min(from+1000, n); i++ {
			reqs = append(reqs, server.PublishRequest{Channel: channel, Data: json.RawMessage(fmt.Sprintf(`{"i":%d}`, i))})
		}
		out, err := a.Server().PublishBatch(context.Background(), system, reqs)
		if err != nil {
			t.Fatal(err)
		}
		for _, o := range out {
			if o.Err != nil {
				t.Fatal(o.Err)
			}
		}
	}
}

// TestWebhooksRunOnTheStoresOutbox: a configured endpoint gets the
// messages published, through the Badger store's outbox, signed; the API
// lists it with an empty outbox and /metrics shows its deliveries; events
// queued while it refused arrive once it accepts, and survive a restart
// of the App in between.
func TestWebhooksRunOnTheStoresOutbox(t *testing.T) {
	t.Parallel()
	rcv := newHookReceiver(t)
	cfg := testConfig()
	cfg.Store.InMemory, cfg.Store.Dir = false, t.TempDir()
	cfg.Webhooks.Endpoints = []webhooks.EndpointConfig{hookConfig(rcv.srv.URL, 10)}
	a, err := New(cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	publishN(t, a, "orders_1", 25)
	rcv.wait(t, 25, 30*time.Second)
	waitEmptyOutbox(t, a) // a delivery is removed once its answer is in
	code, body := apiRequest(t, http.MethodGet, "http://"+a.Addr()+"/api/webhooks", "")
	if code != http.StatusOK || !strings.Contains(body, `"name":"hook"`) || !strings.Contains(body, `"depth":0`) {
		t.Fatalf("GET /api/webhooks: %d %s", code, body)
	}
	code, body = apiRequest(t, http.MethodGet, "http://"+a.Addr()+"/metrics", "")
	if code != http.StatusOK || !strings.Contains(body, `herald_webhook_deliveries_total{endpoint="hook",result="delivered"}`) {
		t.Fatalf("GET /metrics: %d, no webhook deliveries in it", code)
	}

	// Refused, then the App stops: the events wait on disk.
	rcv.refuse.Store(true)
	publishN(t, a, "orders_1", 15)
	if err := a.Shutdown(); err != nil {
		t.Fatal(err)
	}
	rcv.refuse.Store(false)
	if a, err = New(cfg, slog.New(slog.DiscardHandler)); err != nil {
		t.Fatal(err)
	}
	defer a.Shutdown()
	rcv.wait(t, 40, 30*time.Second)
	if d, total := rcv.count(); d != 40 {
		t.Fatalf("%d distinct events (%d with repeats), want 40", d, total)
	}
}

// BenchmarkWebhookDrain measures how fast an endpoint's queue drains:
// b.N messages are queued while the receiver refuses, then it accepts,
// and the time until it holds all of them is measured (events/s).
func BenchmarkWebhookDrain(b *testing.B) {
	for _, batch := range []int{1, 100} {
		b.Run(fmt.Sprintf("batch=%d", batch), func(b *testing.B) {
			rcv := newHookReceiver(b)
			rcv.refuse.Store(true)
			cfg := testConfig()
			cfg.Store.InMemory, cfg.Store.Dir = false, b.TempDir()
			cfg.Webhooks.Endpoints = []webhooks.EndpointConfig{hookConfig(rcv.srv.URL, batch)}
			a, err := New(cfg, slog.New(slog.DiscardHandler))
			if err != nil {
				b.Fatal(err)
			}
			defer a.Shutdown()
			publishN(b, a, "orders_1", b.N)
			b.ResetTimer()
			start := time.Now()
			rcv.refuse.Store(false)
			rcv.wait(b, b.N, 5*time.Minute)
			b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "events/s")
		})
	}
}

// TestWebhooksOutliveTheChannelsRetention: a channel keeps 2 messages;
// 20 are published while the endpoint refuses and the trimmer runs: the
// log keeps them, each reaches the endpoint (a message whose payload were
// gone could not be sent, and would become a dead letter), and once they
// are delivered the log is trimmed to its 2.
func TestWebhooksOutliveTheChannelsRetention(t *testing.T) {
	t.Parallel()
	rcv := newHookReceiver(t)
	rcv.refuse.Store(true)
	cfg := testConfig()
	cfg.Store.InMemory, cfg.Store.Dir = false, t.TempDir()
	cfg.Webhooks.Endpoints = []webhooks.EndpointConfig{hookConfig(rcv.srv.URL, 1)}
	a, err := New(cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer a.Shutdown()
	publishN(t, a, "orders_1", 20)
	keep := store.Retention{MaxCount: 2}
	if _, err := a.badger.Trim(context.Background(), "orders_1", keep); err != nil {
		t.Fatal(err)
	}
	if p, err := a.badger.Read(context.Background(), "orders_1", 0, 0); err != nil || p.First != 1 {
		t.Fatalf("the log kept from %d (%v) while all 20 wait for the endpoint, want 1", p.First, err)
	}
	rcv.refuse.Store(false)
	rcv.wait(t, 20, 30*time.Second)
	if d, total := rcv.count(); d != 20 || total != 20 {
		t.Fatalf("%d distinct events, %d in all: want 20 once", d, total)
	}
	waitEmptyOutbox(t, a)
	if _, err := a.badger.Trim(context.Background(), "orders_1", keep); err != nil {
		t.Fatal(err)
	}
	if p, err := a.badger.Read(context.Background(), "orders_1", 0, 0); err != nil || p.First != 19 {
		t.Fatalf("after delivery the log kept from %d (%v), want 19", p.First, err)
	}
}

// waitEmptyOutbox waits until the endpoint "hook" has nothing queued: a
// delivered event leaves the outbox just after the receiver has it.
func waitEmptyOutbox(t testing.TB, a *App) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		depth, _, err := a.badger.OutboxDepth("hook")
		if err == nil && depth == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the outbox still holds %d events (%v)", depth, err)
		}
		time.Sleep(5 * time.Millisecond) // polled: the store has no event for this
	}
}
