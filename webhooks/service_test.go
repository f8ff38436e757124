package webhooks

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"net/http"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/heraldrt/herald/server"
)

func TestDeliveredEventsAreSignedSentOnceAndLeaveTheOutbox(t *testing.T) {
	t.Parallel()
	stored, ids := storedEntries(t, "orders", 3)
	replayed := messageEntry("history", 9, "m_replayed")
	rc := newReceiver(t, nil)
	r := newRig(t, compile(t, EndpointConfig{Name: "hook", URL: rc.URL}), nil)
	r.enqueue(t, "hook", append(stored, replayed)...)
	r.start(t, nil)

	want := map[string]string{} // id → its data's data
	for i, id := range ids {
		want[id] = fmt.Sprintf(`{"n":%d}`, i+1)
	}
	want["m_replayed"] = `{"n":9}`
	keys := r.svc.workers[0].ep.Keys
	seen := map[string]string{}
	for range len(want) {
		h := rc.next(t)
		if err := Verify(h.Header, h.Body, keys, r.clock.Now(), DefaultTolerance); err != nil {
			t.Errorf("request %s: %v", h.id(), err)
		}
		evs := h.events(t)
		if len(evs) != 1 {
			t.Fatalf("body %s: want one event", h.Body)
		}
		ev := evs[0]
		var env struct {
			ID      string          `json:"id"`
			Channel string          `json:"channel"`
			Offset  uint64          `json:"offset"`
			Data    json.RawMessage `json:"data"`
		}
		if err := json.Unmarshal(ev.Data, &env); err != nil {
			t.Fatalf("event data %s: %v", ev.Data, err)
		}
		if ev.ID != h.id() || env.ID != ev.ID || ev.Type != EventMessage || env.Offset == 0 {
			t.Errorf("request %s carries event %+v", h.id(), ev)
		}
		if _, dup := seen[ev.ID]; dup {
			t.Errorf("event %s delivered twice", ev.ID)
		}
		seen[ev.ID] = string(env.Data)
	}
	if !maps.Equal(seen, want) {
		t.Errorf("delivered (id → data) %v, want %v", seen, want)
	}
	r.waitDepth(t, "hook", 0, 0)
	st := r.status(t, "hook")
	if st.LastSuccess != r.clock.Now().Format(timestampFormat) || st.LastError != nil || st.Breaker != "closed" || st.Disabled {
		t.Errorf("status %+v", st)
	}
	if n := rc.count(); n != len(want) {
		t.Errorf("the receiver got %d requests, want %d", n, len(want))
	}
}

func TestOrderedEndpointHoldsLaterEventsBehindAFailedOne(t *testing.T) {
	t.Parallel()
	var failed atomic.Int32
	rc := newReceiver(t, func(w http.ResponseWriter, r *http.Request, h hit) {
		if h.id() == "m_3" && failed.Add(1) <= 2 {
			w.WriteHeader(http.StatusInternalServerError)
			return
		}
		w.WriteHeader(http.StatusOK)
	})
	eps := compile(t, EndpointConfig{Name: "hook", URL: rc.URL, Ordered: true,
		Retry: RetryConfig{Initial: time.Millisecond, Max: time.Millisecond}})
	// The machine's clock: the order is what matters here, and retries a
	// millisecond apart keep the test short.
	r := newRig(t, eps, func(o *Options) { o.Now = time.Now })
	es, _ := messageEntries(5)
	r.enqueue(t, "hook", es...)
	r.start(t, nil)

	var got []string
	for range 7 {
		h := rc.next(t)
		if evs := h.events(t); len(evs) != 1 || evs[0].ID != h.id() {
			t.Errorf("request %s carries %s", h.id(), h.Body)
		}
		got = append(got, h.id())
	}
	want := []string{"m_1", "m_2", "m_3", "m_3", "m_3", "m_4", "m_5"}
	if !slices.Equal(got, want) {
		t.Fatalf("the receiver got %v, want %v", got, want)
	}
	r.waitDepth(t, "hook", 0, 0)
	if n := rc.count(); n != len(want) {
		t.Errorf("the receiver got %d requests, want %d", n, len(want))
	}
}

