package e2e

// Outbound webhooks end to end (DESIGN §6, "Webhooks out"): herald serve
// sends to a receiver that is a process of its own (receiver_test.go),
// which checks every signature with its own code and is killed,
// restarted, slowed down and made to fail; herald itself is SIGKILLed
// mid-delivery. What the receiver got is checked against the channels'
// history: every event, once after deduplication by id, in offset order
// where the endpoint is ordered, every signature good.

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net/http"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"
)

// --- helpers ---

// webhookStatus is an endpoint in GET /api/webhooks.
type webhookStatus struct {
	Name     string `json:"name"`
	URL      string `json:"url"`
	Breaker  string `json:"breaker"`
	Disabled bool   `json:"disabled"`
	// Delivering: this node delivers (on a cluster, the lease holder).
	Delivering bool  `json:"delivering"`
	Depth      int64 `json:"depth"`
	Dead       int64 `json:"dead"`
	LastError  *struct {
		Status  int    `json:"status"`
		Message string `json:"message"`
	} `json:"last_error"`
}

// webhooks returns GET /api/webhooks by endpoint name.
func webhooks(t testing.TB, base string) map[string]webhookStatus {
	t.Helper()
	var out struct {
		Webhooks []webhookStatus `json:"webhooks"`
	}
	if code, raw := apiCall(t, http.MethodGet, base+"/api/webhooks", apiKey, nil, &out); code != 200 {
		t.Fatalf("GET /api/webhooks: %d %s", code, raw)
	}
	m := make(map[string]webhookStatus, len(out.Webhooks))
	for _, w := range out.Webhooks {
		m[w.Name] = w
	}
	return m
}

// waitWebhook polls GET /api/webhooks until endpoint name's status
// satisfies cond, and returns it.
func waitWebhook(t testing.TB, base, name, what string, timeout time.Duration, cond func(webhookStatus) bool) webhookStatus {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for delay := 10 * time.Millisecond; ; delay = min(delay*2, 200*time.Millisecond) {
		st, ok := webhooks(t, base)[name]
		if !ok {
			t.Fatalf("GET /api/webhooks has no endpoint %q", name)
		}
		if cond(st) {
			return st
		}
		if time.Now().After(deadline) {
			t.Fatalf("endpoint %s: %s not within %s; status %+v", name, what, timeout, st)
		}
		time.Sleep(delay)
	}
}

// waitMetric polls /metrics until the sample name{labels} satisfies cond.
func waitMetric(t testing.TB, base, name string, labels map[string]string, what string, timeout time.Duration, cond func(float64) bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for delay := 10 * time.Millisecond; ; delay = min(delay*2, 200*time.Millisecond) {
		v := metric(t, base, "", name, labels)
		if cond(v) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s%v = %v: %s not within %s", name, labels, v, what, timeout)
		}
		time.Sleep(delay)
	}
}

// batchMessage is one message of a batch publish.
type batchMessage struct {
	Channel string          `json:"channel"`
	Event   string          `json:"event,omitempty"`
	Data    json.RawMessage `json:"data"`
}

// publishN publishes n messages {"i":i} on channel with the API key,
// through batch publishes of up to 1,000, and checks they are stored at
// offsets 1..n.
func publishN(t testing.TB, base, channel string, n int) {
	t.Helper()
	for from := 1; from <= n; from += 1000 {
		var msgs []batchMessage
		for i := from; i <= min(n, from+999); i++ {
			msgs = append(msgs, batchMessage{Channel: channel, Data: json.RawMessage(fmt.Sprintf(`{"i":%d}`, i))})
		}
		var out struct {
			Results []publishResult `json:"results"`
			Failed  int             `json:"failed"`
		}
		code, raw := apiCall(t, http.MethodPost, base+"/api/publish", apiKey, map[string]any{"messages": msgs}, &out)
		if code != 200 || out.Failed != 0 || len(out.Results) != len(msgs) {
			t.Fatalf("batch publish: %d %s", code, abbreviate(raw, 300))
		}
		for k, r := range out.Results {
			if r.Offset != uint64(from+k) {
				t.Fatalf("batch publish: message %d stored at offset %d", from+k, r.Offset)
			}
		}
	}
}

// messageIDs reads channel's history: the message id at each offset.
func messageIDs(t testing.TB, base, channel string, n int) map[uint64]string {
	t.Helper()
	_, envs := history(t, base, channel)
	checkExactlyOnceInOrder(t, envs, n)
	ids := make(map[uint64]string, n)
	for _, e := range envs {
		ids[e.Offset] = e.ID
	}
	return ids
}

// acceptedOffsets returns the offsets of channel's message events the
// receiver accepted on path.
func acceptedOffsets(recs []hookRecord, path, channel string) map[uint64]bool {
	got := map[uint64]bool{}
	for _, r := range onPath(recs, path) {
		if !r.accepted() {
			continue
		}
		for _, ev := range r.Events {
			if ev.Type == "message" && ev.Channel == channel {
				got[ev.Offset] = true
			}
		}
	}
	return got
}

// allDelivered is a waitFor condition: every offset 1..n of channel was
// accepted on each of paths.
func allDelivered(channel string, n int, paths ...string) func([]hookRecord) bool {
	return func(recs []hookRecord) bool {
		for _, p := range paths {
			if len(acceptedOffsets(recs, p, channel)) < n {
				return false
			}
		}
		return true
	}
}

