//go:build campaign && unix

package e2e

// The reliability campaign, `make campaign` (outside make test: minutes,
// not seconds). One Herald takes publishes from HTTP and WebSocket
// publishers on four channels that keep everything and one whose history
// keeps 20 messages (so retention trims it while the campaign runs),
// while an SSE, a WebSocket and a long-poll subscriber follow all five —
// and the Go client on each of the three transports follows them through
// a bad network (a fault proxy: latency, jitter, a bandwidth cap, slices,
// a reset of every connection after 0.3–1.5 s) — while two endpoints
// take camp_a and camp_b as webhooks (one ordered and batched, one
// parallel) and data sync streams PostgreSQL updates to a channel per
// row (PostgreSQL itself restarted once, mid-way) — and it is SIGKILLed at moments drawn from a seed and restarted, N times.
// Publishers retry with their idempotency keys until answered; subscribers
// resume from their own positions. Then a checker proves from the history
// and from every subscriber's record: every acknowledged publish stored
// once at its acknowledged offset, offsets contiguous, one epoch per
// channel, every subscriber exactly once in order on the kept channels,
// and on the trimmed one only an honest herald.reset (a jump forward to
// what was still kept) in place of what it could not have; every message
// of camp_a and camp_b accepted by its endpoint, signed, with its
// message's id, the ordered one in order, the outboxes empty and no dead
// letters; every row's channel holding the versions PostgreSQL committed,
// each once, in order.
//
//	HERALD_CAMPAIGN_KILLS      kills (default 20)
//	HERALD_CAMPAIGN_PUBLISHES  acknowledged publishes (default 100,000)
//	HERALD_CAMPAIGN_SEED       the kill schedule's seed (default: the clock; printed)
//
// It needs PostgreSQL (make campaign installs it, as make test does).

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/heraldrt/herald/client"
	"github.com/heraldrt/herald/internal/pgtest"
	"github.com/heraldrt/herald/protocol"
)

func envInt(t *testing.T, name string, def int64) int64 {
	t.Helper()
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n < 0 {
		t.Fatalf("%s=%q: want a whole number", name, v)
	}
	return n
}

// campaignAck is a publish the server acknowledged.
type campaignAck struct {
	channel string
	offset  uint64
	pub, i  int
}

// campaignData is a published message's data.
type campaignData struct {
	P int `json:"p"`
	I int `json:"i"`
}

