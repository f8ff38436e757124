package server

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// allKinds are every kind of life event.
func allKinds() []EventKind {
	var ks []EventKind
	for k := EventKind(1); k < numEventKinds; k++ {
		ks = append(ks, k)
	}
	return ks
}

// recorder is an observer that keeps every event it is handed.
type recorder struct {
	mu     sync.Mutex
	evs    []Event
	notify chan struct{}
}

func newRecorder() *recorder { return &recorder{notify: make(chan struct{}, 1)} }

func (r *recorder) handle(ev Event) {
	r.mu.Lock()
	r.evs = append(r.evs, ev)
	r.mu.Unlock()
	select {
	case r.notify <- struct{}{}:
	default:
	}
}

func (r *recorder) of(kind EventKind) []Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []Event
	for _, ev := range r.evs {
		if ev.Kind == kind {
			out = append(out, ev)
		}
	}
	return out
}

// waitFor waits until n events of kind were handed over.
func (r *recorder) waitFor(t *testing.T, kind EventKind, n int) {
	t.Helper()
	deadline := time.NewTimer(10 * time.Second) // stops a hang only
	defer deadline.Stop()
	for len(r.of(kind)) < n {
		select {
		case <-r.notify:
		case <-deadline.C:
			t.Fatalf("waited for %d %s events, got %d", n, kind, len(r.of(kind)))
		}
	}
}

func flush(t *testing.T, o *Observer) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := o.Flush(ctx); err != nil {
		t.Fatalf("flush %s: %v", o.Name(), err)
	}
}

// TestEveryLifeEventIsObservedOnceWithItsFields walks a user's life on a
// presence channel, with the fake clock for the debounced leave, and a
// moderator's actions: each kind of event comes once, with its fields.
func TestEveryLifeEventIsObservedOnceWithItsFields(t *testing.T) {
	t.Parallel()
	clk := newClock()
	srv, _ := newTestServer(t, Config{Now: clk.Now, Rules: presenceRules()})
	rec := newRecorder()
	obs, err := srv.Observe("test", rec.handle, allKinds()...)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	ada := userWith("17")

	t0 := clk.Now()
	sess := openAs(t, srv, ada, "chat_room_7")
	pub, err := srv.Publish(ctx, system, PublishRequest{Channel: "chat_room_7", Data: json.RawMessage(`{"n":1}`)})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := srv.Publish(ctx, system, PublishRequest{Channel: "chat_room_7", Data: json.RawMessage(`2`), Ephemeral: true}); err != nil {
		t.Fatal(err)
	}
	ttl := 60.0 // outlives the test's clock: no expiry to observe
	if err := srv.Signal(ada, SignalRequest{Channel: "chat_room_7", State: json.RawMessage(`{"typing":true}`), TTL: &ttl}); err != nil {
		t.Fatal(err)
	}
	rec.waitFor(t, MessageCommitted, 1) // the commit feed may run after Publish returns

	clk.Advance(time.Second)
	t1 := clk.Now()
	sess.Close(ReasonClientGone)
	clk.Advance(10 * time.Second) // past the presence grace (5s)
	srv.presence.tick()

	clk.Advance(time.Second)
	t2 := clk.Now()
	if _, err := srv.Moderation().Disconnect("18"); err != nil {
		t.Fatal(err)
	}
	if _, err := srv.Moderation().Ban(ctx, "18", time.Hour); err != nil {
		t.Fatal(err)
	}
	if err := srv.Moderation().Unban(ctx, "18"); err != nil {
		t.Fatal(err)
	}
	flush(t, obs)

	cases := []struct {
		kind EventKind
		want Event
	}{
		{SessionOpened, Event{At: t0, Session: sess.ID, Transport: "test", User: "17"}},
		{UserOnline, Event{At: t0, User: "17", Session: sess.ID, Transport: "test"}},
		{ChannelOccupied, Event{At: t0, Channel: "chat_room_7"}},
		{UserJoined, Event{At: t0, User: "17", Channel: "chat_room_7", Session: sess.ID, Transport: "test"}},
		{MessageCommitted, Event{At: t0, Channel: "chat_room_7"}},
		{StateChanged, Event{At: t0, User: "17", Channel: "chat_room_7", State: json.RawMessage(`{"typing":true}`)}},
		{SessionClosed, Event{At: t1, Session: sess.ID, Transport: "test", User: "17", Reason: ReasonClientGone}},
		{ChannelVacated, Event{At: t1, Channel: "chat_room_7"}},
		{UserLeft, Event{At: t1, User: "17", Channel: "chat_room_7"}},
		{UserOffline, Event{At: t1, User: "17"}},
		{UserDisconnected, Event{At: t2, User: "18"}},
		{UserBanned, Event{At: t2, User: "18", Until: t2.Add(time.Hour)}},
		{UserUnbanned, Event{At: t2, User: "18"}},
	}
	if len(cases) != int(numEventKinds)-1 {
		t.Fatalf("the table covers %d kinds of %d", len(cases), numEventKinds-1)
	}
	for _, tc := range cases {
		t.Run(tc.kind.String(), func(t *testing.T) {
			evs := rec.of(tc.kind)
			if len(evs) != 1 {
				t.Fatalf("%d events, want 1: %+v", len(evs), evs)
			}
			got, want := evs[0], tc.want
			if tc.kind == MessageCommitted {
				m := got.Message
				if m == nil || m.Channel != "chat_room_7" || m.Offset != pub.Offset || m.Epoch != pub.Epoch ||
					!strings.Contains(string(m.Raw), `"data":{"n":1}`) {
					t.Fatalf("message %+v, want offset %d of chat_room_7 with its envelope", m, pub.Offset)
				}
				got.Message = nil
			}
			if !got.At.Equal(want.At) || !got.Until.Equal(want.Until) || string(got.State) != string(want.State) {
				t.Fatalf("at %s, until %s, state %s; want %s, %s, %s", got.At, got.Until, got.State, want.At, want.Until, want.State)
			}
			got.At, got.Until, got.State = time.Time{}, time.Time{}, nil
			want.At, want.Until, want.State, want.Kind = time.Time{}, time.Time{}, nil, tc.kind
			if fmt.Sprintf("%+v", got) != fmt.Sprintf("%+v", want) {
				t.Fatalf("got  %+v\nwant %+v", got, want)
			}
		})
	}
}

