package jetstream

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/heraldrt/herald/internal/natstest"
	"github.com/heraldrt/herald/store"
)

// openTest opens an engine on a fresh embedded NATS server, or on url
// when set, closed with the test.
func openTest(t *testing.T, url string, opts Options) *Engine {
	t.Helper()
	if url == "" {
		ns := natstest.Start(t, t.TempDir(), -1)
		t.Cleanup(func() { ns.Shutdown(); ns.WaitForShutdown() })
		url = ns.ClientURL()
	}
	opts.URLs = url
	if opts.TrimInterval == 0 {
		opts.TrimInterval = -1
	}
	e, err := Open(context.Background(), opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = e.Close() })
	return e
}

// The outbox's queues: entries come back in order after a position,
// removed ones go, buried ones move to the dead letters with their
// reason, revived ones come back at the end, and the counts follow.
func TestOutboxQueues(t *testing.T) {
	t.Parallel()
	e := openTest(t, "", Options{})
	ctx := context.Background()
	woken := make(chan uint64, 16)
	o, err := e.OpenOutbox(ctx, store.Outbox{Queues: []string{"a", "b"}, Notify: func(q uint64) { woken <- q }})
	if err != nil {
		t.Fatal(err)
	}
	defer o.Close()
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	var in []store.OutboxEntry
	for i := range 5 {
		in = append(in, store.OutboxEntry{Time: t0.Add(time.Duration(i) * time.Second), Channel: "orders é", Offset: uint64(i + 1), Epoch: "ep1", Payload: []byte(fmt.Sprint("p", i))})
	}
	if err := o.Enqueue(ctx, "b", in); err != nil {
		t.Fatal(err)
	}
	if q := <-woken; q != 0b10 {
		t.Fatalf("woken for queues %b, want b's bit", q)
	}
	if err := o.Enqueue(ctx, "nope", in); err == nil || !strings.Contains(err.Error(), "no such outbox queue") {
		t.Fatalf("enqueue to an unknown queue: %v", err)
	}
	got, err := o.ReadOutbox(ctx, "b", 0, 100)
	if err != nil || len(got) != 5 {
		t.Fatalf("read b: %d entries, %v", len(got), err)
	}
	for i, g := range got {
		w := in[i]
		if g.Channel != w.Channel || g.Offset != w.Offset || g.Epoch != w.Epoch || string(g.Payload) != string(w.Payload) || !g.Time.Equal(w.Time) {
			t.Fatalf("entry %d: %+v, want %+v", i, g, w)
		}
		if i > 0 && g.Seq <= got[i-1].Seq {
			t.Fatalf("sequences not ascending: %d after %d", g.Seq, got[i-1].Seq)
		}
	}
	if a, err := o.ReadOutbox(ctx, "a", 0, 100); err != nil || len(a) != 0 {
		t.Fatalf("read a: %d entries, %v; want none", len(a), err)
	}
	if page, _ := o.ReadOutbox(ctx, "b", got[1].Seq, 2); len(page) != 2 || page[0].Seq != got[2].Seq {
		t.Fatalf("read after the second, 2: %+v", page)
	}
	if err := o.Remove(ctx, "b", []uint64{got[0].Seq, got[2].Seq}); err != nil {
		t.Fatal(err)
	}
	if err := o.Bury(ctx, "b", []store.OutboxEntry{got[1]}, "gone: 410 ünïcode"); err != nil {
		t.Fatal(err)
	}
	left, _ := o.ReadOutbox(ctx, "b", 0, 100)
	if len(left) != 2 || left[0].Seq != got[3].Seq || left[1].Seq != got[4].Seq {
		t.Fatalf("left in b: %+v, want the 4th and 5th", left)
	}
	dead, err := o.ReadDead(ctx, "b", 0, 100)
	if err != nil || len(dead) != 1 || dead[0].Reason != "gone: 410 ünïcode" || string(dead[0].Payload) != "p1" || dead[0].Offset != 2 || dead[0].Died.IsZero() {
		t.Fatalf("dead letters of b: %+v %v", dead, err)
	}
	o.mu.Lock()
	o.at = time.Time{} // count again
	o.mu.Unlock()
	if depth, nd, err := o.OutboxDepth("b"); err != nil || depth != 2 || nd != 1 {
		t.Fatalf("depth of b: %d waiting, %d dead, %v; want 2 and 1", depth, nd, err)
	}
	if err := o.Revive(ctx, "b", dead); err != nil {
		t.Fatal(err)
	}
	left, _ = o.ReadOutbox(ctx, "b", 0, 100)
	if len(left) != 3 || string(left[2].Payload) != "p1" {
		t.Fatalf("b after the revival: %+v, want p1 at the end", left)
	}
	if depth, nd, _ := o.OutboxDepth("b"); depth != 3 || nd != 0 {
		t.Fatalf("depth of b after the revival: %d waiting, %d dead; want 3 and 0", depth, nd)
	}
}