// checkDelivered checks what the receiver got on path for channel's
// messages 1..n, whose ids are ids: every request's signature verified;
// every event is a message of channel whose id is the message's; every
// offset was accepted; an event that came again has the same id, and a
// request that came again the same webhook-id for the same events; with
// ordered, the first acceptance of each event is in offset order. It
// returns how many events were accepted more than once.
func checkDelivered(t testing.TB, recs []hookRecord, path, channel string, n int, ids map[uint64]string, ordered bool) (dups int) {
	t.Helper()
	recs = onPath(recs, path)
	seen := map[uint64]bool{}
	eventsOf := map[string]string{} // webhook-id → its events' ids, joined
	var next uint64 = 1
	for _, r := range recs {
		if !r.SigOK {
			t.Fatalf("%s: request %d (webhook-id %s) failed the receiver's signature check: %s", path, r.Seq, r.WebhookID, r.SigError)
		}
		var evIDs []string
		for _, ev := range r.Events {
			if ev.Type == "test" {
				continue
			}
			if ev.Type != "message" || ev.Channel != channel || ev.Offset < 1 || ev.Offset > uint64(n) {
				t.Fatalf("%s: request %d carries %s event %s of %s at offset %d, want a message of %s 1..%d", path, r.Seq, ev.Type, ev.ID, ev.Channel, ev.Offset, channel, n)
			}
			if ev.ID != ids[ev.Offset] {
				t.Fatalf("%s: the event of offset %d has id %s, the message's id is %s", path, ev.Offset, ev.ID, ids[ev.Offset])
			}
			if _, err := time.Parse(time.RFC3339Nano, ev.Timestamp); err != nil {
				t.Fatalf("%s: event %s timestamp %q: %v", path, ev.ID, ev.Timestamp, err)
			}
			evIDs = append(evIDs, ev.ID)
			if !r.accepted() {
				continue
			}
			switch {
			case seen[ev.Offset]:
				dups++
			case ordered && ev.Offset != next:
				t.Fatalf("%s: offset %d accepted (request %d) while %d was the next not yet accepted: out of order", path, ev.Offset, r.Seq, next)
			default:
				seen[ev.Offset] = true
				for seen[next] {
					next++
				}
			}
		}
		if len(evIDs) == 0 {
			continue
		}
		if bytes.HasPrefix(r.Body, []byte("{")) && r.WebhookID != evIDs[0] {
			t.Fatalf("%s: the request of event %s (not batched) has webhook-id %s", path, evIDs[0], r.WebhookID)
		}
		joined := strings.Join(evIDs, ",")
		if prev, ok := eventsOf[r.WebhookID]; ok && prev != joined {
			t.Fatalf("%s: webhook-id %s was sent with events [%s] and with [%s]", path, r.WebhookID, prev, joined)
		}
		eventsOf[r.WebhookID] = joined
	}
	for off := uint64(1); off <= uint64(n); off++ {
		if !seen[off] {
			t.Fatalf("%s: offset %d of %s was never accepted", path, off, channel)
		}
	}
	// The same events sent again are sent as the same request id.
	byEvents := map[string]string{}
	for id, evs := range eventsOf {
		if other, ok := byEvents[evs]; ok && other != id {
			t.Fatalf("%s: events [%s] were sent as webhook-id %s and %s", path, abbreviate([]byte(evs), 200), other, id)
		}
		byEvents[evs] = id
	}
	return dups
}

func countStatus(recs []hookRecord, path string, status int) int {
	n := 0
	for _, r := range onPath(recs, path) {
		if r.Status == status {
			n++
		}
	}
	return n
}

// webhookEndpoint is one entry of a webhooks: section.
func webhookEndpoint(name, url, extra string) string {
	return fmt.Sprintf("  - name: %s\n    url: %q\n    secret: %q\n%s", name, url, hookSecret, extra)
}

// --- a. nothing lost through a bad endpoint ---

// downPeriod is how long the receiver stays down while the messages of
// TestWebhookNothingLostThroughABadEndpoint wait for it. Its breakers
// open meanwhile and are probed every breaker.timeout (5 s here).
const downPeriod = 20 * time.Second

