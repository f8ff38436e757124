package storetest

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/heraldrt/herald/store"
)

// checkFed checks that the feed reported, per channel, offsets 1, 2, …
// with no gap, no repeat and no reordering across calls, in one epoch.
func checkFed(t *testing.T, records []fed) map[string][]fed {
	t.Helper()
	per := map[string][]fed{}
	for _, r := range records {
		list := per[r.Channel]
		if want := uint64(len(list) + 1); r.Offset != want {
			t.Fatalf("%s: the feed reported offset %d where %d was next", r.Channel, r.Offset, want)
		}
		if len(list) > 0 && r.Epoch != list[0].Epoch {
			t.Fatalf("%s: the feed reported epoch %s after %s", r.Channel, r.Epoch, list[0].Epoch)
		}
		per[r.Channel] = append(list, r)
	}
	return per
}

// testFeedOrder: every acknowledged append — on channels that keep their
// records and on one that keeps none — is reported exactly once, after
// Close at the latest, per channel in contiguous ascending offsets, with
// its ID, payload and Tag; nothing else is reported, and nothing after
// Close has returned.
func testFeedOrder(t *testing.T, h Harness) {
	f := newFixture(t, h, func(o *Options) {
		o.Retention = func(ch string) store.Retention {
			if ch == "c0" {
				return store.Retention{MaxCount: 0}
			}
			return keepAll(ch)
		}
	})
	var closed atomic.Bool
	var late atomic.Int64
	rec := &recorder{}
	if err := f.e.Feed(func(b []store.Committed) {
		if closed.Load() {
			late.Add(1)
		}
		rec.receive(b)
	}); err != nil {
		t.Fatal(err)
	}
	channels := []string{"c0", "c1", "c2", "c3"}
	const goroutines, each = 16, 40
	type ack struct {
		offset uint64
		epoch  string
		id     string
	}
	acks := make([]map[[2]int]ack, goroutines)
	var wg sync.WaitGroup
	for g := range goroutines {
		acks[g] = map[[2]int]ack{}
		wg.Go(func() {
			for i := range each {
				ch := channels[(g+i)%len(channels)]
				id := fmt.Sprintf("m%d-%d", g, i)
				a, err := f.e.Append(context.Background(), ch, store.Record{ID: id, Payload: payload("p%d-%d", g, i), Tag: [2]int{g, i}})
				if err != nil {
					t.Error(err)
					return
				}
				acks[g][[2]int{g, i}] = ack{a.Offset, a.Epoch, id}
			}
		})
	}
	wg.Wait()
	f.close() // returns after the feed's last call
	closed.Store(true)
	if t.Failed() {
		return
	}
	per := checkFed(t, rec.all())
	seen := map[[2]int]bool{}
	total := 0
	for ch, list := range per {
		total += len(list)
		for _, r := range list {
			tag, ok := r.Tag.([2]int)
			if !ok {
				t.Fatalf("%s: offset %d reported with tag %v, want the one appended", ch, r.Offset, r.Tag)
			}
			if seen[tag] {
				t.Fatalf("append %v reported twice", tag)
			}
			seen[tag] = true
			a := acks[tag[0]][tag]
			if a.offset != r.Offset || a.epoch != r.Epoch || a.id != r.ID || r.Payload != fmt.Sprintf("p%d-%d", tag[0], tag[1]) {
				t.Fatalf("append %v acknowledged as %+v, reported as %+v", tag, a, r)
			}
		}
	}
	if total != goroutines*each || len(per["c0"]) != goroutines*each/len(channels) {
		t.Fatalf("the feed reported %d records (%d of c0, which keeps none); want %d (%d)",
			total, len(per["c0"]), goroutines*each, goroutines*each/len(channels))
	}
	if n := late.Load(); n > 0 {
		t.Fatalf("the feed was called %d times after Close returned", n)
	}
}