// The router copies each stored record into the queues its route gives,
// once, in order, whichever node stored it; a second term (here, after
// the first ended) goes on where the first stopped.
func TestOutboxRoutesEachRecordOnce(t *testing.T) {
	t.Parallel()
	ns := natstest.Start(t, t.TempDir(), -1)
	t.Cleanup(func() { ns.Shutdown(); ns.WaitForShutdown() })
	a := openTest(t, ns.ClientURL(), Options{})
	b := openTest(t, ns.ClientURL(), Options{})
	ctx := context.Background()
	route := func(ch string, rec *store.Record) uint64 {
		if strings.HasPrefix(ch, "orders") {
			return 0b11
		}
		return 0b10
	}
	woken := make(chan uint64, 1024)
	o, err := a.OpenOutbox(ctx, store.Outbox{Queues: []string{"orders", "all"}, Route: route, Notify: func(q uint64) { woken <- q }})
	if err != nil {
		t.Fatal(err)
	}
	defer o.Close()
	term := func(all int, appends func()) {
		tctx, cancel := context.WithCancel(ctx)
		done := make(chan struct{})
		go func() { defer close(done); _ = o.Route(tctx) }()
		waitRouter(t, a)
		appends()
		waitQueue(t, o, "all", all)
		cancel()
		<-done
	}
	appendN := func(e *Engine, ch string, from, n int) {
		for i := from; i < from+n; i++ {
			if _, err := e.Append(ctx, ch, store.Record{ID: fmt.Sprint(ch, i), Payload: []byte(fmt.Sprint(i))}); err != nil {
				t.Fatal(err)
			}
		}
	}
	// Stored before the router ever ran: not for the webhooks.
	appendN(a, "chat", 0, 5)
	term(20, func() { appendN(a, "orders_1", 0, 10); appendN(b, "chat", 5, 10) })
	term(30, func() { appendN(b, "orders_1", 10, 10) })

	orders, err := o.ReadOutbox(ctx, "orders", 0, 1000)
	if err != nil || len(orders) != 20 {
		t.Fatalf("orders queue: %d entries (%v), want 20", len(orders), err)
	}
	for i, en := range orders {
		if en.Channel != "orders_1" || en.Offset != uint64(i+1) || string(en.Payload) != fmt.Sprint(i) || en.Epoch == "" {
			t.Fatalf("orders entry %d: %+v", i, en)
		}
	}
	all, _ := o.ReadOutbox(ctx, "all", 0, 1000)
	if len(all) != 30 {
		t.Fatalf("all queue: %d entries, want 30 (10 orders, 10 chat, 10 orders)", len(all))
	}
	chat := 0
	for _, en := range all {
		if en.Channel == "chat" {
			chat++
			if en.Offset != uint64(5+chat) {
				t.Fatalf("chat entry at offset %d, want %d", en.Offset, 5+chat)
			}
		}
	}
	select {
	case <-woken:
	default:
		t.Fatal("the router routed without waking the deliveries")
	}
}

// waitRouter waits until the router's consumer exists: records stored
// before it are not for the webhooks (it starts from the stream's end
// the first time).
func waitRouter(t *testing.T, e *Engine) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		if _, err := e.stream.Consumer(context.Background(), routerName); err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("the router made no consumer in 30s")
		}
		time.Sleep(10 * time.Millisecond) // polled: the router starts on its own
	}
}

// waitQueue waits until queue holds n entries.
func waitQueue(t *testing.T, o *Outbox, queue string, n int) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		es, err := o.ReadOutbox(context.Background(), queue, 0, 10_000)
		if err == nil && len(es) >= n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("queue %s holds %d entries (%v), want %d", queue, len(es), err, n)
		}
		time.Sleep(20 * time.Millisecond) // polled: the router runs on its own
	}
}