func TestCampaign(t *testing.T) {
	kills := int(envInt(t, "HERALD_CAMPAIGN_KILLS", 20))
	total := int(envInt(t, "HERALD_CAMPAIGN_PUBLISHES", 100_000))
	seed := envInt(t, "HERALD_CAMPAIGN_SEED", time.Now().UnixNano())
	t.Logf("campaign: %d kills, %d publishes, seed %d (HERALD_CAMPAIGN_SEED=%d replays the schedule)", kills, total, seed, seed)
	rng := rand.New(rand.NewPCG(uint64(seed), uint64(seed)>>1|1))

	kept := []string{"camp_a", "camp_b", "camp_c", "camp_d"}
	const trimmed = "trim_e"
	channels := append(slices.Clone(kept), trimmed)
	// Webhooks: camp_a to an ordered, batched endpoint, camp_b to a
	// parallel one, retrying quickly. Data sync: 100 rows, a channel each.
	const rows = 100
	rcv := startReceiver(t, receiverMode{})
	retry := "    retry: {initial: 100ms, max: 1s}\n    breaker: {timeout: 5s}\n"
	hooks := "webhooks:\n" +
		webhookEndpoint("ordered", rcv.url("/ordered"), "    channels: [camp_a]\n    events: [message]\n    ordered: true\n    batch: {size: 50, timeout: 50ms}\n"+retry) +
		webhookEndpoint("parallel", rcv.url("/parallel"), "    channels: [camp_b]\n    events: [message]\n    parallel: 4\n"+retry)
	pg := pgtest.Start(t)
	srv := startServer(t, "--config", writeConfig(t, hooks+countersSync(t, pg, rows)+`channels:
  - pattern: "camp_*"
    history: {size: 1000000, ttl: 720h}
  - pattern: "trim_*"
    history: {size: 20, ttl: 720h}
history:
  trim_interval: 1s
sse:
  heartbeat: 1s
ws:
  ping_interval: 1s
`))
	base := srv.url()
	ctx, cancel := context.WithTimeout(context.Background(), 25*time.Minute)
	defer cancel()
	start := time.Now()

	// Subscribers, from now: they must get everything from offset 1.
	var subs []*campaignSub
	for _, d := range drivers {
		s := &campaignSub{f: &follower{d: d, bases: []string{base}, channels: channels, got: map[string][]envelope{}}, done: make(chan struct{})}
		s.c = mustOpen(t, d, base, apiKey, channels, nil)
		subs = append(subs, s)
	}
	var heads atomic.Pointer[map[string]uint64] // set once the publishers are done
	for _, s := range subs {
		go func() {
			defer close(s.done)
			s.err = s.follow(ctx, t, &heads)
		}()
	}
	// The Go client on each transport, each through its own bad network.
	var far []*campaignClientSub
	for _, tr := range []client.Transport{client.SSE, client.WebSocket, client.LongPoll} {
		px := startFaultProxy(t, srv.addr)
		c, err := client.New(px.url(), client.Options{Token: apiKey})
		if err != nil {
			t.Fatal(err)
		}
		sub, err := c.Subscribe(ctx, client.SubscribeOptions{Transport: tr, Channels: channels,
			StallTimeout: 3 * time.Second, PollTimeout: 2 * time.Second, RetryMax: 500 * time.Millisecond})
		if err != nil {
			t.Fatalf("the Go client on %s through the fault proxy: %v", tr, err)
		}
		cs := &campaignClientSub{tr: tr, px: px, sub: sub, got: map[string][]envelope{}, done: make(chan struct{})}
		far = append(far, cs)
		go func() {
			defer close(cs.done)
			cs.err = cs.follow(ctx, &heads)
		}()
	}

	// Publishers: six over HTTP, two over WebSocket, each with its share.
	const httpPubs, wsPubs = 6, 2
	var acked atomic.Int64
	var mu sync.Mutex
	var acks []campaignAck
	var pubs sync.WaitGroup
	pubErrs := make(chan error, httpPubs+wsPubs)
	for p := range httpPubs + wsPubs {
		n := total / (httpPubs + wsPubs)
		if p < total%(httpPubs+wsPubs) {
			n++
		}
		pubs.Go(func() {
			publish := func(ctx context.Context, channel, data, key string) (uint64, error) {
				res, err := publishRetrying(ctx, base, channel, data, key)
				return res.Offset, err
			}
			if p >= httpPubs {
				wp := &wsPublisher{base: base}
				defer wp.close()
				publish = wp.publish
			}
			for i := 1; i <= n; i++ {
				ch := channels[(p+i)%len(channels)]
				data, _ := json.Marshal(campaignData{P: p, I: i})
				off, err := publish(ctx, ch, string(data), fmt.Sprintf("p%d-%d", p, i))
				if err != nil {
					pubErrs <- fmt.Errorf("publisher %d, message %d: %w", p, i, err)
					return
				}
				mu.Lock()
				acks = append(acks, campaignAck{channel: ch, offset: off, pub: p, i: i})
				mu.Unlock()
				acked.Add(1)
			}
		})
	}
	pubsDone := make(chan struct{})
	go func() { pubs.Wait(); close(pubsDone) }()

	// PostgreSQL writers, until the publishers are done. The slot exists
	// once the source streams: only later commits are promised.
	waitStreaming(t, srv)
	var updated atomic.Int64
	var writers sync.WaitGroup
	writeCtx, stopWriting := context.WithCancel(ctx)
	defer stopWriting()
	writers.Go(func() { writeCampaignCounters(writeCtx, pg, rows, &updated) })

	// The kills, on this goroutine: one in each of kills+1 equal stretches
	// of the publishes but the last, at a point the seed draws.
	stretch := int64(total / (kills + 1))
	for k := range kills {
		at := int64(k)*stretch + rng.Int64N(max(stretch, 1))
		for acked.Load() < at {
			select {
			case <-pubsDone:
				t.Fatalf("the publishers stopped after %d acknowledged publishes, before kill %d", acked.Load(), k+1)
			case err := <-pubErrs:
				t.Fatal(err)
			case <-time.After(5 * time.Millisecond): // polled: the count moves with every publish
			}
		}
		srv.kill()
		srv.restart()
		if k == kills/2 {
			// Once, PostgreSQL too: the source resumes from its
			// confirmed position on a new connection.
			pg.Stop(t)
			pg.Start(t)
		}
	}
	select {
	case <-pubsDone:
	case err := <-pubErrs:
		t.Fatal(err)
	case <-ctx.Done():
		t.Fatalf("the publishers did not finish: %d of %d acknowledged", acked.Load(), total)
	}
	close(pubErrs)
	for err := range pubErrs {
		t.Fatal(err)
	}
	publishing := time.Since(start)
	stopWriting()
	writers.Wait()

	// The checker. First, the history of each channel.
	byChannel := map[string]map[uint64]campaignAck{}
	for _, a := range acks {
		if byChannel[a.channel] == nil {
			byChannel[a.channel] = map[uint64]campaignAck{}
		}
		if prev, dup := byChannel[a.channel][a.offset]; dup {
			t.Fatalf("%s offset %d acknowledged twice: to publisher %d message %d and to publisher %d message %d", a.channel, a.offset, prev.pub, prev.i, a.pub, a.i)
		}
		byChannel[a.channel][a.offset] = a
	}
	final := map[string]uint64{}
	epochs := map[string]string{}
	for _, ch := range channels {
		page, envs := history(t, base, ch)
		final[ch], epochs[ch] = page.Head, page.Epoch
		if page.Head != uint64(len(byChannel[ch])) {
			t.Fatalf("%s: head %d, but %d publishes were acknowledged on it", ch, page.Head, len(byChannel[ch]))
		}
		if ch == trimmed && (len(envs) == 0 || envs[0].Offset == 1) {
			t.Fatalf("%s keeps %d messages from offset 1: retention trimmed nothing", ch, len(envs))
		}
		for i, e := range envs {
			if i > 0 && e.Offset != envs[i-1].Offset+1 {
				t.Fatalf("%s: history jumps from %d to %d", ch, envs[i-1].Offset, e.Offset)
			}
			if e.Epoch != page.Epoch {
				t.Fatalf("%s: offset %d has epoch %s, the channel's is %s", ch, e.Offset, e.Epoch, page.Epoch)
			}
			checkCampaignData(t, ch, e, byChannel)
		}
		if ch != trimmed && (len(envs) == 0 || envs[0].Offset != 1 || envs[len(envs)-1].Offset != page.Head) {
			t.Fatalf("%s: history holds %d messages, want 1..%d", ch, len(envs), page.Head)
		}
	}

	// Then every subscriber's record, once it has caught up.
	heads.Store(&final)
	record := campaignRecord{channels: channels, trimmed: trimmed, final: final, epochs: epochs, byChannel: byChannel}
	resets := map[string]int{}
	for _, s := range subs {
		select {
		case <-s.done:
		case <-ctx.Done():
			t.Fatalf("%s subscriber did not catch up", s.f.d.name())
		}
		if s.err != nil {
			t.Fatal(s.err)
		}
		resets[s.f.d.name()] = record.check(t, s.f.d.name(), s.f.got)
	}
	var farResets, farCuts []string
	for _, cs := range far {
		select {
		case <-cs.done:
		case <-ctx.Done():
			t.Fatalf("the Go client on %s did not catch up", cs.tr)
		}
		if cs.err != nil {
			t.Fatal(cs.err)
		}
		n := record.check(t, "the Go client on "+string(cs.tr)+" through the fault proxy", cs.got)
		if cs.px.resets.Load() == 0 {
			t.Fatalf("the proxy in front of the Go client on %s reset no connection: the bad network was not tested", cs.tr)
		}
		farResets = append(farResets, strconv.Itoa(n))
		farCuts = append(farCuts, strconv.FormatInt(cs.px.resets.Load(), 10))
		cs.sub.Close()
	}
	// The webhooks: every message of camp_a and camp_b accepted, signed,
	// with its message's id; camp_a's in order; nothing left queued.
	var hookDups []string
	for _, h := range []struct{ path, channel string }{{"/ordered", "camp_a"}, {"/parallel", "camp_b"}} {
		n := int(final[h.channel])
		recs := rcv.waitFor(5*time.Minute, "every message of "+h.channel+" on "+h.path, allDelivered(h.channel, n, h.path))
		ids := messageIDs(t, base, h.channel, n)
		hookDups = append(hookDups, strconv.Itoa(checkDelivered(t, recs, h.path, h.channel, n, ids, h.path == "/ordered")))
	}
	for _, name := range []string{"ordered", "parallel"} {
		st := waitWebhook(t, base, name, "an empty outbox", time.Minute, func(st webhookStatus) bool { return st.Depth == 0 })
		if st.Dead != 0 {
			t.Fatalf("endpoint %s: %d dead letters", name, st.Dead)
		}
	}
	// Data sync: each row's channel holds what PostgreSQL committed.
	checkCounters(t, base, pg, rows, int(updated.Load()))

	t.Logf("campaign passed: %d SIGKILLs; %d publishes acknowledged (%d over WebSocket), each stored once at its offset: lost 0, duplicated 0; "+
		"%d channels, one epoch each; subscribers SSE, WebSocket and long polling exactly once in order (reconnection attempts %d/%d/%d), "+
		"honest resets on the trimmed channel %d/%d/%d; the Go client on SSE, WebSocket and long polling through a bad network "+
		"exactly once in order through %s connection resets, honest resets %s; webhooks: every message of camp_a (ordered, batched) and "+
		"camp_b (parallel) accepted, accepted again after a kill cut its answer %s; data sync: %d committed updates over %d rows, each once in order; "+
		"publishing took %s, all %s",
		kills, len(acks), countWS(acks, httpPubs), len(channels), subs[0].f.resumes, subs[1].f.resumes, subs[2].f.resumes,
		resets[subs[0].f.d.name()], resets[subs[1].f.d.name()], resets[subs[2].f.d.name()],
		strings.Join(farCuts, "/"), strings.Join(farResets, "/"), strings.Join(hookDups, "/"), updated.Load(), rows,
		publishing.Round(time.Second), time.Since(start).Round(time.Second))
}

