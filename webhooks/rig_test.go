package webhooks

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/heraldrt/herald/server"
	"github.com/heraldrt/herald/store"
)

const (
	testAPIKey    = "webhooks-test-api-key-0123"
	testJWTSecret = "webhooks-test-jwt-secret-0123456789abcdef"
	// waitLimit bounds every wait for something the Service does.
	waitLimit = 10 * time.Second
)

// fakeClock is the Service's clock: it moves only when the test says.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newFakeClock() *fakeClock { return &fakeClock{t: time.Date(2026, 12, 5, 9, 0, 0, 0, time.UTC)} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
	return c.t
}

// waitFor polls cond until it holds; the test fails, naming what, after
// waitLimit.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitLimit)
	tick := time.NewTicker(2 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("waited %s for %s", waitLimit, what)
		}
		<-tick.C
	}
}

// hit is one request a receiver got.
type hit struct {
	Path   string
	Header http.Header
	Body   []byte
}

func (h hit) id() string { return h.Header.Get(HeaderID) }

// wireEvent is one event of a default body.
type wireEvent struct {
	ID        string          `json:"id"`
	Type      string          `json:"type"`
	Timestamp string          `json:"timestamp"`
	Data      json.RawMessage `json:"data"`
}

// events decodes the body: a list for a batch, one event otherwise.
func (h hit) events(t *testing.T) []wireEvent {
	t.Helper()
	var evs []wireEvent
	if strings.HasPrefix(string(h.Body), "[") {
		if err := json.Unmarshal(h.Body, &evs); err != nil {
			t.Fatalf("body %s: %v", h.Body, err)
		}
		return evs
	}
	var ev wireEvent
	if err := json.Unmarshal(h.Body, &ev); err != nil {
		t.Fatalf("body %s: %v", h.Body, err)
	}
	return []wireEvent{ev}
}

// receiver is a webhook endpoint on loopback that records what it gets.
type receiver struct {
	URL  string
	hits chan hit

	mu  sync.Mutex
	all []hit
}

// newReceiver serves until the test ends. answer writes the response to
// each request, after it is recorded; nil answers 204.
func newReceiver(t *testing.T, answer func(w http.ResponseWriter, r *http.Request, h hit)) *receiver {
	t.Helper()
	rc := &receiver{hits: make(chan hit, 1024)}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(r.Body)
		if err != nil {
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		h := hit{Path: r.URL.Path, Header: r.Header.Clone(), Body: body}
		rc.mu.Lock()
		rc.all = append(rc.all, h)
		rc.mu.Unlock()
		select {
		case rc.hits <- h:
		default:
			t.Errorf("receiver: more than %d requests not read by the test", cap(rc.hits))
		}
		if answer == nil {
			w.WriteHeader(http.StatusNoContent)
			return
		}
		answer(w, r, h)
	}))
	t.Cleanup(srv.Close)
	rc.URL = srv.URL
	return rc
}

// next returns the next request the receiver got.
func (rc *receiver) next(t *testing.T) hit {
	t.Helper()
	select {
	case h := <-rc.hits:
		return h
	case <-time.After(waitLimit):
		t.Fatalf("no request reached the receiver in %s", waitLimit)
	}
	return hit{}
}

func (rc *receiver) received() []hit {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return slices.Clone(rc.all)
}

func (rc *receiver) count() int {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return len(rc.all)
}

// compile returns the endpoints of cfgs, each signing with specSecret and
// taking messages unless it says otherwise.
func compile(t *testing.T, cfgs ...EndpointConfig) []*Endpoint {
	t.Helper()
	for i := range cfgs {
		if cfgs[i].Secret == "" {
			cfgs[i].Secret = specSecret
		}
		if cfgs[i].Events == nil {
			cfgs[i].Events = []string{EventMessage}
		}
	}
	eps, err := Config{Endpoints: cfgs}.Compile(env(nil))
	if err != nil {
		t.Fatal(err)
	}
	return eps
}

// rig is a Service on an in-memory outbox, with a fake clock and no
// jitter unless edit says otherwise.
type rig struct {
	svc   *Service
	ob    *memOutbox
	clock *fakeClock
}

func newRig(t *testing.T, eps []*Endpoint, edit func(*Options)) *rig {
	t.Helper()
	clock := newFakeClock()
	opts := Options{Endpoints: eps, Now: clock.Now, Jitter: func() float64 { return 0 },
		Logger: slog.New(slog.NewTextHandler(t.Output(), nil))}
	if edit != nil {
		edit(&opts)
	}
	svc, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	return &rig{svc: svc, ob: newMemOutbox(t, svc, svc.opts.Now), clock: clock}
}