func TestBatchesCarryEveryEventOnce(t *testing.T) {
	t.Parallel()
	rc := newReceiver(t, nil)
	r := newRig(t, compile(t, EndpointConfig{Name: "hook", URL: rc.URL, Batch: BatchConfig{Size: 10, Timeout: time.Second}}), nil)
	es, ids := messageEntries(25)
	r.enqueue(t, "hook", es...)
	r.start(t, nil)

	// Two full batches go at once; the last five wait for more events
	// until the batch timeout, on the fake clock.
	r.waitDepth(t, "hook", 5, 0)
	if n := rc.count(); n != 2 {
		t.Fatalf("%d requests before the batch timeout, want the 2 full batches", n)
	}
	r.clock.Advance(time.Second)
	r.svc.Notify(1)
	r.waitDepth(t, "hook", 0, 0)

	keys := r.svc.workers[0].ep.Keys
	seen := map[string]int{}
	var sizes []int
	for _, h := range rc.received() {
		if !strings.HasPrefix(string(h.Body), "[") {
			t.Errorf("body %s is not a JSON list", h.Body)
		}
		if err := Verify(h.Header, h.Body, keys, r.clock.Now(), DefaultTolerance); err != nil {
			t.Errorf("batch %s: %v", h.id(), err)
		}
		evs := h.events(t)
		if len(evs) > 10 {
			t.Errorf("a batch of %d events, want at most 10", len(evs))
		}
		ids := make([]Event, len(evs))
		for i, ev := range evs {
			ids[i].ID = ev.ID
		}
		if want := batchID(ids); h.id() != want {
			t.Errorf("batch id %q, want %q", h.id(), want)
		}
		for _, ev := range evs {
			seen[ev.ID]++
		}
		sizes = append(sizes, len(evs))
	}
	slices.Sort(sizes)
	if !slices.Equal(sizes, []int{5, 10, 10}) {
		t.Errorf("batch sizes %v, want 5, 10, 10", sizes)
	}
	for _, id := range ids {
		if seen[id] != 1 {
			t.Errorf("event %s sent %d times, want once", id, seen[id])
		}
	}
	if len(seen) != len(ids) {
		t.Errorf("%d distinct events sent, want %d", len(seen), len(ids))
	}
}

