package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os/exec"
	"sort"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/r3labs/sse/v2"
	"gopkg.in/cenkalti/backoff.v1"
)

// publishSequence publishes data {"i":i} for i in 1..n from one goroutine
// with idempotency keys, retrying across outages, and calls onAck after
// each acknowledgement.
func publishSequence(ctx context.Context, base func() string, channel string, n int, onAck func(i int)) error {
	for i := 1; i <= n; i++ {
		res, err := publishRetrying(ctx, base(), channel, fmt.Sprintf(`{"i":%d}`, i), fmt.Sprintf("%s-%d", channel, i))
		if err != nil {
			return fmt.Errorf("publish %d: %w", i, err)
		}
		if res.Offset != uint64(i) {
			return fmt.Errorf("publish %d acknowledged at offset %d", i, res.Offset)
		}
		onAck(i)
	}
	return nil
}

// TestSubscriberCommandResumesAcrossSIGKILLExactlyOnce runs `herald
// subscribe` as a subprocess while 1,000 messages are published; the
// server is SIGKILLed mid-stream and restarted on the same data folder.
// The subscriber resumes by itself and prints offsets 1..1000 once each,
// in order.
func TestSubscriberCommandResumesAcrossSIGKILLExactlyOnce(t *testing.T) {
	const n, killAt = 1000, 300
	srv := startServer(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	sub := exec.CommandContext(ctx, heraldBin, "subscribe", "--server", srv.url(), "--token", apiKey,
		"--channel", "chat_room_7", "--max", fmt.Sprint(n))
	sub.Env = cleanEnv()
	stdout, err := sub.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr syncBuffer
	sub.Stderr = &stderr
	if err := sub.Start(); err != nil {
		t.Fatal(err)
	}
	lines := readLines(stdout)
	waitSubscribers(t, srv.url(), "chat_room_7", 1)

	killed := make(chan struct{})
	pubErr := make(chan error, 1)
	go func() {
		pubErr <- publishSequence(ctx, srv.url, "chat_room_7", n, func(i int) {
			if i == killAt {
				close(killed)
			}
		})
	}()
	<-killed
	lines.waitCount(t, killAt/2, time.Minute) // the subscriber is mid-stream
	srv.kill()
	srv.restart()
	if err := <-pubErr; err != nil {
		t.Fatal(err)
	}
	lines.waitCount(t, n, 2*time.Minute)
	if err := sub.Wait(); err != nil {
		t.Fatalf("subscriber: %v\n%s", err, stderr.String())
	}
	var envs []envelope
	for _, l := range lines.all() {
		var e envelope
		if err := json.Unmarshal([]byte(l), &e); err != nil {
			t.Fatalf("subscriber printed %q: %v", l, err)
		}
		var d struct{ I uint64 }
		if err := json.Unmarshal(e.Data, &d); err != nil || d.I != e.Offset {
			t.Fatalf("message at offset %d carries %s", e.Offset, e.Data)
		}
		envs = append(envs, e)
	}
	checkExactlyOnceInOrder(t, envs, n)
}

// TestPlainR3labsClientResumesAcrossSIGKILLExactlyOnce does the same with
// the r3labs SSE client used as is: its own Last-Event-ID handling, and a
// re-subscribe after a clean end of stream (which is what a killed server
// looks like). Herald's framing (id: last) keeps it exactly-once.
func TestPlainR3labsClientResumesAcrossSIGKILLExactlyOnce(t *testing.T) {
	const n, killAt = 1000, 400
	srv := startServer(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	var mu sync.Mutex
	var envs []envelope
	got := make(chan struct{}, 1)
	subCtx, stopSub := context.WithCancel(ctx)
	subDone := make(chan struct{})
	go func() {
		defer close(subDone)
		client := sse.NewClient(srv.url() + "/sse?channel=live_dashboard")
		client.Headers["Authorization"] = "Bearer " + apiKey
		client.ReconnectStrategy = backoff.WithContext(backoff.NewConstantBackOff(50*time.Millisecond), subCtx)
		for subCtx.Err() == nil {
			_ = client.SubscribeRawWithContext(subCtx, func(msg *sse.Event) {
				if string(msg.Event) != "message" {
					return // herald.connected, herald.disconnect
				}
				var e envelope
				if err := json.Unmarshal(msg.Data, &e); err != nil {
					return // a half-read event; its id was never read, so it is replayed
				}
				mu.Lock()
				envs = append(envs, e)
				mu.Unlock()
				select {
				case got <- struct{}{}:
				default:
				}
			})
		}
	}()
	waitSubscribers(t, srv.url(), "live_dashboard", 1)

	killed := make(chan struct{})
	pubErr := make(chan error, 1)
	go func() {
		pubErr <- publishSequence(ctx, srv.url, "live_dashboard", n, func(i int) {
			if i == killAt {
				close(killed)
			}
		})
	}()
	<-killed
	srv.kill()
	srv.restart()
	if err := <-pubErr; err != nil {
		t.Fatal(err)
	}
	count := func() int { mu.Lock(); defer mu.Unlock(); return len(envs) }
	deadline := time.After(2 * time.Minute)
	for count() < n {
		select {
		case <-got:
		case <-deadline:
			t.Fatalf("received %d of %d", count(), n)
		}
	}
	stopSub()
	<-subDone
	mu.Lock()
	defer mu.Unlock()
	checkExactlyOnceInOrder(t, envs, n)
}

// TestAcknowledgedPublishesSurviveSIGKILL runs 8 concurrent publishers,
// SIGKILLs the server at a random moment and restarts it: every
// acknowledged publish is in history at its acknowledged offset, offsets
// are contiguous, and the epoch is unchanged.
func TestAcknowledgedPublishesSurviveSIGKILL(t *testing.T) {
	const publishers = 8
	srv := startServer(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	const channel = "orders"

	type ack struct {
		offset uint64
		id     string
		epoch  string
	}
	var mu sync.Mutex
	var acks []ack
	var wg sync.WaitGroup
	stop := make(chan struct{})
	// Kill after a random number of acknowledgements (200..1200).
	target := int64(200 + rand.IntN(1000))
	var acked atomic.Int64
	reached := make(chan struct{})
	for p := 0; p < publishers; p++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				res, _, err := publish(ctx, srv.url(), channel, fmt.Sprintf(`{"p":%d,"i":%d}`, p, i), "")
				if err != nil {
					return // the server is gone: unacknowledged, may or may not be stored
				}
				mu.Lock()
				acks = append(acks, ack{res.Offset, res.ID, res.Epoch})
				mu.Unlock()
				if acked.Add(1) == target {
					close(reached)
				}
			}
		}()
	}
	select {
	case <-reached:
	case <-ctx.Done():
		t.Fatal("publishers never reached the kill point")
	}
	srv.kill()
	close(stop)
	wg.Wait()
	srv.restart()

	page, envs := history(t, srv.url(), channel)
	byOffset := map[uint64]envelope{}
	for i, e := range envs {
		if e.Offset != uint64(i+1) {
			t.Fatalf("history offset #%d is %d: not contiguous from 1", i+1, e.Offset)
		}
		byOffset[e.Offset] = e
	}
	if page.Head != uint64(len(envs)) {
		t.Fatalf("head %d but %d messages kept", page.Head, len(envs))
	}
	sort.Slice(acks, func(i, j int) bool { return acks[i].offset < acks[j].offset })
	for _, a := range acks {
		e, ok := byOffset[a.offset]
		if !ok || e.ID != a.id {
			t.Fatalf("acknowledged offset %d (id %s) lost after SIGKILL (history has %q)", a.offset, a.id, e.ID)
		}
		if a.epoch != page.Epoch {
			t.Fatalf("epoch changed across restart: %s → %s", a.epoch, page.Epoch)
		}
	}
	t.Logf("%d acknowledged before SIGKILL, %d stored", len(acks), len(envs))
	// The log goes on from the head after the restart.
	res, _, err := publish(ctx, srv.url(), channel, `"after"`, "")
	if err != nil || res.Offset != page.Head+1 || res.Epoch != page.Epoch {
		t.Fatalf("publish after restart: %+v %v (head was %d)", res, err, page.Head)
	}
}
