package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/heraldrt/herald/protocol"
)

// --- 3. slow readers ---

// TestSlowReaderAmongManyIsDisconnected: with a small session queue, one
// SSE client and one WebSocket client that stop reading (tiny receive
// buffers) are disconnected as slow consumers while 20 normal readers on
// every transport receive everything in order; both stalled clients then
// resume exactly where they stopped.
func TestSlowReaderAmongManyIsDisconnected(t *testing.T) {
	const (
		channel = "firehose"
		maxMsgs = 1500
		after   = 20 // published once both stalled clients are out
	)
	// The write timeouts and the ping interval are far beyond the test's
	// length: what ends the stalled clients must be their full queues,
	// however slowly a loaded machine publishes, never a blocked write's
	// deadline or a missing pong.
	srv := startFlowServer(t, "history:\n  size: 5000\n  ttl: 1h\nlimits:\n  queue_messages: 64\n"+
		"sse:\n  write_timeout: 5m\nws:\n  write_timeout: 5m\n  ping_interval: 5m\n")
	base := srv.url()

	// The stalled clients: each reads its stream's start, then nothing.
	stalledSSE, _, connectedID := openSSEStream(t, base, "channel="+channel, apiKey, "", 2048)
	stalledWS := openWS(t, base, apiKey, 2048)
	stalledWS.subscribe(channel, nil)

	// 20 normal readers.
	type reader struct {
		name    string
		c       conn
		offsets []uint64
		err     error
		done    chan struct{}
	}
	var readers []*reader
	for i := range 20 {
		d := drivers[i%3]
		readers = append(readers, &reader{name: fmt.Sprintf("reader %d (%s)", i, d.name()), c: mustOpen(t, d, base, apiKey, []string{channel}, nil), done: make(chan struct{})})
	}
	for _, r := range readers {
		go func() {
			defer close(r.done)
			for {
				env, err := r.c.recv(30 * time.Second)
				if err != nil {
					r.err = fmt.Errorf("after %d messages: %w", len(r.offsets), err)
					return
				}
				r.offsets = append(r.offsets, env.Offset)
				if strings.Contains(string(env.Data), `"end":true`) {
					return
				}
			}
		}()
	}

	// Publish 30 KB messages at speed (four publishers) until both
	// stalled clients are out, then some more.
	slow := func(transport string) map[string]string {
		return map[string]string{"reason": "slow_consumer", "transport": transport}
	}
	const closed = "herald_sessions_closed_total"
	pad := strings.Repeat("x", 30<<10)
	start := time.Now()
	var (
		published atomic.Int64 // acknowledged publishes
		outAt     atomic.Int64 // published when both were seen out
		outTime   time.Time    // when (the watcher's, read after it ends)
		pubsDone  atomic.Bool  // the publishers have stopped
		// What the stalled clients read once they are out.
		sseDrained, wsDrained = make(chan struct{}), make(chan struct{})
		sseEvs                []rawEvent
		sseEnd, wsEnd         error
		wsFrames              []wsIn
		pubWG                 sync.WaitGroup
		pubErr                = make(chan error, 5)
	)
	for range 4 {
		pubWG.Go(func() {
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			for {
				n, out := published.Load(), outAt.Load()
				if n >= maxMsgs || out < 0 || (out > 0 && n >= out+after) {
					return
				}
				if _, _, err := publish(ctx, base, channel, fmt.Sprintf(`{"pad":%q}`, pad), ""); err != nil {
					pubErr <- err
					return
				}
				published.Add(1)
			}
		})
	}
	watchDone := make(chan struct{})
	go func() { // the stalled clients' end, seen in the metrics
		defer close(watchDone)
		for outAt.Load() == 0 && !pubsDone.Load() {
			s, err := fetchMetrics(base, "")
			if err != nil {
				pubErr <- err
				outAt.Store(-1) // stops the publishers
				return
			}
			if metricSum(s, closed, slow("sse")) >= 1 && metricSum(s, closed, slow("ws")) >= 1 {
				outTime = time.Now()
				outAt.Store(max(1, published.Load()))
				// The stalled clients read on at once, as a client that
				// wakes up would (and before the server's write timeout).
				go func() { defer close(sseDrained); sseEvs, sseEnd = drainSSE(stalledSSE) }()
				go func() { defer close(wsDrained); wsFrames, wsEnd = drainWS(stalledWS) }()
			}
			time.Sleep(20 * time.Millisecond) // a scrape rate, not a synchronisation
		}
	}()
	pubWG.Wait()
	pubsDone.Store(true)
	<-watchDone
	select {
	case err := <-pubErr:
		t.Fatal(err)
	default:
	}
	if outAt.Load() == 0 {
		t.Fatalf("%d messages of 30 KB published and the stalled clients are still connected", published.Load())
	}
	end := mustPublish(t, base, channel, `{"end":true}`)
	last := end.Offset
	before, took := outAt.Load(), outTime.Sub(start)
	t.Logf("both stalled clients disconnected as slow consumers once about %d messages of 30 KB were published (%s, %.0f/s); then %d more in %s (%.0f/s)",
		before, took.Round(time.Millisecond), float64(before)/took.Seconds(),
		int64(last)-before, time.Since(outTime).Round(time.Millisecond), float64(int64(last)-before)/time.Since(outTime).Seconds())

	// Everyone else got everything, in order, once.
	for _, r := range readers {
		select {
		case <-r.done:
		case <-time.After(60 * time.Second):
			t.Fatalf("%s still waiting after 60s with %d messages", r.name, len(r.offsets))
		}
		if r.err != nil {
			t.Errorf("%s: %v", r.name, r.err)
			continue
		}
		checkOffsets(t, r.name, r.offsets, 1, last)
	}

	// The stalled SSE client read on: what the server had sent or queued
	// came, in order, then herald.disconnect slow_consumer; it resumes
	// with its last id and gets exactly the rest.
	<-sseDrained
	evs, err := checkSSEDisconnect(sseEvs, sseEnd, "slow_consumer", true)
	if err != nil {
		t.Fatalf("stalled SSE client: %v", err)
	}
	var sseGot []uint64
	lastID := connectedID
	for _, ev := range evs {
		var env envelope
		if err := json.Unmarshal([]byte(ev.data), &env); err != nil || ev.id == "" {
			t.Fatalf("stalled SSE client: event %+v", ev)
		}
		sseGot = append(sseGot, env.Offset)
		lastID = ev.id
	}
	k := uint64(len(sseGot))
	checkOffsets(t, "stalled SSE client before the disconnect", sseGot, 1, k)
	resumed := mustOpen(t, sseDriver{}, base, apiKey, []string{channel}, &mark{cursor: lastID})
	var resumedGot []uint64
	for _, env := range collectMessages(t, resumed, int(last-k)) {
		resumedGot = append(resumedGot, env.Offset)
	}
	checkOffsets(t, "stalled SSE client after resuming", resumedGot, k+1, last)

	// The stalled WebSocket client likewise: the rest of what was queued,
	// the disconnect push and close 4009, then a resume from its offset.
	<-wsDrained
	wsEnvs, err := checkWSDisconnect(wsFrames, wsEnd, protocol.CloseSlowConsumer, protocol.ReasonSlowConsumer, true)
	if err != nil {
		t.Fatalf("stalled WebSocket client: %v", err)
	}
	var wsGot []uint64
	epoch := ""
	for _, env := range wsEnvs {
		wsGot = append(wsGot, env.Offset)
		epoch = env.Epoch
	}
	kw := uint64(len(wsGot))
	checkOffsets(t, "stalled WebSocket client before the disconnect", wsGot, 1, kw)
	wsResumed := mustOpen(t, wsDriver{}, base, apiKey, []string{channel}, &mark{channels: map[string]position{channel: {offset: kw, epoch: epoch}}})
	resumedGot = resumedGot[:0]
	for _, env := range collectMessages(t, wsResumed, int(last-kw)) {
		resumedGot = append(resumedGot, env.Offset)
	}
	checkOffsets(t, "stalled WebSocket client after resuming", resumedGot, kw+1, last)
	t.Logf("the stalled SSE client had received %d messages, the WebSocket one %d, before the disconnect", k, kw)

	// The two stalled sessions were cut as slow consumers, and the log
	// says so. A long-poll session of a normal reader may be cut too on a
	// loaded machine (its queue fills between two polls of 30 KB
	// messages); its next poll rebuilds it from its cursor, which the
	// in-order checks above prove lossless.
	s := scrapeMetrics(t, base, "")
	for _, tr := range []string{"sse", "ws"} {
		if got := metricSum(s, closed, slow(tr)); got != 1 {
			t.Errorf(`%s{reason="slow_consumer",transport=%q} is %g, want 1`, closed, tr, got)
		}
	}
	polls := metricSum(s, closed, slow("poll"))
	if got := strings.Count(srv.log.String(), "reason=slow_consumer"); got != 2+int(polls) {
		t.Errorf("the server logged %d sessions closed as slow consumers, want %d", got, 2+int(polls))
	}
}