func TestRetryAfterIsHonoured(t *testing.T) {
	t.Parallel()
	var first atomic.Bool
	rc := newReceiver(t, func(w http.ResponseWriter, r *http.Request, h hit) {
		if h.id() == "m_1" && first.CompareAndSwap(false, true) {
			w.Header().Set("Retry-After", "120")
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	})
	r := newRig(t, compile(t, EndpointConfig{Name: "hook", URL: rc.URL}), nil)
	start := r.clock.Now()
	r.enqueue(t, "hook", messageEntry("orders", 1, "m_1"))
	r.start(t, nil)
	if h := rc.next(t); h.id() != "m_1" {
		t.Fatalf("first request %s, want m_1", h.id())
	}
	r.waitFailedAt(t, "hook")
	if st := r.status(t, "hook"); st.LastError.Status != http.StatusServiceUnavailable {
		t.Fatalf("last error %+v, want a 503", st.LastError)
	}

	// A second before the 120 s: a new event goes out, m_1 waits. The loop
	// looks at m_1 when it sends m_2, on the same clock.
	r.clock.Advance(119 * time.Second)
	r.enqueue(t, "hook", messageEntry("orders", 2, "m_2"))
	if h := rc.next(t); h.id() != "m_2" {
		t.Fatalf("request %s at %s, want m_2: m_1 is not due before %s", h.id(), r.clock.Now(), start.Add(120*time.Second))
	}
	r.waitDepth(t, "hook", 1, 0)

	r.clock.Advance(time.Second)
	r.svc.Notify(1)
	h := rc.next(t)
	if h.id() != "m_1" {
		t.Fatalf("request %s, want the retry of m_1", h.id())
	}
	if ts, want := h.Header.Get(HeaderTimestamp), fmt.Sprint(start.Add(120*time.Second).Unix()); ts != want {
		t.Errorf("the retry was sent at %s, want %s (120 s after the 503)", ts, want)
	}
	r.waitDepth(t, "hook", 0, 0)
	if n := rc.count(); n != 3 {
		t.Errorf("the receiver got %d requests, want 3", n)
	}
}

func TestFailingDeliveriesAreDeadLetteredAndReplayed(t *testing.T) {
	t.Parallel()
	var down atomic.Bool
	down.Store(true)
	rc := newReceiver(t, func(w http.ResponseWriter, r *http.Request, h hit) {
		if down.Load() {
			w.WriteHeader(http.StatusInternalServerError)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	})
	// One batch of three, so that four attempts (at 0, 10, 20 and 30
	// minutes) stay below the breaker's threshold.
	eps := compile(t, EndpointConfig{Name: "hook", URL: rc.URL, Batch: BatchConfig{Size: 3},
		Retry: RetryConfig{Initial: 10 * time.Minute, Max: 10 * time.Minute, For: 30 * time.Minute}})
	r := newRig(t, eps, nil)
	es, ids := messageEntries(3)
	r.enqueue(t, "hook", es...)
	r.start(t, nil)

	for attempt := 1; ; attempt++ {
		r.waitFailedAt(t, "hook")
		if attempt == 4 {
			break
		}
		r.waitDepth(t, "hook", 3, 0)
		r.clock.Advance(10 * time.Minute)
		r.svc.Notify(1)
	}
	r.waitDepth(t, "hook", 0, 3)
	hits := rc.received()
	if len(hits) != 4 {
		t.Fatalf("%d attempts, want 4", len(hits))
	}
	for _, h := range hits {
		if h.id() != hits[0].id() {
			t.Errorf("retry id %s, want the first attempt's %s", h.id(), hits[0].id())
		}
	}

	ctx := context.Background()
	first, err := r.svc.Dead(ctx, "hook", 0, 2)
	if err != nil {
		t.Fatal(err)
	}
	second, err := r.svc.Dead(ctx, "hook", first.Next, 2)
	if err != nil {
		t.Fatal(err)
	}
	if len(first.DeadLetters) != 2 || first.Next != first.DeadLetters[1].Seq || len(second.DeadLetters) != 1 || second.Next != 0 {
		t.Fatalf("pages %+v and %+v, want 2 then 1 dead letters", first, second)
	}
	died := r.clock.Now().Format(timestampFormat)
	var deadIDs []string
	for _, d := range append(first.DeadLetters, second.DeadLetters...) {
		if !strings.Contains(d.Reason, "gave up after 30m0s") || !strings.Contains(d.Reason, "answered 500") || d.Died != died {
			t.Errorf("dead letter %d: died %s, reason %q", d.Seq, d.Died, d.Reason)
		}
		var ev wireEvent
		if err := json.Unmarshal(d.Event, &ev); err != nil {
			t.Fatalf("dead letter event %s: %v", d.Event, err)
		}
		deadIDs = append(deadIDs, ev.ID)
	}
	if !slices.Equal(deadIDs, ids) {
		t.Errorf("dead letters %v, want %v", deadIDs, ids)
	}
	if _, err := r.svc.Dead(ctx, "nope", 0, 10); server.AsError(err).Code != http.StatusNotFound {
		t.Errorf("dead letters of an unknown endpoint: %v", err)
	}
	for _, limit := range []int{0, -1, 1001} {
		if page, err := r.svc.Dead(ctx, "hook", 0, limit); server.AsError(err).Code != http.StatusBadRequest {
			t.Errorf("dead letters with limit %d: %+v, %v; want a 400", limit, page, err)
		}
	}

	down.Store(false)
	n, err := r.svc.Replay(ctx, nil, "hook", ReplayRequest{Dead: true})
	if err != nil || n != 3 {
		t.Fatalf("replay: %d, %v; want 3 queued", n, err)
	}
	r.waitDepth(t, "hook", 0, 0)
	hits = rc.received()
	if len(hits) != 5 {
		t.Fatalf("%d requests, want 4 failed and 1 delivered", len(hits))
	}
	var sent []string
	for _, ev := range hits[4].events(t) {
		sent = append(sent, ev.ID)
	}
	if !slices.Equal(sent, ids) {
		t.Errorf("replayed %v, want %v", sent, ids)
	}
}

func TestGoneDisablesTheEndpointUntilATestSucceeds(t *testing.T) {
	t.Parallel()
	var gone atomic.Bool
	gone.Store(true)
	rc := newReceiver(t, func(w http.ResponseWriter, r *http.Request, h hit) {
		if gone.Load() {
			w.WriteHeader(http.StatusGone)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	})
	r := newRig(t, compile(t, EndpointConfig{Name: "hook", URL: rc.URL, Parallel: 1}), nil)
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(r.svc.Metrics())
	es, ids := messageEntries(3)
	r.enqueue(t, "hook", es[:2]...)
	r.start(t, nil)
	if h := rc.next(t); h.id() != "m_1" {
		t.Fatalf("first request %s, want m_1", h.id())
	}
	waitFor(t, "the endpoint to be disabled", func() bool { return r.status(t, "hook").Disabled })
	if v := gauge(t, reg, "herald_webhook_endpoint_disabled", "hook"); v != 1 {
		t.Errorf("herald_webhook_endpoint_disabled %v, want 1", v)
	}
	r.enqueue(t, "hook", es[2]) // wakes the loop, which sends nothing
	if d, _ := r.ob.depth("hook"); d != 3 {
		t.Fatalf("depth %d after a 410, want the 3 events kept", d)
	}

	ctx := context.Background()
	res, err := r.svc.Test(ctx, "hook")
	if err != nil || res.Delivered || res.Status != http.StatusGone {
		t.Fatalf("test against a gone endpoint: %+v, %v", res, err)
	}
	if !r.status(t, "hook").Disabled {
		t.Fatal("a failed test re-enabled the endpoint")
	}
	if h := rc.next(t); h.id() != res.ID || h.events(t)[0].Type != "test" {
		t.Fatalf("request %s %s, want the test event %s", h.id(), h.Body, res.ID)
	}
	if n := rc.count(); n != 2 {
		t.Fatalf("%d requests while disabled, want the first and the test", n)
	}

	gone.Store(false)
	if res, err := r.svc.Test(ctx, "hook"); err != nil || !res.Delivered || res.Status != http.StatusNoContent {
		t.Fatalf("test: %+v, %v", res, err)
	}
	rc.next(t) // the test event
	r.waitDepth(t, "hook", 0, 0)
	if r.status(t, "hook").Disabled || gauge(t, reg, "herald_webhook_endpoint_disabled", "hook") != 0 {
		t.Error("still disabled after a delivered test")
	}
	var after []string
	for range 3 {
		after = append(after, rc.next(t).id())
	}
	if !slices.Equal(after, ids) {
		t.Errorf("after the test the receiver got %v, want %v", after, ids)
	}
}

func TestOutboxSizeDeadLettersTheOldest(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name   string
		atOnce bool
	}{
		{"queued before the loop starts", true},
		{"queued one by one while it runs", false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			rc := newReceiver(t, func(w http.ResponseWriter, r *http.Request, h hit) { w.WriteHeader(http.StatusBadGateway) })
			r := newRig(t, compile(t, EndpointConfig{Name: "hook", URL: rc.URL, OutboxSize: 5, Parallel: 1,
				Retry: RetryConfig{Initial: time.Hour}}), nil)
			es, ids := messageEntries(12)
			if tc.atOnce {
				r.enqueue(t, "hook", es...)
				r.start(t, nil)
			} else {
				r.start(t, nil)
				for _, e := range es {
					r.enqueue(t, "hook", e)
				}
			}
			r.waitDepth(t, "hook", 5, 7)
			dead := r.ob.deadLetters("hook")
			for _, d := range dead {
				if !strings.HasPrefix(d.Reason, "outbox full") {
					t.Errorf("dead letter %d: reason %q", d.Seq, d.Reason)
				}
			}
			if !tc.atOnce {
				return // what was in flight was spared: which ones died depends on timing
			}
			var deadIDs []string
			for _, d := range dead {
				ev, err := decode(&d.Entry)
				if err != nil {
					t.Fatal(err)
				}
				deadIDs = append(deadIDs, ev.ID)
			}
			if !slices.Equal(deadIDs, ids[:7]) {
				t.Errorf("dead letters %v, want the oldest 7 %v", deadIDs, ids[:7])
			}
			for _, h := range rc.received() {
				if slices.Contains(ids[:7], h.id()) {
					t.Errorf("%s was sent although the outbox had no room for it", h.id())
				}
			}
		})
	}
}

// TestADeadEndpointHoldsAWindowNotItsQueue: 3,000 events wait for an
// endpoint that fails every request; its delivery loop reads them a
// window at a time, so what it holds in memory stays the window's size
// (256 for parallel 4 unbatched), not the queue's.
func TestADeadEndpointHoldsAWindowNotItsQueue(t *testing.T) {
	t.Parallel()
	rc := newReceiver(t, func(w http.ResponseWriter, r *http.Request, h hit) { w.WriteHeader(http.StatusInternalServerError) })
	r := newRig(t, compile(t, EndpointConfig{Name: "hook", URL: rc.URL, Retry: RetryConfig{Initial: time.Hour},
		Breaker: BreakerConfig{Failures: 1000}}), nil)
	es, _ := messageEntries(3000)
	r.enqueue(t, "hook", es...)
	r.start(t, nil)
	waitFor(t, "the first attempts", func() bool { return rc.count() >= 4 })
	r.clock.Advance(2 * time.Hour) // every held event is due again
	r.svc.Notify(1)
	waitFor(t, "the retries", func() bool { return rc.count() >= 8 })
	if most, window := r.ob.most("hook"), r.svc.workers[0].window; most == 0 || most > window {
		t.Fatalf("the loop held up to %d events read from the outbox, want at most its window of %d", most, window)
	}
	if d, _, _ := r.ob.Depth("hook"); d != 3000 {
		t.Fatalf("depth %d, want all 3,000 still queued", d)
	}
}

func TestBreakerOpensForAFailingEndpointOnly(t *testing.T) {
	t.Parallel()
	var down atomic.Bool
	down.Store(true)
	bad := newReceiver(t, func(w http.ResponseWriter, r *http.Request, h hit) {
		if down.Load() {
			w.WriteHeader(http.StatusInternalServerError)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	})
	good := newReceiver(t, nil)
	fast := RetryConfig{Initial: 5 * time.Millisecond, Max: 5 * time.Millisecond}
	eps := compile(t,
		EndpointConfig{Name: "down", URL: bad.URL, Retry: fast},
		EndpointConfig{Name: "up", URL: good.URL, Retry: fast})
	// The machine's clock: the breaker keeps its own time.
	r := newRig(t, eps, func(o *Options) { o.Now, o.BreakerTimeout = time.Now, 200*time.Millisecond })
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(r.svc.Metrics())
	down3, _ := messageEntries(3)
	r.enqueue(t, "down", down3...)
	r.start(t, nil)

	waitFor(t, "the breaker of down to open", func() bool { return r.status(t, "down").Breaker == "open" })
	waitFor(t, "herald_webhook_breaker_state to say open", func() bool {
		return gauge(t, reg, "herald_webhook_breaker_state", "down") == 2 && gauge(t, reg, "herald_webhook_breaker_state", "up") == 0
	})

	// The healthy endpoint delivers meanwhile.
	up, ids := messageEntries(4)
	r.enqueue(t, "up", up...)
	r.waitDepth(t, "up", 0, 0)
	got := map[string]bool{}
	for _, h := range good.received() {
		got[h.id()] = true
	}
	for _, id := range ids {
		if !got[id] {
			t.Errorf("up did not get %s while down's breaker was open", id)
		}
	}
	if d, _ := r.ob.depth("down"); d != 3 {
		t.Errorf("down's depth %d, want its 3 events kept", d)
	}
	if st := r.status(t, "up"); st.Breaker != "closed" {
		t.Errorf("up's breaker %s", st.Breaker)
	}

	down.Store(false)
	r.waitDepth(t, "down", 0, 0)
	if st := r.status(t, "down"); st.Breaker != "closed" {
		t.Errorf("down's breaker %s after it recovered, want closed", st.Breaker)
	}
}

func TestLifeEventsReachTheEndpointsThatWantThem(t *testing.T) {
	t.Parallel()
	rc := newReceiver(t, nil)
	all := []string{EventConnect, EventDisconnect, EventJoin, EventLeave, EventState, EventOccupied, EventVacated}
	eps := compile(t,
		EndpointConfig{Name: "chat", URL: rc.URL + "/chat", Events: all, Channels: []string{"chat_*"}, Ordered: true},
		EndpointConfig{Name: "joins", URL: rc.URL + "/joins", Events: []string{EventJoin}, Ordered: true},
		EndpointConfig{Name: "messages", URL: rc.URL + "/messages"})
	r := newRig(t, eps, nil)
	r.start(t, nil)

	at := r.clock.Now()
	for _, ev := range []server.Event{
		{Kind: server.UserOnline, User: "17", Session: "s_1", Transport: "ws"},
		{Kind: server.SessionOpened, User: "17", Session: "s_1", Transport: "ws"}, // not a life event of webhooks
		{Kind: server.ChannelOccupied, Channel: "chat_lobby"},
		{Kind: server.UserJoined, User: "17", Channel: "chat_lobby", Session: "s_1", Transport: "ws"},
		{Kind: server.UserJoined, User: "17", Channel: "news", Session: "s_1", Transport: "sse"},
		{Kind: server.ChannelOccupied, Channel: "news"},
		{Kind: server.StateChanged, User: "17", Channel: "chat_lobby", State: json.RawMessage(`{"typing":true}`)},
		{Kind: server.UserLeft, User: "17", Channel: "chat_lobby"},
		{Kind: server.ChannelVacated, Channel: "chat_lobby"},
		{Kind: server.SessionClosed, User: "17", Session: "s_1", Transport: "ws", Reason: server.ReasonClientGone},
		{Kind: server.UserOffline, User: "17"},
		{Kind: server.UserOffline, User: "18"}, // no session of theirs was seen closing
	} {
		ev.At = at
		r.svc.observe(ev)
	}

	type want struct{ path, typ, data string }
	wants := []want{
		{"/chat", EventConnect, `{"user":"17","session":"s_1","transport":"ws"}`},
		{"/chat", EventOccupied, `{"channel":"chat_lobby"}`},
		{"/chat", EventJoin, `{"user":"17","session":"s_1","channel":"chat_lobby","transport":"ws"}`},
		{"/chat", EventState, `{"user":"17","channel":"chat_lobby","state":{"typing":true}}`},
		{"/chat", EventLeave, `{"user":"17","channel":"chat_lobby"}`},
		{"/chat", EventVacated, `{"channel":"chat_lobby"}`},
		{"/chat", EventDisconnect, `{"user":"17","session":"s_1","transport":"ws","reason":"client_gone"}`},
		{"/chat", EventDisconnect, `{"user":"18"}`},
		{"/joins", EventJoin, `{"user":"17","session":"s_1","channel":"chat_lobby","transport":"ws"}`},
		{"/joins", EventJoin, `{"user":"17","session":"s_1","channel":"news","transport":"sse"}`},
	}
	r.waitDepth(t, "chat", 0, 0)
	r.waitDepth(t, "joins", 0, 0)
	waitFor(t, "every life event to be delivered", func() bool { return rc.count() >= len(wants) })
	if n := r.ob.enqueued("chat"); n != 8 {
		t.Errorf("chat: %d entries queued, want 8", n)
	}
	if n := r.ob.enqueued("joins"); n != 2 {
		t.Errorf("joins: %d entries queued, want 2", n)
	}
	if n := r.ob.enqueued("messages"); n != 0 {
		t.Errorf("messages: %d life events queued for an endpoint of messages only", n)
	}

	var got []want
	ids := map[string][]string{} // type+channel → the ids each endpoint got
	for _, h := range rc.received() {
		if err := Verify(h.Header, h.Body, r.svc.workers[0].ep.Keys, at, DefaultTolerance); err != nil {
			t.Errorf("%s: %v", h.Path, err)
		}
		for _, ev := range h.events(t) {
			got = append(got, want{h.Path, ev.Type, string(ev.Data)})
			if ev.Timestamp != at.Format(timestampFormat) || !strings.HasPrefix(ev.ID, "evt_") || ev.ID != h.id() {
				t.Errorf("%s: event %+v", h.Path, ev)
			}
			ids[ev.Type+string(ev.Data)] = append(ids[ev.Type+string(ev.Data)], ev.ID)
		}
	}
	// Each endpoint is ordered; the two endpoints interleave.
	slices.SortStableFunc(got, func(a, b want) int { return strings.Compare(a.path, b.path) })
	if !slices.Equal(got, wants) {
		t.Errorf("delivered\n %v\nwant\n %v", got, wants)
	}
	// One event, two endpoints: the same id, which receivers dedupe on.
	if join := ids[EventJoin+wants[2].data]; len(join) != 2 || join[0] != join[1] {
		t.Errorf("the join in chat_lobby reached its two endpoints with ids %v, want one id", join)
	}
}

func TestLifeEventsOfARealCoreAreDelivered(t *testing.T) {
	t.Parallel()
	srv, _ := openServer(t, server.RuleConfig{Pattern: "chat_room_{id}", Subscribe: []string{"authenticated"}, Presence: true, JoinLeave: true})
	rc := newReceiver(t, nil)
	r := newRig(t, compile(t, EndpointConfig{Name: "life", URL: rc.URL, Ordered: true,
		Events: []string{EventConnect, EventJoin, EventOccupied}, Channels: []string{"chat_room_{id}"}}), nil)
	r.start(t, srv)

	sess, _, err := srv.Transport("test").Open(context.Background(), server.Identity{User: "17"},
		server.OpenRequest{Channels: []string{"chat_room_7"}})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		EventConnect + fmt.Sprintf(` {"user":"17","session":%q,"transport":"test"}`, sess.ID),
		EventJoin + fmt.Sprintf(` {"user":"17","session":%q,"channel":"chat_room_7","transport":"test"}`, sess.ID),
		EventOccupied + ` {"channel":"chat_room_7"}`,
	}
	var got []string
	for range want {
		for _, ev := range rc.next(t).events(t) {
			got = append(got, ev.Type+" "+string(ev.Data))
		}
	}
	slices.Sort(got)
	if !slices.Equal(got, want) {
		t.Errorf("delivered\n %q\nwant\n %q", got, want)
	}
	r.waitDepth(t, "life", 0, 0)
}

func TestShutdownCancelsRequestsInFlightAndKeepsTheirEvents(t *testing.T) {
	t.Parallel()
	cancelled := make(chan string, 2)
	rc := newReceiver(t, func(w http.ResponseWriter, r *http.Request, h hit) {
		<-r.Context().Done() // hangs until the sender gives up
		cancelled <- h.id()
	})
	r := newRig(t, compile(t, EndpointConfig{Name: "hook", URL: rc.URL, Timeout: time.Minute, Parallel: 2}), nil)
	es, _ := messageEntries(2)
	r.enqueue(t, "hook", es...)
	if err := r.svc.Start(nil, r.ob); err != nil {
		t.Fatal(err)
	}
	rc.next(t)
	rc.next(t)

	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	if err := r.svc.Shutdown(ctx); err != nil {
		t.Fatalf("shutdown with two requests hanging: %v", err)
	}
	for range 2 {
		select {
		case <-cancelled:
		case <-time.After(waitLimit):
			t.Fatal("a request in flight was not cancelled")
		}
	}
	if d, x := r.ob.depth("hook"); d != 2 || x != 0 {
		t.Errorf("after shutdown: %d queued, %d dead letters; want both events queued", d, x)
	}
	if st := r.status(t, "hook"); st.LastSuccess != "" {
		t.Errorf("status %+v: nothing was delivered", st)
	}
	if err := r.svc.Shutdown(ctx); err != nil {
		t.Errorf("a second shutdown: %v", err)
	}
}