// TestObservedPresenceIsDebounced: a user who reconnects within the
// presence grace neither leaves nor joins again, nor goes offline.
func TestObservedPresenceIsDebounced(t *testing.T) {
	t.Parallel()
	clk := newClock()
	srv, _ := newTestServer(t, Config{Now: clk.Now, Rules: presenceRules()})
	rec := newRecorder()
	obs, err := srv.Observe("test", rec.handle, UserJoined, UserLeft, UserOnline, UserOffline)
	if err != nil {
		t.Fatal(err)
	}
	ada := userWith("17")
	first := openAs(t, srv, ada, "chat_room_7")
	first.Close(ReasonClientGone)
	clk.Advance(2 * time.Second) // within the grace
	second := openAs(t, srv, ada, "chat_room_7")
	clk.Advance(10 * time.Second)
	srv.presence.tick()
	flush(t, obs)
	for _, k := range []EventKind{UserJoined, UserOnline} {
		if n := len(rec.of(k)); n != 1 {
			t.Errorf("%d %s events across a quick reconnect, want 1", n, k)
		}
	}
	for _, k := range []EventKind{UserLeft, UserOffline} {
		if n := len(rec.of(k)); n != 0 {
			t.Errorf("%d %s events across a quick reconnect, want none", n, k)
		}
	}
	second.Close(ReasonClientGone)
	clk.Advance(10 * time.Second)
	srv.presence.tick()
	flush(t, obs)
	for _, k := range []EventKind{UserLeft, UserOffline} {
		if n := len(rec.of(k)); n != 1 {
			t.Errorf("%d %s events once the user is gone, want 1", n, k)
		}
	}
}

