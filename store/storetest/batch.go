package storetest

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/heraldrt/herald/store"
)

// testAppendBatch: one answer per record, in order; records of a channel
// get consecutive offsets in their order; a refused record stores nothing
// and stops nothing; idempotency keys work within the batch and across
// batches; the feed reports every stored record (after Close at the
// latest).
func testAppendBatch(t *testing.T, h Harness) {
	f := newFixture(t, h, nil)
	e := f.e
	rec := feed(t, e)
	ctx := context.Background()
	mustAppend(t, e, "b", store.Record{Payload: []byte("before")})
	mustAppend(t, e, "k", store.Record{ID: "first", IdempotencyKey: "seen"})
	recs := []store.ChannelRecord{
		{Channel: "a", Record: store.Record{ID: "a1", Payload: []byte("a1")}},
		{Channel: "b", Record: store.Record{ID: "b2", Payload: []byte("b2")}},
		{Channel: "", Record: store.Record{Payload: []byte("no channel")}},
		{Channel: "a", Record: store.Record{ID: "a2", Payload: []byte("a2"), IdempotencyKey: "x"}},
		{Channel: "a", Record: store.Record{ID: "again", Payload: []byte("again"), IdempotencyKey: "x"}},
		{Channel: "k", Record: store.Record{ID: "retry", IdempotencyKey: "seen"}},
		{Channel: "b", Record: store.Record{ID: "b3", Payload: []byte("b3")}},
	}
	res, err := e.AppendBatch(ctx, recs)
	if err != nil {
		t.Fatal(err)
	}
	if len(res) != len(recs) {
		t.Fatalf("%d answers for %d records", len(res), len(recs))
	}
	want := []struct {
		offset uint64
		id     string
		dup    bool
		err    error
	}{
		{1, "a1", false, nil}, {2, "b2", false, nil}, {0, "", false, store.ErrBadChannel},
		{2, "a2", false, nil}, {2, "a2", true, nil}, {1, "first", true, nil}, {3, "b3", false, nil},
	}
	for i, w := range want {
		r := res[i]
		if w.err != nil {
			if !errors.Is(r.Err, w.err) {
				t.Errorf("record %d: %v, want %v", i, r.Err, w.err)
			}
			continue
		}
		if r.Err != nil || r.Offset != w.offset || r.ID != w.id || r.Duplicate != w.dup || r.Epoch == "" {
			t.Errorf("record %d: %+v, want offset %d id %q duplicate %v", i, r, w.offset, w.id, w.dup)
		}
	}
	for ch, payloads := range map[string][]string{"a": {"a1", "a2"}, "b": {"before", "b2", "b3"}} {
		entries := readAll(t, e, ch, 0)
		if len(entries) != len(payloads) {
			t.Fatalf("channel %s holds %d records, want %d", ch, len(entries), len(payloads))
		}
		for i, p := range payloads {
			if string(entries[i].Payload) != p {
				t.Errorf("channel %s offset %d holds %q, want %q", ch, entries[i].Offset, entries[i].Payload, p)
			}
		}
	}
	f.close()
	per := checkFed(t, rec.all())
	if len(per["a"]) != 2 || len(per["b"]) != 3 || len(per["k"]) != 1 {
		t.Fatalf("the feed reported %d, %d and %d records of a, b and k; want 2, 3 and 1", len(per["a"]), len(per["b"]), len(per["k"]))
	}
}

// testConcurrentAppendBatches: batches appended at once to the same
// channels never interleave: each batch's records of a channel take
// consecutive offsets.
func testConcurrentAppendBatches(t *testing.T, h Harness) {
	e := newFixture(t, h, nil).e
	const batches, perChannel = 16, 10
	channels := []string{"p", "q"}
	var wg sync.WaitGroup
	for b := range batches {
		wg.Go(func() {
			var recs []store.ChannelRecord
			for i := range perChannel {
				for _, ch := range channels {
					recs = append(recs, store.ChannelRecord{Channel: ch, Record: store.Record{Payload: fmt.Appendf(nil, "%d-%d", b, i)}})
				}
			}
			res, err := e.AppendBatch(context.Background(), recs)
			if err != nil {
				t.Error(err)
				return
			}
			for _, r := range res {
				if r.Err != nil {
					t.Error(r.Err)
				}
			}
		})
	}
	wg.Wait()
	for _, ch := range channels {
		entries := readAll(t, e, ch, 0)
		if len(entries) != batches*perChannel {
			t.Fatalf("channel %s holds %d records, want %d", ch, len(entries), batches*perChannel)
		}
		for i := 0; i < len(entries); i += perChannel {
			batch, _, _ := strings.Cut(string(entries[i].Payload), "-")
			for j := range perChannel {
				if got := string(entries[i+j].Payload); got != fmt.Sprintf("%s-%d", batch, j) {
					t.Fatalf("channel %s offset %d holds %q: batch %s's records were split", ch, entries[i+j].Offset, got, batch)
				}
			}
		}
	}
}