// TestCampaignCluster is the campaign on a cluster: three NATS servers
// (JetStream, replicas 3) and three Herald nodes, a publisher on every
// node (moving on to the next when its node fails) and an SSE, a
// WebSocket and a long-poll subscriber on every node plus a long-poll
// client that sends each poll to the next node, while Herald nodes are
// SIGKILLed and restarted in turn and, every fourth kill, the NATS server
// leading the stream is SIGKILLed instead (restarted at the next kill).
// The checker: each channel's offsets 1..N with no gap, N what was
// acknowledged, each acknowledged publish stored once at its offset,
// every subscriber each channel's history exactly once in order,
// whichever nodes it went through; any refusal a clear 503.
//
//	HERALD_CAMPAIGN_CLUSTER_KILLS      kills (default 10)
//	HERALD_CAMPAIGN_CLUSTER_PUBLISHES  acknowledged publishes (default 12,000)
//	HERALD_CAMPAIGN_SEED               the schedule's seed (printed)
func TestCampaignCluster(t *testing.T) {
	kills := int(envInt(t, "HERALD_CAMPAIGN_CLUSTER_KILLS", 10))
	total := int(envInt(t, "HERALD_CAMPAIGN_CLUSTER_PUBLISHES", 12_000))
	seed := envInt(t, "HERALD_CAMPAIGN_SEED", time.Now().UnixNano())
	t.Logf("cluster campaign: %d kills, %d publishes, seed %d (HERALD_CAMPAIGN_SEED=%d replays the schedule)", kills, total, seed, seed)
	rng := rand.New(rand.NewPCG(uint64(seed), uint64(seed)>>1|1))

	c := startCluster(t, "--config", writeConfig(t, "channels:\n  - pattern: \"camp_*\"\n    history: {size: 1000000, ttl: 720h}\n"))
	r := &clusterRun{c: c, channels: []string{"camp_x", "camp_y"}, timeout: 15 * time.Minute}
	r.perPub = max(1, total/(len(c.nodes)*len(r.channels)))
	total = r.perPub * len(c.nodes) * len(r.channels)
	var conns []conn
	for node := range c.nodes {
		for _, d := range drivers {
			_, cn := r.follow(t, d, node)
			conns = append(conns, cn)
		}
	}
	_, cn := r.follow(t, pollDriver{nodes: c.urls()}, 0)
	conns = append(conns, cn)

	// The schedule: kill k at a point drawn in the k-th of kills+1 equal
	// stretches of the publishes. during runs on the publisher whose
	// acknowledgement reached the point, once per point.
	stretch := int64(total / (kills + 1))
	at := map[int64]int{}
	for k := range kills {
		at[int64(k)*stretch+1+rng.Int64N(max(stretch-1, 1))] = k
	}
	var mu sync.Mutex
	var downNATS *natsNode
	var log []string
	var errs []error
	r.run(t, conns, func(n int64) {
		k, ok := at[n]
		if !ok {
			return
		}
		mu.Lock()
		defer mu.Unlock()
		if downNATS != nil {
			if err := downNATS.start(); err != nil {
				errs = append(errs, fmt.Errorf("restart %s: %w", downNATS.name, err))
			}
			downNATS = nil
		}
		if k%4 == 3 {
			downNATS = c.streamLeader()
			downNATS.kill()
			log = append(log, fmt.Sprintf("%d: NATS %s (leader)", n, downNATS.name))
			return
		}
		node := c.nodes[k%len(c.nodes)]
		node.kill()
		node.restart()
		log = append(log, fmt.Sprintf("%d: Herald node %d", n, k%len(c.nodes)+1))
	})
	if len(errs) > 0 {
		t.Fatal(errors.Join(errs...))
	}
	if len(log) != kills {
		t.Fatalf("%d of %d kills happened: %v", len(log), kills, log)
	}
	resumes := 0 // of the clients bound to a node (the alternating one moves on each poll)
	for _, f := range r.followers[:len(r.followers)-1] {
		resumes += f.resumes
	}
	var notices []string
	for _, f := range r.followers {
		notices = append(notices, f.notices...)
	}
	t.Logf("cluster campaign passed: %d kills (%s); %d publishes acknowledged, each stored once at its offset, offsets contiguous; "+
		"%d subscribers exactly once in order (the 9 bound to a node resumed %d times on another; sessions ended by a node: %v); %d answers were a clear 503",
		kills, strings.Join(log, ", "), len(r.acks), len(r.followers), resumes, notices, len(r.fails))
}