// TestWebhookNothingLostThroughABadEndpoint: an ordered, batched endpoint
// and a parallel, batched one on the same receiver. The receiver is
// killed, 2,000 messages are published and wait in the outbox, the
// receiver comes back after downPeriod, answers its first requests 2 s
// late, then fails one request in five at random. In the end each
// endpoint got every message once after deduplication by event id, the
// ordered one in offset order across its batches, and every request's
// signature verified.
func TestWebhookNothingLostThroughABadEndpoint(t *testing.T) {
	t.Parallel()
	const n, channel = 2000, "orders_eu"
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	rcv := startReceiver(t, receiverMode{Seed: 7})
	rcv.checkRejectsForgery()
	retry := "    retry: {initial: 100ms, max: 1s}\n    breaker: {timeout: 5s}\n"
	srv := startServer(t, "--config", writeConfig(t, "webhooks:\n"+
		webhookEndpoint("ordered", rcv.url("/ordered"), "    events: [message]\n    channels: [\"orders_*\"]\n    ordered: true\n    batch: {size: 20, timeout: 50ms}\n"+retry)+
		webhookEndpoint("parallel", rcv.url("/parallel"), "    events: [message]\n    parallel: 4\n    batch: {size: 10, timeout: 50ms}\n"+retry)))

	// The endpoint works: a test event arrives, signed.
	var test struct {
		Delivered bool   `json:"delivered"`
		Status    int    `json:"status"`
		ID        string `json:"id"`
	}
	if code, raw := apiCall(t, http.MethodPost, srv.url()+"/api/webhooks/ordered/test", apiKey, nil, &test); code != 200 || !test.Delivered || test.Status != 200 {
		t.Fatalf("POST /api/webhooks/ordered/test: %d %s", code, raw)
	}
	recs := rcv.waitFor(10*time.Second, "the test event", func(recs []hookRecord) bool { return len(onPath(recs, "/ordered")) == 1 })
	if r := onPath(recs, "/ordered")[0]; !r.SigOK || r.WebhookID != test.ID || len(r.Events) != 1 || r.Events[0].Type != "test" || r.Events[0].ID != test.ID {
		t.Fatalf("the test event arrived as %+v", r)
	}

	// The receiver goes down; the messages wait in the outbox.
	rcv.kill()
	publishN(t, srv.url(), channel, n)
	ids := messageIDs(t, srv.url(), channel, n)
	for name, st := range webhooks(t, srv.url()) {
		if st.Depth != n || st.Dead != 0 {
			t.Fatalf("endpoint %s with its receiver down: depth %d, dead %d; want %d waiting", name, st.Depth, st.Dead, n)
		}
	}
	for _, name := range []string{"ordered", "parallel"} {
		waitWebhook(t, srv.url(), name, "breaker open while the receiver is down", time.Minute,
			func(st webhookStatus) bool { return st.Breaker == "open" })
	}
	select { // the outage itself, not a wait for something
	case <-time.After(downPeriod):
	case <-ctx.Done():
		t.Fatal(ctx.Err())
	}

	// Back, answering its first three requests (the breakers' probes
	// among them) 2 s late, then failing one in five at random.
	rcv.restart(receiverMode{Seed: 7, Delay: 2 * time.Second, DelayRequests: 3, FailRate: 0.2})
	recs = rcv.waitFor(2*time.Minute, "every message on both endpoints", allDelivered(channel, n, "/ordered", "/parallel"))

	dupsOrdered := checkDelivered(t, recs, "/ordered", channel, n, ids, true)
	dupsParallel := checkDelivered(t, recs, "/parallel", channel, n, ids, false)
	slow, failed := 0, 0
	for _, r := range recs {
		switch {
		case r.run == 0 && r.Path != forgeryPath && len(r.Events) > 0 && r.Events[0].Type != "test":
			t.Fatalf("request %d reached the receiver before it was killed: %+v", r.Seq, r)
		case r.run == 1 && r.DelayedMS > 0:
			slow++
		case r.run == 1 && r.Status == 500:
			failed++
		}
	}
	if slow != 3 || failed == 0 {
		t.Fatalf("the receiver answered %d requests late and %d with 500: want 3 late, then some 500s", slow, failed)
	}
	for _, name := range []string{"ordered", "parallel"} {
		st := waitWebhook(t, srv.url(), name, "an empty outbox", 30*time.Second, func(st webhookStatus) bool { return st.Depth == 0 })
		if st.Dead != 0 || st.Breaker == "open" {
			t.Fatalf("endpoint %s after delivering everything: %+v", name, st)
		}
	}
	for _, res := range []string{"failed", "breaker_open", "delivered"} {
		if v := metric(t, srv.url(), "", "herald_webhook_deliveries_total", map[string]string{"endpoint": "ordered", "result": res}); v == 0 {
			t.Fatalf("herald_webhook_deliveries_total{endpoint=ordered,result=%s} is 0", res)
		}
	}
	t.Logf("%d requests, %d answered 500; events accepted twice: ordered %d, parallel %d", len(recs), failed, dupsOrdered, dupsParallel)
}

// --- b. SIGKILL mid-delivery ---

// orderedAndParallel is a webhooks: section with two endpoints on rcv for
// every message: "ordered" (/ordered, batches of 10) and "parallel"
// (/parallel, 4 requests at a time), retrying quickly.
func orderedAndParallel(rcv *receiver) string {
	retry := "    retry: {initial: 100ms, max: 1s}\n    breaker: {timeout: 5s}\n"
	return "webhooks:\n" +
		webhookEndpoint("ordered", rcv.url("/ordered"), "    events: [message]\n    ordered: true\n    batch: {size: 10, timeout: 50ms}\n"+retry) +
		webhookEndpoint("parallel", rcv.url("/parallel"), "    events: [message]\n    parallel: 4\n"+retry)
}