// testFeedNoOverlap: the receiver is called one call at a time, each call
// finishing before the next starts. The counter it keeps without a lock
// lets the race detector check the ordering too.
func testFeedNoOverlap(t *testing.T, h Harness) {
	f := newFixture(t, h, nil)
	var inFlight, overlaps atomic.Int64
	calls, records := 0, 0 // written only by the receiver: no lock, by contract
	if err := f.e.Feed(func(b []store.Committed) {
		if inFlight.Add(1) != 1 {
			overlaps.Add(1)
		}
		calls++
		records += len(b)
		runtime.Gosched() // widen the window for an overlapping call
		inFlight.Add(-1)
	}); err != nil {
		t.Fatal(err)
	}
	const goroutines, each = 16, 30
	var wg sync.WaitGroup
	for g := range goroutines {
		wg.Go(func() {
			for i := range each {
				if _, err := f.e.Append(context.Background(), fmt.Sprintf("n%d", (g+i)%8), store.Record{Payload: []byte("x")}); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	f.close() // returns after the last call: calls and records are ours now
	if n := overlaps.Load(); n > 0 {
		t.Fatalf("%d of %d feed calls overlapped another", n, calls)
	}
	if records != goroutines*each {
		t.Fatalf("the feed reported %d records in %d calls; want %d", records, calls, goroutines*each)
	}
}

// testFeedVisible: while the receiver holds a record, Head already reports
// it and Read returns it: a reader that registered for the feed and then
// read the head misses nothing. Reads answer while the receiver runs.
func testFeedVisible(t *testing.T, h Harness) {
	f := newFixture(t, h, nil)
	calls := make(chan []fed)
	resume := make(chan struct{})
	stop := make(chan struct{})
	var wg sync.WaitGroup
	defer wg.Wait()
	defer close(stop) // first: a failed test lets a waiting receiver, and so the appenders, go
	if err := f.e.Feed(func(b []store.Committed) {
		batch := make([]fed, 0, len(b))
		for _, c := range b {
			batch = append(batch, fed{Channel: c.Channel, Offset: c.Offset, Epoch: c.Epoch, Payload: string(c.Record.Payload)})
		}
		select {
		case calls <- batch:
		case <-stop:
			return
		}
		select {
		case <-resume:
		case <-stop:
		}
	}); err != nil {
		t.Fatal(err)
	}
	const goroutines, each = 4, 10
	for g := range goroutines {
		wg.Go(func() {
			for i := range each {
				p := payload("g%d-%d", g, i)
				if _, err := f.e.Append(context.Background(), fmt.Sprintf("v%d", g%2), store.Record{Payload: p}); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	timeout := time.NewTimer(time.Minute)
	defer timeout.Stop()
	for seen := 0; seen < goroutines*each; {
		var batch []fed
		select {
		case batch = <-calls:
		case <-timeout.C:
			t.Fatalf("the feed reported %d of %d records", seen, goroutines*each)
		}
		for _, r := range batch {
			// A Head or Read that waits for the receiver would hang: the
			// deadline turns that into a failure that names it.
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			pos, errH := f.e.Head(ctx, r.Channel)
			p, errR := f.e.Read(ctx, r.Channel, r.Offset-1, 1)
			cancel()
			if errH != nil || errR != nil {
				t.Fatalf("%s: while the receiver holds offset %d, Head: %v, Read: %v", r.Channel, r.Offset, errH, errR)
			}
			if pos.Head < r.Offset || pos.Epoch != r.Epoch {
				t.Fatalf("%s: the feed holds offset %d (epoch %s) while Head reports %+v", r.Channel, r.Offset, r.Epoch, pos)
			}
			if len(p.Entries) != 1 || p.Entries[0].Offset != r.Offset || string(p.Entries[0].Payload) != r.Payload {
				t.Fatalf("%s: the feed holds offset %d while Read after %d returns %+v", r.Channel, r.Offset, r.Offset-1, p)
			}
		}
		seen += len(batch)
		resume <- struct{}{}
	}
}

// testFeedSkipsDuplicates: an append that hits an idempotency key stores
// nothing and is not reported.
func testFeedSkipsDuplicates(t *testing.T, h Harness) {
	f := newFixture(t, h, nil)
	rec := feed(t, f.e)
	steps := []struct {
		id, key string
		dup     bool
	}{
		{"m1", "k1", false},
		{"m2", "k1", true},
		{"m3", "", false},
		{"m4", "k2", false},
		{"m5", "k1", true},
		{"m6", "k2", true},
	}
	for _, st := range steps {
		if a := mustAppend(t, f.e, "dups", store.Record{ID: st.id, IdempotencyKey: st.key}); a.Duplicate != st.dup {
			t.Fatalf("append %s: %+v; want duplicate %v", st.id, a, st.dup)
		}
	}
	f.close()
	var ids []string
	for _, r := range checkFed(t, rec.all())["dups"] {
		ids = append(ids, r.ID)
	}
	if fmt.Sprint(ids) != "[m1 m3 m4]" {
		t.Fatalf("the feed reported %v; want [m1 m3 m4]", ids)
	}
}

// testFeedStartsWhenItIsSet: records committed before Feed are not
// reported; those appended after it are.
func testFeedStartsWhenItIsSet(t *testing.T, h Harness) {
	f := newFixture(t, h, nil)
	mustAppend(t, f.e, "a", store.Record{ID: "before"})
	rec := feed(t, f.e)
	mustAppend(t, f.e, "a", store.Record{ID: "after"})
	mustAppend(t, f.e, "b", store.Record{ID: "first of b"})
	f.close()
	var got []string
	for _, r := range rec.all() {
		got = append(got, fmt.Sprintf("%s:%d:%s", r.Channel, r.Offset, r.ID))
	}
	if want := "[a:2:after b:1:first of b]"; fmt.Sprint(got) != want {
		t.Fatalf("the feed reported %v; want %s", got, want)
	}
}

// testFeedSetOnce: a second Feed fails with ErrFeedSet and the first
// receiver keeps the feed.
func testFeedSetOnce(t *testing.T, h Harness) {
	f := newFixture(t, h, nil)
	first := feed(t, f.e)
	var second atomic.Int64
	if err := f.e.Feed(func(b []store.Committed) { second.Add(int64(len(b))) }); !errors.Is(err, store.ErrFeedSet) {
		t.Fatalf("second Feed: %v, want ErrFeedSet", err)
	}
	mustAppend(t, f.e, "once", store.Record{ID: "m"})
	f.close()
	if got := first.all(); len(got) != 1 || got[0].ID != "m" || second.Load() != 0 {
		t.Fatalf("first receiver got %+v, second %d records; want the record in the first only", got, second.Load())
	}
}