// campaignRecord is what a subscriber's record is checked against.
type campaignRecord struct {
	channels  []string
	trimmed   string
	final     map[string]uint64
	epochs    map[string]string
	byChannel map[string]map[uint64]campaignAck
}

// check proves one subscriber's record: on every channel each offset
// once, in order, up to the head, in the channel's epoch, each the
// message acknowledged there — or, on the trimmed channel only, an
// honest herald.reset jumping forward. It returns the resets.
func (r campaignRecord) check(t *testing.T, name string, got map[string][]envelope) (resets int) {
	t.Helper()
	for _, ch := range r.channels {
		var prev uint64
		for _, e := range got[ch] {
			if e.Event == "herald.reset" {
				if ch != r.trimmed {
					t.Fatalf("%s: a reset on %s, which keeps everything: %s", name, ch, e.Data)
				}
				var rs struct {
					Reason      string `json:"reason"`
					ResumeAfter uint64 `json:"resume_after"`
				}
				_ = json.Unmarshal(e.Data, &rs)
				if rs.Reason != "trimmed" || rs.ResumeAfter < prev {
					t.Fatalf("%s: a reset on %s after offset %d that is not an honest jump forward: %s", name, ch, prev, e.Data)
				}
				prev = rs.ResumeAfter
				resets++
				continue
			}
			if e.Offset != prev+1 {
				t.Fatalf("%s: %s offset %d after %d", name, ch, e.Offset, prev)
			}
			if e.Epoch != r.epochs[ch] {
				t.Fatalf("%s: %s offset %d in epoch %s, the channel's is %s", name, ch, e.Offset, e.Epoch, r.epochs[ch])
			}
			checkCampaignData(t, ch, e, r.byChannel)
			prev = e.Offset
		}
		if prev != r.final[ch] {
			t.Fatalf("%s: %s ends at %d, the head is %d", name, ch, prev, r.final[ch])
		}
	}
	return resets
}