// TestWebhookSIGKILLMidDelivery: with a receiver answering each request
// after 200 ms, herald is SIGKILLed while requests are in flight on an
// ordered batched endpoint and a parallel one, and restarted on the same
// data folder. Every message is delivered; one sent again (its answer
// was lost with the process) comes with the same event id and, for the
// same events, the same webhook-id; the ordered endpoint stays in order.
func TestWebhookSIGKILLMidDelivery(t *testing.T) {
	const n, channel = 200, "orders_us"
	rcv := startReceiver(t, receiverMode{Delay: 200 * time.Millisecond})
	srv := startServer(t, "--config", writeConfig(t, orderedAndParallel(rcv)))

	publishN(t, srv.url(), channel, n)
	ids := messageIDs(t, srv.url(), channel, n)
	rcv.waitFor(time.Minute, "deliveries under way on both endpoints", func(recs []hookRecord) bool {
		return len(acceptedOffsets(recs, "/ordered", channel)) >= 30 && len(acceptedOffsets(recs, "/parallel", channel)) >= 30
	})
	rcv.holdRequests(nil)
	srv.kill()
	rcv.setMode(map[string]any{"delay_ms": 200})
	before := rcv.records()
	srv.restart()

	recs := rcv.waitFor(90*time.Second, "every message on both endpoints after the restart", allDelivered(channel, n, "/ordered", "/parallel"))
	if got := len(acceptedOffsets(before, "/parallel", channel)); got >= n {
		t.Fatalf("every message was delivered before the kill (%d): the kill was not mid-delivery", got)
	}
	dupsOrdered := checkDelivered(t, recs, "/ordered", channel, n, ids, true)
	dupsParallel := checkDelivered(t, recs, "/parallel", channel, n, ids, false)
	for _, name := range []string{"ordered", "parallel"} {
		st := waitWebhook(t, srv.url(), name, "an empty outbox", 30*time.Second, func(st webhookStatus) bool { return st.Depth == 0 })
		if st.Dead != 0 {
			t.Fatalf("endpoint %s after the restart: %+v", name, st)
		}
	}
	// The kill cut requests the receiver was still answering (it saw
	// their connection close): the kill was mid-delivery.
	abandoned := countStatus(recs, "/ordered", 0) + countStatus(recs, "/parallel", 0)
	if abandoned == 0 {
		t.Fatal("no request was cut by the kill")
	}
	t.Logf("%d requests; cut by the kill: %d; events accepted twice: ordered %d, parallel %d", len(recs), abandoned, dupsOrdered, dupsParallel)
}

// --- c. breaker ---

// TestWebhookBreaker: endpoint a's receiver answers 500 to everything,
// endpoint b's is healthy. a's breaker opens (the API and the metrics say
// so, and attempts are refused by the breaker instead of sent) while b
// gets every message; then a's receiver recovers, the breaker's probe
// (after its timeout, 3 s here) succeeds, the breaker closes and a gets every
// message, in order.
func TestWebhookBreaker(t *testing.T) {
	t.Parallel()
	const n, channel = 20, "orders_breaker"
	rcvA := startReceiver(t, receiverMode{Status: 500})
	rcvB := startReceiver(t, receiverMode{})
	srv := startServer(t, "--config", writeConfig(t, "webhooks:\n"+
		webhookEndpoint("a", rcvA.url("/a"), "    events: [message]\n    ordered: true\n    retry: {initial: 100ms, max: 500ms}\n    breaker: {timeout: 3s}\n")+
		webhookEndpoint("b", rcvB.url("/b"), "    events: [message]\n    retry: {initial: 100ms, max: 500ms}\n")))

	publishN(t, srv.url(), channel, n)
	ids := messageIDs(t, srv.url(), channel, n)

	st := waitWebhook(t, srv.url(), "a", "breaker open", time.Minute, func(st webhookStatus) bool { return st.Breaker == "open" })
	if st.LastError == nil || st.LastError.Status != 500 || st.Depth != n {
		t.Fatalf("endpoint a with its breaker open: %+v, want its last error a 500 and %d waiting", st, n)
	}
	if v := metric(t, srv.url(), "", "herald_webhook_breaker_state", map[string]string{"endpoint": "a"}); v != 2 {
		t.Fatalf(`herald_webhook_breaker_state{endpoint="a"} = %v while the API says open, want 2`, v)
	}
	waitMetric(t, srv.url(), "herald_webhook_deliveries_total", map[string]string{"endpoint": "a", "result": "breaker_open"},
		"attempts refused by the open breaker", 30*time.Second, func(v float64) bool { return v > 0 })

	recsB := rcvB.waitFor(time.Minute, "every message at b", allDelivered(channel, n, "/b"))
	checkDelivered(t, recsB, "/b", channel, n, ids, false)
	if st := webhooks(t, srv.url())["b"]; st.Breaker != "closed" {
		t.Fatalf("endpoint b's breaker is %s while a's is open", st.Breaker)
	}
	if v := metric(t, srv.url(), "", "herald_webhook_breaker_state", map[string]string{"endpoint": "b"}); v != 0 {
		t.Fatalf(`herald_webhook_breaker_state{endpoint="b"} = %v, want 0`, v)
	}
	recsA := rcvA.records()
	if got := len(onPath(recsA, "/a")); got < 5 || countStatus(recsA, "/a", 500) != got {
		t.Fatalf("a's receiver got %d requests, %d answered 500: want at least the 5 that open the breaker, all failed", got, countStatus(recsA, "/a", 500))
	}

	// a recovers: its breaker closes after a probe, and it drains.
	rcvA.setMode(map[string]any{"status": 200})
	recsA = rcvA.waitFor(90*time.Second, "every message at a once its breaker let a probe through", allDelivered(channel, n, "/a"))
	checkDelivered(t, recsA, "/a", channel, n, ids, true)
	st = waitWebhook(t, srv.url(), "a", "breaker closed and the outbox empty", 30*time.Second,
		func(st webhookStatus) bool { return st.Breaker == "closed" && st.Depth == 0 })
	if st.Dead != 0 {
		t.Fatalf("endpoint a after recovering: %+v", st)
	}
	if v := metric(t, srv.url(), "", "herald_webhook_breaker_state", map[string]string{"endpoint": "a"}); v != 0 {
		t.Fatalf(`herald_webhook_breaker_state{endpoint="a"} = %v after recovering, want 0`, v)
	}
}

