package store

import (
	"context"
	"testing"
)

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