// start runs the Service until the test ends.
func (r *rig) start(t *testing.T, srv *server.Server) {
	t.Helper()
	if err := r.svc.Start(srv, r.ob); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
		defer cancel()
		if err := r.svc.Shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
	})
}

func (r *rig) enqueue(t *testing.T, queue string, es ...Entry) {
	t.Helper()
	if err := r.ob.Enqueue(context.Background(), map[string][]Entry{queue: es}); err != nil {
		t.Fatal(err)
	}
}

// status returns the status of the endpoint named name.
func (r *rig) status(t *testing.T, name string) EndpointStatus {
	t.Helper()
	for _, s := range r.svc.Status() {
		if s.Name == name {
			return s
		}
	}
	t.Fatalf("no endpoint %q in the status", name)
	return EndpointStatus{}
}

// waitDepth waits until the queue holds depth entries and dead dead
// letters.
func (r *rig) waitDepth(t *testing.T, queue string, depth, dead int64) {
	t.Helper()
	waitFor(t, fmt.Sprintf("%s to hold %d entries and %d dead letters", queue, depth, dead), func() bool {
		d, x := r.ob.depth(queue)
		return d == depth && x == dead
	})
}

// waitFailedAt waits until the endpoint's last failure is one handled at
// the clock's present time.
func (r *rig) waitFailedAt(t *testing.T, name string) {
	t.Helper()
	at := r.clock.Now().UTC().Format(timestampFormat)
	waitFor(t, name+" to fail at "+at, func() bool {
		le := r.status(t, name).LastError
		return le != nil && le.At == at
	})
}

// messageEntry is a message's entry as a replay from the history queues
// it: its envelope as the payload.
func messageEntry(channel string, offset uint64, id string) Entry {
	return Entry{Channel: channel, Offset: offset, Epoch: "ep1", Payload: fmt.Appendf(nil,
		`{"channel":%q,"offset":%d,"epoch":"ep1","id":%q,"event":"created","data":{"n":%d},"time":"2026-12-05T09:00:00.000Z"}`,
		channel, offset, id, offset)}
}

// messageEntries returns the entries of messages m_1… m_n of channel
// orders, at offsets 1… n, and their ids.
func messageEntries(n int) ([]Entry, []string) {
	es, ids := make([]Entry, n), make([]string, n)
	for i := range n {
		ids[i] = fmt.Sprintf("m_%d", i+1)
		es[i] = messageEntry("orders", uint64(i+1), ids[i])
	}
	return es, ids
}

// storedEntries publishes n messages to channel on a real core and
// returns their entries as the engine queues them (the stored payload, not
// the envelope), with the messages' ids.
func storedEntries(t *testing.T, channel string, n int) ([]Entry, []string) {
	t.Helper()
	srv, st := openServer(t)
	ctx := context.Background()
	var ids []string
	for i := range n {
		res, err := srv.Publish(ctx, server.Identity{System: true}, server.PublishRequest{Channel: channel, Event: "created",
			Data: fmt.Appendf(nil, `{"n":%d}`, i+1)})
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, res.ID)
	}
	page, err := st.Read(ctx, channel, 0, n)
	if err != nil {
		t.Fatal(err)
	}
	var es []Entry
	for _, e := range page.Entries {
		if len(e.Payload) == 0 || e.Payload[0] == '{' {
			t.Fatalf("stored payload %q reads as an envelope: the test would not exercise the stored form", e.Payload)
		}
		es = append(es, Entry{Time: e.Time, Channel: channel, Offset: e.Offset, Epoch: page.Epoch, Payload: e.Payload})
	}
	if len(es) != n {
		t.Fatalf("read %d stored messages, want %d", len(es), n)
	}
	return es, ids
}

// gauge returns the value of the gauge name of endpoint in reg, -1 when
// there is none.
func gauge(t *testing.T, reg prometheus.Gatherer, name, endpoint string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "endpoint" && l.GetValue() == endpoint {
					return m.GetGauge().GetValue()
				}
			}
		}
	}
	return -1
}

// openServer returns a real core and its in-memory store, with the API
// key and user tokens signed with testJWTSecret, until the test ends.
func openServer(t *testing.T, rules ...server.RuleConfig) (*server.Server, *store.Store) {
	t.Helper()
	srv, st, err := server.Open(server.Config{APIKey: testAPIKey, JWTSecret: testJWTSecret, Rules: rules,
		Logger: slog.New(slog.NewTextHandler(t.Output(), nil))}, store.Options{InMemory: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		srv.Shutdown()
		if err := st.Close(); err != nil {
			t.Error(err)
		}
	})
	return srv, st
}