// TestWebhookSlowEndpoint: endpoint slow's receiver takes 5 s a request,
// endpoint fast's answers at once. Every publish is acknowledged and fast
// gets every message while slow has had only a few (its four requests in
// flight wait); slow's events wait in its outbox, none lost.
func TestWebhookSlowEndpoint(t *testing.T) {
	t.Parallel()
	const n, channel = 40, "orders_slow"
	rcvSlow := startReceiver(t, receiverMode{Delay: 5 * time.Second})
	rcvFast := startReceiver(t, receiverMode{})
	srv := startServer(t, "--config", writeConfig(t, "webhooks:\n"+
		webhookEndpoint("slow", rcvSlow.url("/slow"), "    events: [message]\n    timeout: 30s\n")+
		webhookEndpoint("fast", rcvFast.url("/fast"), "    events: [message]\n")))

	publishN(t, srv.url(), channel, n)
	ids := messageIDs(t, srv.url(), channel, n)
	recs := rcvFast.waitFor(time.Minute, "every message at fast", allDelivered(channel, n, "/fast"))
	checkDelivered(t, recs, "/fast", channel, n, ids, false)
	// At most four requests are in flight to slow, each taking 5 s: by
	// now it has answered few, if any, and the rest wait for it.
	if got := countStatus(rcvSlow.records(), "/slow", 200); got >= n/2 {
		t.Fatalf("slow's receiver answered %d of %d already: the slow endpoint was not slow", got, n)
	}
	if st := webhooks(t, srv.url())["slow"]; st.Depth == 0 || st.Dead != 0 {
		t.Fatalf("slow while fast is done: %+v, want its events waiting, none dead", st)
	}
}

// --- d. life events ---

// lifeYAML: chat rooms open to users, with presence and join/leave; a
// presence grace of presenceGrace (3 s); poll sessions gone 2 s after
// their poll timeout; one ordered endpoint taking every life event.
const lifeYAML = `channels:
  - pattern: "chat_room_{id}"
    subscribe: ["authenticated"]
    publish: ["authenticated"]
    presence: true
    join_leave: true
presence:
  grace: 3s
poll:
  grace: 2s
webhooks:
`

// lifeEvent is a life event as the receiver got it.
type lifeEvent struct {
	ID, Type, User, Channel, Session, Transport, State, Reason string
}

func (e lifeEvent) String() string {
	s := e.Type
	for _, f := range []string{e.User, e.Channel, e.State} {
		if f != "" {
			s += " " + f
		}
	}
	return s
}

// lifeEvents returns the life events accepted on path, in order.
func lifeEvents(t testing.TB, recs []hookRecord, path string) []lifeEvent {
	t.Helper()
	var out []lifeEvent
	for _, r := range onPath(recs, path) {
		if !r.SigOK {
			t.Fatalf("%s: request %d failed the signature check: %s", path, r.Seq, r.SigError)
		}
		if !r.accepted() {
			continue
		}
		for _, ev := range r.Events {
			var d struct {
				User      string          `json:"user"`
				Session   string          `json:"session"`
				Channel   string          `json:"channel"`
				Transport string          `json:"transport"`
				State     json.RawMessage `json:"state"`
				Reason    string          `json:"reason"`
			}
			if err := json.Unmarshal(ev.Data, &d); err != nil {
				t.Fatalf("%s: %s event data %s: %v", path, ev.Type, ev.Data, err)
			}
			if r.WebhookID != ev.ID || !strings.HasPrefix(ev.ID, "evt_") {
				t.Fatalf("%s: %s event id %q sent as webhook-id %q", path, ev.Type, ev.ID, r.WebhookID)
			}
			out = append(out, lifeEvent{ID: ev.ID, Type: ev.Type, User: d.User, Channel: d.Channel,
				Session: d.Session, Transport: d.Transport, State: string(d.State), Reason: d.Reason})
		}
	}
	return out
}

// expectLife waits for the next len(want) life events after the first
// from and checks they are want, in any order; it returns them in the
// order of want.
func expectLife(t *testing.T, rcv *receiver, path string, from int, want ...string) []lifeEvent {
	t.Helper()
	recs := rcv.waitFor(30*time.Second, fmt.Sprintf("life events %v", want), func(recs []hookRecord) bool {
		return len(lifeEvents(t, recs, path)) >= from+len(want)
	})
	got := lifeEvents(t, recs, path)[from : from+len(want)]
	out := make([]lifeEvent, len(want))
	left := slices.Clone(got)
	for i, w := range want {
		k := slices.IndexFunc(left, func(e lifeEvent) bool { return e.String() == w })
		if k < 0 {
			t.Fatalf("life events %v after the first %d, want %v (in any order)", got, from, want)
		}
		out[i] = left[k]
		left = slices.Delete(left, k, k+1)
	}
	return out
}