// campaignClientSub is the Go client following the campaign's channels
// through a fault proxy.
type campaignClientSub struct {
	tr   client.Transport
	px   *faultProxy
	sub  *client.Subscription
	got  map[string][]envelope
	err  error
	done chan struct{}
}

// follow receives until heads is set and reached on every channel.
func (cs *campaignClientSub) follow(ctx context.Context, heads *atomic.Pointer[map[string]uint64]) error {
	last := map[string]uint64{}
	for {
		if h := heads.Load(); h != nil {
			caughtUp := true
			for ch, head := range *h {
				caughtUp = caughtUp && last[ch] >= head
			}
			if caughtUp {
				return nil
			}
		}
		wait, cancel := context.WithTimeout(ctx, time.Second)
		ev, err := cs.sub.Next(wait)
		cancel()
		switch {
		case errors.Is(err, context.DeadlineExceeded) && ctx.Err() == nil:
			continue // quiet: look whether the heads are known
		case err != nil:
			return fmt.Errorf("the Go client on %s: %w (caught up to %v)", cs.tr, err, last)
		}
		e := ev.Envelope
		env := envelope{Channel: e.Channel, Offset: e.Offset, Epoch: e.Epoch, Event: e.Event, Data: e.Data}
		switch ev.Kind {
		case client.KindMessage:
			last[e.Channel] = e.Offset
		case client.KindReset:
			var r struct {
				ResumeAfter uint64 `json:"resume_after"`
			}
			_ = json.Unmarshal(e.Data, &r)
			last[e.Channel] = r.ResumeAfter
			env.Event = "herald.reset"
		default:
			continue
		}
		cs.got[e.Channel] = append(cs.got[e.Channel], env)
	}
}