// The trimmer keeps what the router has not routed yet, and purges the
// rest as retention says.
func TestTrimmerKeepsWhatIsNotRouted(t *testing.T) {
	t.Parallel()
	e := openTest(t, "", Options{TrimGrace: time.Nanosecond,
		Retention: func(string) store.Retention { return store.Retention{MaxCount: 1} }})
	ctx := context.Background()
	o, err := e.OpenOutbox(ctx, store.Outbox{Queues: []string{"q"}, Route: func(string, *store.Record) uint64 { return 1 }})
	if err != nil {
		t.Fatal(err)
	}
	defer o.Close()
	tctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); _ = o.Route(tctx) }()
	waitRouter(t, e)
	for i := range 5 {
		if _, err := e.Append(ctx, "c", store.Record{ID: fmt.Sprint(i), Payload: []byte{byte(i)}}); err != nil {
			t.Fatal(err)
		}
	}
	waitQueue(t, o, "q", 5)
	cancel()
	<-done
	// Routed: the trimmer may purge them. Not routed (no term): kept.
	for i := 5; i < 10; i++ {
		if _, err := e.Append(ctx, "c", store.Record{ID: fmt.Sprint(i), Payload: []byte{byte(i)}}); err != nil {
			t.Fatal(err)
		}
	}
	// The router's acknowledgements reach its consumer's floor on their
	// own: trim until the routed five are gone, then once more — the
	// five not routed stay.
	deadline := time.Now().Add(30 * time.Second)
	for stored(t, e, "c") != 5 {
		if time.Now().After(deadline) {
			t.Fatalf("the stream still holds %d messages of c, want 5", stored(t, e, "c"))
		}
		if err := e.trimRound(ctx); err != nil {
			t.Fatal(err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err := e.trimRound(ctx); err != nil {
		t.Fatal(err)
	}
	if n := stored(t, e, "c"); n != 5 {
		t.Fatalf("a trim took what was not routed: %d messages of c left, want 5", n)
	}
	// Once routed, they go too, but the head's.
	tctx, cancel = context.WithCancel(ctx)
	done = make(chan struct{})
	go func() { defer close(done); _ = o.Route(tctx) }()
	waitQueue(t, o, "q", 10)
	cancel()
	<-done
	deadline = time.Now().Add(30 * time.Second)
	for {
		if err := e.trimRound(ctx); err != nil {
			t.Fatal(err)
		}
		info, err := e.stream.Info(ctx)
		if err == nil && info.State.Msgs == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the stream holds %d messages after every record was routed, want 1 (%v)", info.State.Msgs, err)
		}
		time.Sleep(20 * time.Millisecond) // the acknowledgements reach the consumer on their own
	}
}

// One node at a time holds a lease: another takes it over once the
// holder lets it go, or once the holder has been silent past its length
// (and the holder gave the work up before that).
func TestLeaseOneHolderAtATime(t *testing.T) {
	t.Parallel()
	ns := natstest.Start(t, t.TempDir(), -1)
	t.Cleanup(func() { ns.Shutdown(); ns.WaitForShutdown() })
	const ttl = 800 * time.Millisecond
	var (
		holding atomic.Int32
		overlap atomic.Bool
		mu      sync.Mutex
		log     []string
	)
	started := make(chan string, 16)
	term := func(name string) func(context.Context) {
		return func(ctx context.Context) {
			if holding.Add(1) > 1 {
				overlap.Store(true)
			}
			mu.Lock()
			log = append(log, "+"+name)
			mu.Unlock()
			started <- name
			<-ctx.Done()
			mu.Lock()
			log = append(log, "-"+name)
			mu.Unlock()
			holding.Add(-1)
		}
	}
	nodes := map[string]*Engine{}
	stops := map[string]func(){}
	for _, name := range []string{"n1", "n2", "n3"} {
		e := openTest(t, ns.ClientURL(), Options{LeaseTTL: ttl})
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { defer close(done); e.Lead(ctx, "work", term(name)) }()
		nodes[name] = e
		stops[name] = func() { cancel(); <-done }
		t.Cleanup(stops[name])
	}
	first := <-started
	// The holder stops: it lets the lease go, another takes it at once.
	stops[first]()
	second := <-started
	if second == first {
		t.Fatalf("%s took the lease again after stopping", first)
	}
	// The holder loses NATS: it gives the work up, and another node takes
	// the lease once it ran out.
	nodes[second].nc.Close()
	third := <-started
	if third == first || third == second {
		t.Fatalf("lease went to %s; %s and %s are gone", third, first, second)
	}
	if overlap.Load() {
		mu.Lock()
		defer mu.Unlock()
		t.Fatalf("two nodes held the lease at once: %v", log)
	}
	mu.Lock()
	defer mu.Unlock()
	want := []string{"+" + first, "-" + first, "+" + second, "-" + second, "+" + third}
	if strings.Join(log, " ") != strings.Join(want, " ") {
		t.Fatalf("terms %v, want %v", log, want)
	}
}