// TestWebhookLifeEvents: over each transport, in a chat room with
// presence, Ada (17) comes in (connect, occupied, join), Bo (18) comes in
// (connect, join), Ada types and stops (state, state null), Ada drops
// and comes back within the presence grace (nothing), Bo leaves (leave,
// disconnect — and nothing of Ada's before them: her leave, had it been
// due, was due first), Ada leaves (vacated, leave, disconnect). Each
// event comes once, signed, with the session and transport that caused
// it where there is one.
func TestWebhookLifeEvents(t *testing.T) {
	toks := permTokens(t, map[string][]string{
		"ada": {"--sub", "17", "--attr", "name=Ada"},
		"bo":  {"--sub", "18", "--attr", "name=Bo"},
	})
	for _, d := range presenceDrivers {
		t.Run(d.name(), func(t *testing.T) {
			t.Parallel()
			rcv := startReceiver(t, receiverMode{})
			srv := startServer(t, "--config", writeConfig(t, lifeYAML+webhookEndpoint("life", rcv.url("/life"),
				"    events: [connect, disconnect, join, leave, state, occupied, vacated]\n    ordered: true\n    retry: {initial: 100ms, max: 1s}\n")))
			lifeScenario(t, d, srv.url(), rcv, toks["ada"], toks["bo"], "chat_room_"+d.name())
		})
	}
}

func lifeScenario(t *testing.T, d driver, base string, rcv *receiver, ada, bo, room string) {
	const path = "/life"
	tr := d.name()
	ada1 := openAs(t, d, base, ada, room)
	got := expectLife(t, rcv, path, 0, "connect 17", "occupied "+room, "join 17 "+room)
	for _, e := range []lifeEvent{got[0], got[2]} {
		if e.Session != ada1.session() || e.Transport != tr {
			t.Fatalf("%s: session %q on %q, want Ada's session %q on %s", e, e.Session, e.Transport, ada1.session(), tr)
		}
	}
	if got[1].User != "" || got[1].Session != "" {
		t.Fatalf("occupied names %+v", got[1])
	}

	bob := openAs(t, d, base, bo, room)
	got = expectLife(t, rcv, path, 3, "connect 18", "join 18 "+room)
	if got[0].Session != bob.session() || got[1].Session != bob.session() || got[0].Transport != tr {
		t.Fatalf("Bo's connect and join: %+v, want his session %q on %s", got, bob.session(), tr)
	}

	signal(t, base, ada, ada1, room, `{"typing":true}`, 30)
	expectLife(t, rcv, path, 5, "state 17 "+room+` {"typing":true}`)
	signal(t, base, ada, ada1, room, `null`, 30)
	expectLife(t, rcv, path, 6, "state 17 "+room+" null")

	// Ada drops and comes back within the grace (as the presence test
	// measures it).
	ada1.drop()
	_, stillIn := waitPresenceSince(t, base, bo, room, map[string]int{"17": 0, "18": 1})
	if stillIn.IsZero() {
		stillIn = time.Now()
	}
	ada2 := openAs(t, d, base, ada, room)
	waitPresence(t, base, bo, room, map[string]int{"17": 1, "18": 1})
	if away := time.Since(stillIn); away >= presenceGrace {
		t.Fatalf("Ada's reconnect took up to %s, not within the %s grace: the scenario cannot tell whether events are due", away, presenceGrace)
	}

	// Bo leaves for good. The presence deadlines fire in time order, so
	// a leave or disconnect of Ada's, due a grace after her drop, would
	// come before Bo's.
	bob.close()
	got = expectLife(t, rcv, path, 7, "leave 18 "+room, "disconnect 18")
	// The disconnect names his last session, its transport and why it
	// closed.
	if e := got[1]; e.Session != bob.session() || e.Transport != tr || e.Reason == "" {
		t.Fatalf("Bo's disconnect %+v, want his session %q on %s and a reason", e, bob.session(), tr)
	}

	ada2.close()
	expectLife(t, rcv, path, 9, "vacated "+room, "leave 17 "+room, "disconnect 17")

	all := lifeEvents(t, rcv.records(), path)
	if len(all) != 12 {
		t.Fatalf("life events %v: want 12", all)
	}
	ids := map[string]bool{}
	for _, e := range all {
		if ids[e.ID] {
			t.Fatalf("event id %s accepted twice in %v", e.ID, all)
		}
		ids[e.ID] = true
	}
}

// --- e. bad configuration ---

// TestWebhookBadConfig: herald serve refuses a webhooks: section with a
// bad URL, an unknown event type, a missing secret and a template with an
// unknown placeholder: it exits non-zero and names each problem with the
// file and line it is on.
func TestWebhookBadConfig(t *testing.T) {
	yaml := `webhooks:
  - name: n8n
    url: "hooks.n8n.cloud/webhook/x"
    secret: "` + hookSecret + `"
    events: [message]
  - name: make
    url: "https://hook.us1.make.com/abc"
    secret: "` + hookSecret + `"
    events: [message, typing]
  - name: nosecret
    url: "https://example.com/hook"
    events: [connect]
  - name: template
    url: "https://example.com/hook"
    secret: "` + hookSecret + `"
    events: [message]
    body: '{"workflow":"{workflow}"}'
`
	file := writeConfig(t, yaml)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, heraldBin, "serve", "--config", file, "--addr", freeAddr(t), "--data-dir", t.TempDir(),
		"--api-key", apiKey, "--jwt-secret", jwtSecret)
	cmd.Env = cleanEnv()
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	err := cmd.Run()
	if ctx.Err() != nil {
		t.Fatalf("herald serve with a bad webhooks: section still ran after 30s:\n%s", stderr.String())
	}
	if err == nil || cmd.ProcessState.ExitCode() == 0 {
		t.Fatalf("herald serve exited 0 with a bad webhooks: section:\n%s", stderr.String())
	}
	for _, want := range []string{
		file + `:3: webhooks[0]: url "hooks.n8n.cloud/webhook/x": want an absolute http:// or https:// URL`,
		file + `:9: webhooks[1]: events[1] "typing": want one of message, connect, disconnect, join, leave, state, occupied, vacated`,
		file + `:10: webhooks[2]: a secret is required`,
		file + `:17: webhooks[3]: body: unknown placeholder {workflow}`,
	} {
		if !strings.Contains(stderr.String(), want) {
			t.Errorf("stderr does not name %q:\n%s", want, stderr.String())
		}
	}
}