// writeCampaignCounters raises the counters' versions one row after the
// other, 200 updates a second, until ctx ends, counting each committed
// update in done; it reconnects while PostgreSQL restarts.
func writeCampaignCounters(ctx context.Context, pg *pgtest.Cluster, rows int, done *atomic.Int64) {
	cc := &counterConn{pg: pg}
	defer cc.close()
	tick := time.NewTicker(5 * time.Millisecond) // the pace, not a wait for an event
	defer tick.Stop()
	for i := 0; ; {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		if cc.raise(ctx, i%rows+1) == nil {
			done.Add(1)
			i++
		}
	}
}

func countWS(acks []campaignAck, httpPubs int) int {
	n := 0
	for _, a := range acks {
		if a.pub >= httpPubs {
			n++
		}
	}
	return n
}

// checkCampaignData checks that the message at e's offset is the one the
// server acknowledged there.
func checkCampaignData(t *testing.T, ch string, e envelope, byChannel map[string]map[uint64]campaignAck) {
	t.Helper()
	var d campaignData
	if err := json.Unmarshal(e.Data, &d); err != nil {
		t.Fatalf("%s offset %d: data %s: %v", ch, e.Offset, e.Data, err)
	}
	a, ok := byChannel[ch][e.Offset]
	if !ok || a.pub != d.P || a.i != d.I {
		t.Fatalf("%s offset %d holds publisher %d message %d; the acknowledgement there was %+v (found %v)", ch, e.Offset, d.P, d.I, a, ok)
	}
}

// campaignSub is one subscriber of the campaign: a transport's client
// that resumes from its own position each time the server goes away.
type campaignSub struct {
	f      *follower
	c      conn
	resets []envelope
	err    error
	done   chan struct{}
}