// TestABlockedObserverBlocksNeitherPublishingNorDelivery: an observer that
// never returns while thousands of messages are published and delivered
// slows nothing down; what does not fit its queue is dropped, counted in
// the metrics and logged, and every event is either handled or counted.
func TestABlockedObserverBlocksNeitherPublishingNorDelivery(t *testing.T) {
	t.Parallel()
	var logs bytes.Buffer
	var logMu sync.Mutex
	logger := slog.New(slog.NewTextHandler(writerFunc(func(p []byte) (int, error) {
		logMu.Lock()
		defer logMu.Unlock()
		return logs.Write(p)
	}), &slog.HandlerOptions{Level: slog.LevelWarn}))
	srv, _ := newTestServer(t, Config{Logger: logger})
	const queue, total = 100, 3000
	srv.obs.queueLen = queue
	release := make(chan struct{})
	var handled atomic.Int64
	stuck, err := srv.Observe("stuck", func(Event) {
		<-release // until the test lets it go
		handled.Add(1)
	}, MessageCommitted)
	if err != nil {
		t.Fatal(err)
	}
	sess, _ := openSession(t, srv, []string{"busy"}, nil, "")
	c := collect(t, sess)

	var wg sync.WaitGroup
	for p := range 8 {
		wg.Go(func() {
			for i := p; i < total; i += 8 {
				if _, err := srv.Publish(context.Background(), system, PublishRequest{
					Channel: "busy", Data: json.RawMessage(fmt.Sprintf(`{"n":%d}`, i)),
				}); err != nil {
					t.Errorf("publish %d: %v", i, err)
					return
				}
			}
		})
	}
	wg.Wait()
	items := c.waitFor(t, "every message", countOffsets("busy", total))
	assertRange(t, offsets(items)["busy"], 1, total)
	if handled.Load() != 0 {
		t.Fatalf("the stuck observer handled %d events", handled.Load())
	}

	// Its queue is full: the first batch it took (1 to queue events) is
	// stuck in the handler, queue more wait, the rest were dropped.
	dropped := stuck.Dropped()
	if dropped < total-2*queue || dropped > total-queue-1 {
		t.Fatalf("dropped %d of %d with a queue of %d", dropped, total, queue)
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(srv.Metrics())
	if got := gathered(t, reg, "herald_observer_events_dropped_total", "stuck"); got != float64(dropped) {
		t.Fatalf("herald_observer_events_dropped_total{observer=\"stuck\"} is %g, want %d", got, dropped)
	}
	logMu.Lock()
	lines := strings.Count(logs.String(), "observer is not keeping up")
	logMu.Unlock()
	if lines < 1 || uint64(lines) >= dropped {
		t.Fatalf("%d log lines for %d drops, want at least one and far fewer", lines, dropped)
	}

	close(release)
	flush(t, stuck)
	if got := uint64(handled.Load()) + stuck.Dropped(); got != total {
		t.Fatalf("%d handled + %d dropped = %d, want every one of %d", handled.Load(), stuck.Dropped(), got, total)
	}
}

// TestShutdownDrainsAndStopsObservers: Shutdown returns once every
// observer has handled what was queued for it, its goroutine has ended,
// and no observer can be added after it.
func TestShutdownDrainsAndStopsObservers(t *testing.T) {
	t.Parallel()
	srv, _ := newTestServer(t, Config{})
	gate := make(chan struct{})
	var handled atomic.Int64
	o, err := srv.Observe("slow", func(Event) {
		<-gate
		handled.Add(1)
	}, MessageCommitted)
	if err != nil {
		t.Fatal(err)
	}
	rec := newRecorder()
	if _, err := srv.Observe("counter", rec.handle, MessageCommitted); err != nil {
		t.Fatal(err)
	}
	const n = 20
	publishN(t, srv, "a", 1, n)
	rec.waitFor(t, MessageCommitted, n) // every event is queued for "slow" too
	shut := make(chan struct{})
	go func() {
		srv.Shutdown()
		close(shut)
	}()
	select {
	case <-shut:
		t.Fatal("Shutdown returned while an observer had events to handle")
	case <-o.done:
		t.Fatal("the observer's goroutine ended with events to handle")
	default:
	}
	close(gate)
	<-shut
	if handled.Load() != n {
		t.Fatalf("the observer handled %d of %d events before Shutdown returned", handled.Load(), n)
	}
	select {
	case <-o.done:
	default:
		t.Fatal("the observer's goroutine outlived Shutdown")
	}
	if _, err := srv.Observe("late", rec.handle, SessionOpened); err == nil {
		t.Fatal("an observer was added after Shutdown")
	}
}

func TestObserveRefusesWhatItCannotServe(t *testing.T) {
	t.Parallel()
	srv, _ := newTestServer(t, Config{})
	h := func(Event) {}
	if _, err := srv.Observe("one", h, SessionOpened); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name  string
		obs   string
		h     func(Event)
		kinds []EventKind
		msg   string
	}{
		{"no kinds", "two", h, nil, "at least one kind"},
		{"no handler", "two", nil, []EventKind{SessionOpened}, "a handler"},
		{"unknown kind", "two", h, []EventKind{numEventKinds}, "is not a kind of event"},
		{"same name", "one", h, []EventKind{SessionClosed}, `named "one" is registered already`},
	}
	for _, tc := range cases {
		if _, err := srv.Observe(tc.obs, tc.h, tc.kinds...); err == nil || !strings.Contains(err.Error(), tc.msg) {
			t.Errorf("%s: %v, want an error containing %q", tc.name, err, tc.msg)
		}
	}
}

// gathered returns the value of the metric name with the label value
// value, from reg.
func gathered(t *testing.T, reg *prometheus.Registry, name, value string) float64 {
	t.Helper()
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() != name {
			continue
		}
		for _, m := range f.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetValue() == value {
					if c := m.GetCounter(); c != nil {
						return c.GetValue()
					}
					return m.GetGauge().GetValue()
				}
			}
		}
	}
	t.Fatalf("no %s{…=%q}", name, value)
	return 0
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }
