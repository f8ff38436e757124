package storetest

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/heraldrt/herald/store"
)

// testIdempotentAppend: a key repeated on a channel within the window
// returns the first result and stores nothing; the same key on another
// channel, or a longer key sharing it as a prefix, is new; a durable
// engine remembers the key across a reopen.
func testIdempotentAppend(t *testing.T, h Harness) {
	f := newFixture(t, h, nil)
	cases := []struct {
		name string
		key  string
	}{
		{"short", "order-17"},
		{"long", strings.Repeat("k", 300)},
	}
	for _, tc := range cases {
		ch := "idem-" + tc.name
		first := mustAppend(t, f.e, ch, store.Record{ID: "m1", Payload: []byte("a"), IdempotencyKey: tc.key})
		mustAppend(t, f.e, ch, store.Record{ID: "m2", Payload: []byte("b")})
		again := mustAppend(t, f.e, ch, store.Record{ID: "m3", Payload: []byte("c"), IdempotencyKey: tc.key})
		want := first
		want.Duplicate = true
		if first.Duplicate || again != want {
			t.Fatalf("%s key: first %+v, repeat %+v; want the repeat to be %+v", tc.name, first, again, want)
		}
		if a := mustAppend(t, f.e, "other-"+tc.name, store.Record{ID: "m4", IdempotencyKey: tc.key}); a.Duplicate || a.Offset != 1 {
			t.Fatalf("%s key on another channel = %+v; want a new record at offset 1", tc.name, a)
		}
		if a := mustAppend(t, f.e, ch, store.Record{ID: "m5", Payload: []byte("d"), IdempotencyKey: tc.key + "x"}); a.Duplicate || a.Offset != 3 {
			t.Fatalf("%s key with a suffix = %+v; want a new record at offset 3", tc.name, a)
		}
		entries := readAll(t, f.e, ch, 0)
		if len(entries) != 3 || string(entries[0].Payload) != "a" || string(entries[1].Payload) != "b" || string(entries[2].Payload) != "d" {
			t.Fatalf("%s key: stored %+v; want a, b, d", tc.name, entries)
		}
	}
	if !h.Durable {
		return
	}
	e := f.reopen()
	for _, tc := range cases {
		a := mustAppend(t, e, "idem-"+tc.name, store.Record{ID: "m6", IdempotencyKey: tc.key})
		if !a.Duplicate || a.Offset != 1 || a.ID != "m1" {
			t.Fatalf("%s key after reopen = %+v; want the first result (offset 1, ID m1)", tc.name, a)
		}
	}
}

// testIdempotentConcurrent: of appends racing with one key, exactly one
// is stored and every other returns its result.
func testIdempotentConcurrent(t *testing.T, h Harness) {
	e := newFixture(t, h, nil).e
	const n = 8
	results := make([]store.Appended, n)
	begin := make(chan struct{})
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			<-begin
			a, err := e.Append(context.Background(), "race", store.Record{ID: fmt.Sprintf("m%d", i), Payload: payload("p%d", i), IdempotencyKey: "same"})
			if err != nil {
				t.Error(err)
			}
			results[i] = a
		})
	}
	close(begin)
	wg.Wait()
	var winner = -1
	for i, a := range results {
		if !a.Duplicate {
			if winner >= 0 {
				t.Fatalf("appends %d and %d with one key were both stored: %+v, %+v", winner, i, results[winner], a)
			}
			winner = i
		}
	}
	if winner < 0 {
		t.Fatalf("no append with the key was stored: %+v", results)
	}
	w := results[winner]
	for i, a := range results {
		if a.Offset != w.Offset || a.Epoch != w.Epoch || a.ID != w.ID {
			t.Fatalf("append %d = %+v; want the stored one's result %+v", i, a, w)
		}
	}
	entries := readAll(t, e, "race", 0)
	if pos := mustHead(t, e, "race"); pos.Head != 1 || len(entries) != 1 || string(entries[0].Payload) != fmt.Sprintf("p%d", winner) {
		t.Fatalf("head %d, records %+v; want the one record of append %d", pos.Head, entries, winner)
	}
}

// testIdempotencyExpires: a key is a duplicate within the window measured
// by the engine's clock, and new again after it.
func testIdempotencyExpires(t *testing.T, h Harness) {
	f := newFixture(t, h, func(o *Options) { o.IdempotencyTTL = time.Hour })
	steps := []struct {
		advance    time.Duration
		wantOffset uint64
		wantDup    bool
	}{
		{0, 1, false},
		{59 * time.Minute, 1, true},
		{2 * time.Minute, 2, false}, // 61 minutes after the first: new
		{30 * time.Minute, 2, true},
		{31 * time.Minute, 3, false}, // 61 minutes after the second
	}
	for i, st := range steps {
		f.clock.Advance(st.advance)
		a := mustAppend(t, f.e, "ttl", store.Record{ID: fmt.Sprintf("m%d", i), IdempotencyKey: "k"})
		if a.Offset != st.wantOffset || a.Duplicate != st.wantDup {
			t.Fatalf("step %d (start+%v): %+v; want offset %d, duplicate %v", i, f.clock.Now().Sub(start), a, st.wantOffset, st.wantDup)
		}
	}
}