// --- f. inbound recipes ---

// n8nHeaders are headers like those n8n's HTTP Request node sends with a
// JSON body and a header-auth credential.
var n8nHeaders = map[string]string{
	"Accept":       "application/json,text/html,application/xhtml+xml,application/xml,text/*;q=0.9, image/*;q=0.8, */*;q=0.7",
	"Content-Type": "application/json",
	"User-Agent":   "n8n",
}

// makeHeaders are headers like those Make's HTTP module sends.
var makeHeaders = map[string]string{
	"Accept":       "*/*",
	"Content-Type": "application/json; charset=utf-8",
	"User-Agent":   "Make/production",
}

// rawPublish posts body to /api/publish with the API key and headers, as
// a no-code tool does, and returns the answer's fields.
func rawPublish(t testing.TB, base string, headers map[string]string, body string) map[string]json.RawMessage {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, base+"/api/publish", strings.NewReader(body))
	for k, v := range headers {
		req.Header.Set(k, v)
	}
	req.Header.Set("Authorization", "Bearer "+apiKey)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	var out map[string]json.RawMessage
	if resp.StatusCode != 200 || json.Unmarshal(raw, &out) != nil {
		t.Fatalf("POST /api/publish %s: %d %s", body, resp.StatusCode, raw)
	}
	keys := slices.Sorted(maps.Keys(out))
	if !slices.Equal(keys, []string{"channel", "epoch", "id", "offset"}) {
		t.Fatalf("POST /api/publish answered %s: want exactly channel, epoch, id and offset", raw)
	}
	return out
}

func unquote(t testing.TB, raw json.RawMessage) string {
	t.Helper()
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		t.Fatalf("%s: %v", raw, err)
	}
	return s
}