// follow receives until heads is set and reached on every channel.
// Resets are kept with the messages (the checker judges them).
func (s *campaignSub) follow(ctx context.Context, t *testing.T, heads *atomic.Pointer[map[string]uint64]) error {
	c := s.c
	last := map[string]uint64{}
	caughtUp := func() bool {
		h := heads.Load()
		if h == nil {
			return false
		}
		for ch, head := range *h {
			if last[ch] < head {
				return false
			}
		}
		return true
	}
	for !caughtUp() {
		if ctx.Err() != nil {
			return fmt.Errorf("%s: %w with %v", s.f.d.name(), ctx.Err(), last)
		}
		env, err := c.recv(time.Second)
		switch {
		case errors.Is(err, errTimeout):
			continue // quiet: look whether the heads are known
		case errors.Is(err, errEnded):
			m := c.mark()
			c.close()
			if c, err = s.f.reopen(t, m, time.Now().Add(time.Minute)); err != nil {
				return err
			}
			continue
		case err != nil:
			return fmt.Errorf("%s: %w", s.f.d.name(), err)
		case env.Event == protocol.EventDisconnect:
			s.f.notices = append(s.f.notices, string(env.Data))
			continue // a poll answer's end of session: the next poll goes on
		}
		s.f.got[env.Channel] = append(s.f.got[env.Channel], env)
		if env.Event == "herald.reset" {
			s.resets = append(s.resets, env)
			var r struct {
				ResumeAfter uint64 `json:"resume_after"`
			}
			_ = json.Unmarshal(env.Data, &r)
			last[env.Channel] = r.ResumeAfter
			continue
		}
		last[env.Channel] = env.Offset
	}
	c.close()
	return nil
}

// wsPublisher publishes over one WebSocket connection, dialled again
// after each kill; an op whose answer was lost is sent again with the
// same idempotency key.
type wsPublisher struct {
	base string
	ws   *websocket.Conn
	id   uint64
}

func (w *wsPublisher) close() {
	if w.ws != nil {
		w.ws.Close()
	}
}

func (w *wsPublisher) publish(ctx context.Context, channel, data, key string) (uint64, error) {
	for delay := 10 * time.Millisecond; ; delay = min(2*delay, 200*time.Millisecond) {
		off, err := w.try(channel, data, key)
		if err == nil {
			return off, nil
		}
		var refused *publishRefused
		if errors.As(err, &refused) {
			return 0, err
		}
		w.close()
		w.ws = nil
		select {
		case <-ctx.Done():
			return 0, fmt.Errorf("%w (last error: %v)", ctx.Err(), err)
		case <-time.After(delay):
		}
	}
}

// publishRefused is an op the server answered with an error that is not
// its going away: a retry would not help.
type publishRefused struct{ msg string }

func (e *publishRefused) Error() string { return e.msg }

func (w *wsPublisher) try(channel, data, key string) (uint64, error) {
	if w.ws == nil {
		h := http.Header{"Authorization": {"Bearer " + apiKey}}
		d := websocket.Dialer{HandshakeTimeout: 5 * time.Second}
		ws, resp, err := d.Dial("ws"+strings.TrimPrefix(w.base, "http")+"/ws", h)
		if err != nil {
			return 0, err
		}
		resp.Body.Close()
		w.ws = ws
	}
	w.id++
	op := map[string]any{"op": "publish", "id": w.id, "channel": channel, "data": json.RawMessage(data), "idempotency_key": key}
	_ = w.ws.SetWriteDeadline(time.Now().Add(10 * time.Second))
	if err := w.ws.WriteJSON(op); err != nil {
		return 0, err
	}
	_ = w.ws.SetReadDeadline(time.Now().Add(20 * time.Second))
	for {
		_, frame, err := w.ws.ReadMessage()
		if err != nil {
			return 0, err
		}
		var r struct {
			ID     uint64 `json:"id"`
			OK     bool   `json:"ok"`
			Offset uint64 `json:"offset"`
			Error  *struct {
				Code    int    `json:"code"`
				Message string `json:"message"`
			} `json:"error"`
		}
		if json.Unmarshal(frame, &r) != nil || r.ID != w.id {
			continue // a push, not the answer
		}
		if r.OK {
			return r.Offset, nil
		}
		if r.Error != nil && r.Error.Code >= 500 {
			return 0, errors.New(r.Error.Message) // the server is stopping: again
		}
		return 0, &publishRefused{msg: string(frame)}
	}
}
