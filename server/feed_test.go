package server

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/heraldrt/herald/store"
)

// TestAFeedGapFailsTheSessionInsteadOfSkipping: should the engine's feed
// ever skip an offset, the sessions on that channel get what precedes the
// gap and are then closed (reason internal) to resume from the log; they
// are never shown what follows the gap as if nothing were missing. Another
// channel in the same batch is delivered whole.
func TestAFeedGapFailsTheSessionInsteadOfSkipping(t *testing.T) {
	t.Parallel()
	srv, st := newTestServer(t, Config{})
	gapped, _ := openSession(t, srv, []string{"room"}, nil, "")
	whole, _ := openSession(t, srv, []string{"other"}, nil, "")
	cg, cw := collect(t, gapped), collect(t, whole)
	publishN(t, srv, "room", 1, 1)
	publishN(t, srv, "other", 1, 1)
	cg.waitFor(t, "room offset 1", countOffsets("room", 1))
	cw.waitFor(t, "other offset 1", countOffsets("other", 1))

	record := func(channel string, offset uint64) store.Committed {
		t.Helper()
		pos, err := st.Head(context.Background(), channel)
		if err != nil {
			t.Fatal(err)
		}
		now := time.Now()
		p, err := encodePayload(newMessageID(now), "message", json.RawMessage(`{}`), now, nil, "")
		if err != nil {
			t.Fatal(err)
		}
		return store.Committed{Channel: channel, Offset: offset, Epoch: pos.Epoch, Record: store.Record{Payload: p}}
	}
	// What a broken engine could report: room skips offset 4.
	srv.committed([]store.Committed{record("room", 2), record("other", 2), record("room", 3), record("room", 5), record("other", 3)})

	items := cw.waitFor(t, "other offsets 2 and 3", countOffsets("other", 3))
	assertRange(t, offsets(items)["other"], 1, 3)
	// A session shown the offsets past the gap would stay open: wait for
	// the end, but not forever.
	select {
	case <-gapped.Done():
	case <-time.After(10 * time.Second):
		cg.mu.Lock()
		got := offsets(cg.items)["room"]
		cg.mu.Unlock()
		t.Fatalf("the session past the gap is still open, holding offsets %v", got)
	}
	if r := gapped.Reason(); r != ReasonInternal {
		t.Fatalf("the session that would see the gap ended with reason %s, want %s", r, ReasonInternal)
	}
	<-cg.done // the collector has recorded the final drain
	cg.mu.Lock()
	got := offsets(cg.items)["room"]
	cg.mu.Unlock()
	assertRange(t, got, 1, 3)
	select {
	case <-whole.Done():
		t.Fatalf("the session on the whole channel ended: %s", whole.Reason())
	default:
	}
}