// TestWebhookInboundRecipes: the n8n and Make recipes as HTTP exchanges.
// n8n: a workflow's HTTP Request node publishes a status change with the
// API key; Herald calls the "Webhook" trigger of another workflow with
// the body template {"event":"{event}","workflow_id":"wf_1","data":{data}},
// signed. Make: a scenario's HTTP module publishes an order event; Herald
// calls a custom webhook with {"source":"herald","channel":"{channel}",
// "event":"{event}","data":{data},"timestamp":"{timestamp}"} and the
// webhook's API key header, only for the order events it asked for. Each
// receiving side gets exactly the JSON its recipe promises.
func TestWebhookInboundRecipes(t *testing.T) {
	rcv := startReceiver(t, receiverMode{})
	rcv.checkRejectsForgery()
	n8nBody := `{"event":"{event}","workflow_id":"wf_1","data":{data}}`
	makeBody := `{"source":"herald","channel":"{channel}","event":"{event}","data":{data},"timestamp":"{timestamp}"}`
	srv := startServer(t, "--config", writeConfig(t, "webhooks:\n"+
		webhookEndpoint("n8n", rcv.url("/webhook/realtime-updates"), fmt.Sprintf(
			"    events: [message]\n    channels: [\"workflow_*\"]\n    ordered: true\n    body: '%s'\n", n8nBody))+
		webhookEndpoint("make", rcv.url("/realtime-trigger"), fmt.Sprintf(
			"    events: [message]\n    channels: [\"order_updates\"]\n    message_events: [order_created, order_shipped, order_delivered]\n"+
				"    ordered: true\n    headers: {x-make-apikey: mk_e2e_0123}\n    body: '%s'\n", makeBody))))

	// Make's scenario publishes a note its webhook did not ask for, then
	// an order event; n8n's workflow publishes last. Both endpoints are
	// ordered: anything they should not get would come first.
	rawPublish(t, srv.url(), makeHeaders, `{"channel":"order_updates","event":"internal_note","data":{"text":"packed"}}`)
	shipped := rawPublish(t, srv.url(), makeHeaders,
		`{"channel":"order_updates","event":"order_shipped","data":{"order_id":"A-1001","carrier":"DHL"}}`)
	status := rawPublish(t, srv.url(), n8nHeaders,
		`{"channel":"workflow_42","event":"workflow_status_changed","data":{"workflow_id":"42","status":"success","execution_id":"1187"}}`)
	if unquote(t, status["channel"]) != "workflow_42" || string(status["offset"]) != "1" || unquote(t, shipped["channel"]) != "order_updates" || string(shipped["offset"]) != "2" {
		t.Fatalf("publish answers %v and %v", shipped, status)
	}

	recs := rcv.waitFor(30*time.Second, "both recipes' webhooks", func(recs []hookRecord) bool {
		return countStatus(recs, "/webhook/realtime-updates", 200) >= 1 && countStatus(recs, "/realtime-trigger", 200) >= 1
	})
	check := func(path, wantID, wantBody string, wantHeaders map[string]string) {
		t.Helper()
		got := onPath(recs, path)
		if len(got) != 1 {
			t.Fatalf("%s got %d requests, want exactly 1: %+v", path, len(got), got)
		}
		r := got[0]
		if !r.SigOK || r.Status != 200 {
			t.Fatalf("%s: signature %v (%s), answered %d", path, r.SigOK, r.SigError, r.Status)
		}
		if r.WebhookID != wantID {
			t.Fatalf("%s: webhook-id %q, want the message's id %q", path, r.WebhookID, wantID)
		}
		if string(r.Body) != wantBody {
			t.Fatalf("%s got body\n%s\nwant\n%s", path, r.Body, wantBody)
		}
		for k, v := range wantHeaders {
			if r.Headers[k] != v {
				t.Fatalf("%s: header %s %q, want %q (headers %v)", path, k, r.Headers[k], v, r.Headers)
			}
		}
	}
	check("/webhook/realtime-updates", unquote(t, status["id"]),
		`{"event":"workflow_status_changed","workflow_id":"wf_1","data":{"workflow_id":"42","status":"success","execution_id":"1187"}}`,
		map[string]string{"content-type": "application/json", "user-agent": "Herald-Webhooks/1"})

	// Make's timestamp is the message's time, in UTC with milliseconds.
	var full struct {
		Time string `json:"time"`
	}
	_, raw := apiCall(t, http.MethodGet, srv.url()+"/api/history?channel=order_updates&since=1", apiKey, nil, nil)
	var page struct {
		Messages []json.RawMessage `json:"messages"`
	}
	if err := json.Unmarshal(raw, &page); err != nil || len(page.Messages) != 1 || json.Unmarshal(page.Messages[0], &full) != nil {
		t.Fatalf("history of order_updates since 1: %s", raw)
	}
	at, err := time.Parse(time.RFC3339Nano, full.Time)
	if err != nil {
		t.Fatalf("message time %q: %v", full.Time, err)
	}
	check("/realtime-trigger", unquote(t, shipped["id"]),
		`{"source":"herald","channel":"order_updates","event":"order_shipped","data":{"order_id":"A-1001","carrier":"DHL"},"timestamp":"`+
			at.UTC().Format("2006-01-02T15:04:05.000Z07:00")+`"}`,
		map[string]string{"content-type": "application/json", "x-make-apikey": "mk_e2e_0123"})

	// check found one request on each path: the note, before the order
	// event on an ordered endpoint, was never sent to Make.
	for name, st := range webhooks(t, srv.url()) {
		if st.Dead != 0 {
			t.Fatalf("endpoint %s: %+v", name, st)
		}
	}
}

// TestWebhookRecipeWeWeb is the README's WeWeb recipe as its HTTP
// exchange: a page's EventSource on /sse with a user token in ?token=,
// listening for metrics_updated, gets the event a backend (or an n8n
// workflow) publishes with the API key, named and with the data the page
// maps into a variable; the API key never reaches the page.
func TestWebhookRecipeWeWeb(t *testing.T) {
	t.Parallel()
	srv := startServer(t, "--config", writeConfig(t, `channels:
  - pattern: "dashboard_{team}"
    subscribe: ["team:{team}"]
    publish: ["system"]
`))
	toks := permTokens(t, map[string][]string{"viewer": {"--sub", "17", "--attr", "team=metrics"}})
	s, _, _ := openSSEStream(t, srv.url(), "channel=dashboard_metrics&token="+toks["viewer"], "", "", 0)
	defer s.conn.Close()
	rawPublish(t, srv.url(), n8nHeaders,
		`{"channel":"dashboard_metrics","event":"metrics_updated","data":{"total_sales":1290,"total_revenue":48210.5,"active_users":37}}`)
	ev := s.mustNext("metrics_updated")
	var env struct {
		Channel string `json:"channel"`
		Event   string `json:"event"`
		Data    struct {
			TotalSales   int     `json:"total_sales"`
			TotalRevenue float64 `json:"total_revenue"`
			ActiveUsers  int     `json:"active_users"`
		} `json:"data"`
	}
	if ev.name != "metrics_updated" || json.Unmarshal([]byte(ev.data), &env) != nil || env.Channel != "dashboard_metrics" ||
		env.Data.TotalSales != 1290 || env.Data.TotalRevenue != 48210.5 || env.Data.ActiveUsers != 37 || ev.id == "" {
		t.Fatalf("the page got %+v (%s), want metrics_updated with its data and an id", ev, ev.data)
	}
	// Another team's token is refused, naming the channel.
	other := permTokens(t, map[string][]string{"sales": {"--sub", "18", "--attr", "team=sales"}})
	if d := dialSSE(t, srv.url(), "channel=dashboard_metrics&token="+other["sales"], "", "", 0); d.status != http.StatusForbidden || !strings.Contains(string(d.body), "dashboard_metrics") {
		t.Fatalf("another team's page: %d %s, want a 403 naming the channel", d.status, d.body)
	}
}
