package jetstream

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	natsserver "github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/heraldrt/herald/internal/natstest"
	"github.com/heraldrt/herald/store"
	"github.com/heraldrt/herald/store/storetest"
)

// served is an engine with the embedded NATS server it runs on: closing
// it stops both, so that the suite's reopen on the same folder finds what
// the server wrote there.
type served struct {
	*Engine
	ns *natsserver.Server
}

func (s served) Close() error {
	err := s.Engine.Close()
	s.ns.Shutdown()
	s.ns.WaitForShutdown()
	return err
}

// TestConformance runs the engine contract's suite on JetStream.
func TestConformance(t *testing.T) {
	storetest.Run(t, storetest.Harness{
		Open: func(t testing.TB, dir string, opts storetest.Options) (store.Engine, error) {
			ns := natstest.Start(t, dir, -1)
			e, err := Open(context.Background(), Options{URLs: ns.ClientURL(), Retention: opts.Retention, IdempotencyTTL: opts.IdempotencyTTL, Now: opts.Now})
			if err != nil {
				ns.Shutdown()
				return nil, err
			}
			return served{e, ns}, nil
		},
		Trim: func(ctx context.Context, e store.Engine, channel string, r store.Retention) error {
			return e.(served).Trim(ctx, channel, r)
		},
		Durable: true,
	})
}

// TestTrimmerPurgesWhatRetentionDropped: with a short interval and no
// grace, the engine's own trimmer purges the messages beyond a channel's
// count, keeping the newest ones; reads showed only those all along.
func TestTrimmerPurgesWhatRetentionDropped(t *testing.T) {
	t.Parallel()
	ns := natstest.Start(t, t.TempDir(), -1)
	t.Cleanup(func() { ns.Shutdown(); ns.WaitForShutdown() })
	e, err := Open(context.Background(), Options{URLs: ns.ClientURL(), TrimInterval: 50 * time.Millisecond, TrimGrace: time.Nanosecond,
		Retention: func(string) store.Retention { return store.Retention{MaxCount: 3} }})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	for i := range 10 {
		if _, err := e.Append(context.Background(), "trimmed", store.Record{ID: fmt.Sprint(i), Payload: []byte{byte(i)}}); err != nil {
			t.Fatal(err)
		}
	}
	page, err := e.Read(context.Background(), "trimmed", 0, 100)
	if err != nil || page.First != 8 || len(page.Entries) != 3 {
		t.Fatalf("read: first %d, %d entries (%v); want 8 and 3", page.First, len(page.Entries), err)
	}
	waitStored(t, e, "trimmed", 3)
}

// waitStored waits until the stream holds n messages of channel: the
// trimmer runs on its own schedule.
func waitStored(t *testing.T, e *Engine, channel string, n uint64) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		if got := stored(t, e, channel); got == n {
			return
		} else if time.Now().After(deadline) {
			t.Fatalf("the stream still holds %d messages of %s, want %d", got, channel, n)
		}
		time.Sleep(20 * time.Millisecond) // polled: the trimmer runs on its own schedule
	}
}

// stored is how many messages of channel the stream holds.
func stored(t *testing.T, e *Engine, channel string) uint64 {
	t.Helper()
	subj := e.subject(channel)
	info, err := e.stream.Info(context.Background(), jetstream.WithSubjectFilter(subj))
	if err != nil {
		t.Fatal(err)
	}
	return info.State.Subjects[subj]
}

