package store

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestIdempotentAppendReturnsFirstResultAndStoresNothing(t *testing.T) {
	t.Parallel()
	long := strings.Repeat("k", 300) // stored by hash
	cases := []struct {
		name string
		key  string
	}{
		{"short key", "order-17"},
		{"long key", long},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var mu sync.Mutex
			var feed []Committed
			s := openTest(t, Options{})
			mustFeed(t, s, func(b []Committed) {
				mu.Lock()
				feed = append(feed, b...)
				mu.Unlock()
			})
			first := mustAppend(t, s, "idem", Record{ID: "m1", Payload: []byte("a"), IdempotencyKey: tc.key})
			mustAppend(t, s, "idem", Record{ID: "m2", Payload: []byte("b")})
			again := mustAppend(t, s, "idem", Record{ID: "m3", Payload: []byte("c"), IdempotencyKey: tc.key})
			want := first
			want.Duplicate = true
			if again != want {
				t.Fatalf("repeat = %+v, want %+v", again, want)
			}
			// The same key on another channel, and a key differing only
			// after the first 128 bytes, are new.
			if a := mustAppend(t, s, "other", Record{ID: "m4", IdempotencyKey: tc.key}); a.Duplicate || a.Offset != 1 {
				t.Fatalf("same key on another channel = %+v", a)
			}
			if a := mustAppend(t, s, "idem", Record{ID: "m5", IdempotencyKey: tc.key + "x"}); a.Duplicate || a.Offset != 3 {
				t.Fatalf("other key = %+v", a)
			}
			if e := readAll(t, s, "idem", 0); len(e) != 3 || string(e[0].Payload) != "a" || string(e[1].Payload) != "b" {
				t.Fatalf("entries = %+v", e)
			}
			waitFor(t, "commit feed", func() bool {
				mu.Lock()
				defer mu.Unlock()
				return len(feed) == 4
			})
			mu.Lock()
			defer mu.Unlock()
			for _, c := range feed {
				if c.Record.ID == "m3" {
					t.Fatalf("duplicate reached the feed: %+v", c)
				}
			}
		})
	}
}

func TestIdempotentAppendsInOneBatchStoreOnce(t *testing.T) {
	t.Parallel()
	g := newGate()
	s := openTest(t, Options{})
	mustFeed(t, s, g.receive)
	blockCommitter(t, s, g)

	const n = 5
	results := make(chan Appended, n)
	for i := range n {
		go func() {
			a, err := s.Append(context.Background(), "batch", Record{ID: string(payload("m%d", i)), IdempotencyKey: "same"})
			if err != nil {
				t.Error(err)
			}
			results <- a
		}()
	}
	waitFor(t, "appends queued", func() bool { return s.queued() == n })
	g.release()
	var firsts []Appended
	var dups []Appended
	for range n {
		a := <-results
		if a.Duplicate {
			dups = append(dups, a)
		} else {
			firsts = append(firsts, a)
		}
	}
	if len(firsts) != 1 || len(dups) != n-1 {
		t.Fatalf("got %d first results and %d duplicates", len(firsts), len(dups))
	}
	for _, d := range dups {
		if d.Offset != firsts[0].Offset || d.ID != firsts[0].ID || d.Epoch != firsts[0].Epoch {
			t.Fatalf("duplicate %+v differs from first %+v", d, firsts[0])
		}
	}
	if pos, _ := s.Head(context.Background(), "batch"); pos.Head != 1 {
		t.Fatalf("head = %d, want 1", pos.Head)
	}
	waitFor(t, "commit feed", func() bool { return len(g.committed()) == 2 }) // gate + one
}

func TestIdempotencyKeyExpiresAfterTTL(t *testing.T) {
	t.Parallel()
	clock := newFakeClock()
	s := openTest(t, Options{Now: clock.Now, IdempotencyTTL: time.Hour})
	steps := []struct {
		advance    time.Duration
		wantOffset uint64
		wantDup    bool
	}{
		{0, 1, false},
		{59 * time.Minute, 1, true},
		{time.Minute, 2, false}, // expired exactly at the TTL: a new append
		{30 * time.Minute, 2, true},
	}
	for i, st := range steps {
		clock.Advance(st.advance)
		a := mustAppend(t, s, "ttl", Record{ID: string(payload("m%d", i)), IdempotencyKey: "k"})
		if a.Offset != st.wantOffset || a.Duplicate != st.wantDup {
			t.Fatalf("step %d (t0+%v): got %+v, want offset %d duplicate %v",
				i, clock.Now().Sub(newFakeClock().Now()), a, st.wantOffset, st.wantDup)
		}
	}
}