// A node that dies holding an idempotency key leaves its claim pending.
// Past the claim's lease another append with the key takes it over: if
// the dead node had stored the record, the answer is that record, and
// nothing is stored twice; if not, the record is stored once.
func TestClaimOfADeadNodeIsTakenOver(t *testing.T) {
	t.Parallel()
	ns := natstest.Start(t, t.TempDir(), -1)
	t.Cleanup(func() { ns.Shutdown(); ns.WaitForShutdown() })
	var mu sync.Mutex
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	e, err := Open(context.Background(), Options{URLs: ns.ClientURL(), Now: clock, TrimInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	ctx := context.Background()
	// The dead node: it claimed "k1" and stored its record at offset 1,
	// and it claimed "k2" and died before storing anything.
	dead := func(k, nonce string) string {
		v, _ := json.Marshal(idemValue{Pending: true, Nonce: nonce, Lease: clock().Add(claimLease), Expires: clock().Add(time.Hour)})
		idemKey := key("orders") + "." + key(k)
		if _, err := e.idem.Create(ctx, idemKey, v); err != nil {
			t.Fatal(err)
		}
		return idemKey + "." + nonce
	}
	m := nats.NewMsg(e.subject("orders"))
	m.Data = []byte("first")
	m.Header.Set(hdrOffset, "1")
	m.Header.Set(hdrID, "dead-1")
	m.Header.Set(hdrKey, "k1")
	m.Header.Set(jetstream.MsgIDHeader, dead("k1", "n1"))
	if _, err := e.epoch(ctx, "orders", true); err != nil {
		t.Fatal(err)
	}
	if _, err := e.js.PublishMsg(ctx, m); err != nil {
		t.Fatal(err)
	}
	dead("k2", "n2")

	// Within the lease the key is waited for.
	short, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
	_, err = e.Append(short, "orders", store.Record{ID: "retry-1", Payload: []byte("first"), IdempotencyKey: "k1"})
	cancel()
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("append within the dead claim's lease: %v, want it to wait", err)
	}
	mu.Lock()
	now = now.Add(claimLease + time.Second)
	mu.Unlock()
	res, err := e.Append(ctx, "orders", store.Record{ID: "retry-1", Payload: []byte("first"), IdempotencyKey: "k1"})
	if err != nil || res.Offset != 1 || !res.Duplicate || res.ID != "dead-1" {
		t.Fatalf("k1 after the lease: %+v %v, want the dead node's record at offset 1, a duplicate", res, err)
	}
	res, err = e.Append(ctx, "orders", store.Record{ID: "retry-2", Payload: []byte("second"), IdempotencyKey: "k2"})
	if err != nil || res.Offset != 2 || res.Duplicate {
		t.Fatalf("k2 after the lease: %+v %v, want offset 2, new", res, err)
	}
	page, err := e.Read(ctx, "orders", 0, 10)
	if err != nil || len(page.Entries) != 2 || string(page.Entries[1].Payload) != "second" {
		t.Fatalf("read: %+v %v, want two records", page, err)
	}
	// The answers are remembered: a third try is a duplicate at once.
	if res, err := e.Append(ctx, "orders", store.Record{ID: "retry-3", IdempotencyKey: "k2"}); err != nil || res.Offset != 2 || !res.Duplicate {
		t.Fatalf("k2 again: %+v %v", res, err)
	}
}

// An append whose outcome is unknown — its publish sent, the answer
// lost, the record not yet seen at the head — keeps its claim and its
// deduplication id, with the lease ended: the client's retry takes the
// claim over at once, sends the same id, and is answered with the record
// the first try stored, which is stored once. (Given back instead, the
// key would be claimed anew with a new id, and the record stored twice.)
func TestUncertainAppendIsNotStoredTwice(t *testing.T) {
	t.Parallel()
	ns := natstest.Start(t, t.TempDir(), -1)
	t.Cleanup(func() { ns.Shutdown(); ns.WaitForShutdown() })
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC) // the clock stands still: a lease never ends by itself
	e, err := Open(context.Background(), Options{URLs: ns.ClientURL(), Now: func() time.Time { return now }, TrimInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	ctx := context.Background()
	if _, err := e.epoch(ctx, "orders", true); err != nil {
		t.Fatal(err)
	}
	// The first try: it claims the key and its publish is stored, but
	// the node does not learn it (the answer lost in a leader change).
	idemKey := key("orders") + "." + key("k1")
	_, dup, msgID, err := e.reserve(ctx, idemKey)
	if err != nil || dup {
		t.Fatalf("reserve: dup %v, %v", dup, err)
	}
	m := nats.NewMsg(e.subject("orders"))
	m.Data = []byte("first")
	m.Header.Set(hdrOffset, "1")
	m.Header.Set(hdrID, "try-1")
	m.Header.Set(hdrKey, "k1")
	m.Header.Set(jetstream.MsgIDHeader, msgID)
	if _, err := e.js.PublishMsg(ctx, m); err != nil {
		t.Fatal(err)
	}
	lost := errors.New("nats: timeout")
	if err := e.abandon(idemKey, lost); err != lost {
		t.Fatalf("abandon returned %v, want the append's error", err)
	}
	// The retry, at once (the lease would otherwise hold it 10 s).
	short, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	res, err := e.Append(short, "orders", store.Record{ID: "try-2", Payload: []byte("first"), IdempotencyKey: "k1"})
	if err != nil || res.Offset != 1 || !res.Duplicate || res.ID != "try-1" {
		t.Fatalf("retry: %+v %v, want the first try's record at offset 1, a duplicate", res, err)
	}
	page, err := e.Read(ctx, "orders", 0, 10)
	if err != nil || len(page.Entries) != 1 {
		t.Fatalf("read: %d records (%v), want the record once", len(page.Entries), err)
	}
}

// The trimmer applies retention by age too: records older than the
// channel's age (and than TrimGrace) go, the head's message stays, and a
// read starts after them.
func TestTrimmerPurgesWhatAged(t *testing.T) {
	t.Parallel()
	ns := natstest.Start(t, t.TempDir(), -1)
	t.Cleanup(func() { ns.Shutdown(); ns.WaitForShutdown() })
	var mu sync.Mutex
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	e, err := Open(context.Background(), Options{URLs: ns.ClientURL(), Now: clock, TrimInterval: 50 * time.Millisecond, TrimGrace: time.Nanosecond,
		Retention: func(string) store.Retention { return store.Retention{MaxCount: 1 << 50, MaxAge: time.Hour} }})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	ctx := context.Background()
	for i := range 5 {
		if _, err := e.Append(ctx, "aged", store.Record{ID: fmt.Sprint(i), Payload: []byte{byte(i)}}); err != nil {
			t.Fatal(err)
		}
	}
	mu.Lock()
	now = now.Add(2 * time.Hour)
	mu.Unlock()
	if _, err := e.Append(ctx, "aged", store.Record{ID: "new", Payload: []byte("new")}); err != nil {
		t.Fatal(err)
	}
	waitStored(t, e, "aged", 1)
	page, err := e.Read(ctx, "aged", 0, 100)
	if err != nil || page.First != 6 || len(page.Entries) != 1 || string(page.Entries[0].Payload) != "new" {
		t.Fatalf("read: first %d, %d entries (%v); want only offset 6", page.First, len(page.Entries), err)
	}
}

// The bus reaches every engine on the cluster, the sender's included,
// and stores nothing.
func TestBusReachesEveryNode(t *testing.T) {
	t.Parallel()
	ns := natstest.Start(t, t.TempDir(), -1)
	t.Cleanup(func() { ns.Shutdown(); ns.WaitForShutdown() })
	var engines []*Engine
	heard := make(chan string, 4)
	for i := range 2 {
		e, err := Open(context.Background(), Options{URLs: ns.ClientURL(), TrimInterval: -1})
		if err != nil {
			t.Fatal(err)
		}
		defer e.Close()
		stop, err := e.Listen("counts", func(b []byte) { heard <- fmt.Sprintf("%d:%s", i, b) })
		if err != nil {
			t.Fatal(err)
		}
		defer stop()
		engines = append(engines, e)
	}
	if err := engines[1].Broadcast("counts", []byte("hello")); err != nil {
		t.Fatal(err)
	}
	got := map[string]bool{}
	for range 2 {
		select {
		case h := <-heard:
			got[h] = true
		case <-time.After(10 * time.Second):
			t.Fatalf("heard %v, want both engines to hear the broadcast", got)
		}
	}
	if !got["0:hello"] || !got["1:hello"] {
		t.Fatalf("heard %v", got)
	}
	info, err := engines[0].stream.Info(context.Background())
	if err != nil || info.State.Msgs != 0 {
		t.Fatalf("the stream holds %d messages after a broadcast (%v), want none", info.State.Msgs, err)
	}
}
