package store

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4"
)

// routeByPrefix sends records of channels starting "a" to queue 0 and of
// channels starting "b" to queues 0 and 1.
func routeByPrefix(channel string, _ *Record) uint64 {
	switch {
	case strings.HasPrefix(channel, "a"):
		return 1
	case strings.HasPrefix(channel, "b"):
		return 3
	}
	return 0
}

func readQueue(t *testing.T, s *Store, queue string) []OutboxEntry {
	t.Helper()
	es, err := s.ReadOutbox(context.Background(), queue, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	return es
}

func depth(t *testing.T, s *Store, queue string) (int64, int64) {
	t.Helper()
	d, dead, err := s.OutboxDepth(queue)
	if err != nil {
		t.Fatal(err)
	}
	return d, dead
}

func TestOutboxQueuesRoutedRecordsInCommitOrder(t *testing.T) {
	t.Parallel()
	var notified atomic.Uint64
	s := openTest(t, Options{Outbox: Outbox{Queues: []string{"one", "two"}, Route: routeByPrefix,
		Notify: func(q uint64) { notified.Or(q) }}})
	ctx := context.Background()
	mustAppend(t, s, "a1", Record{Payload: []byte("p1")})
	mustAppend(t, s, "c", Record{Payload: []byte("not routed")})
	b := mustAppend(t, s, "b1", Record{Payload: []byte("p2"), IdempotencyKey: "k"})
	if dup := mustAppend(t, s, "b1", Record{Payload: []byte("p2"), IdempotencyKey: "k"}); !dup.Duplicate {
		t.Fatal("the second append should be a duplicate")
	}
	res, err := s.AppendBatch(ctx, []ChannelRecord{{Channel: "a2", Record: Record{Payload: []byte("p3")}}, {Channel: "b1", Record: Record{Payload: []byte("p4")}}})
	if err != nil || res[0].Err != nil || res[1].Err != nil {
		t.Fatal(err, res)
	}

	type got struct {
		seq     uint64
		channel string
		offset  uint64
		payload string
	}
	list := func(queue string) []got {
		var out []got
		for _, e := range readQueue(t, s, queue) {
			out = append(out, got{e.Seq, e.Channel, e.Offset, string(e.Payload)})
			if e.Epoch == "" || e.Time.IsZero() {
				t.Errorf("%s: entry %d without epoch or time", queue, e.Seq)
			}
		}
		return out
	}
	wantOne := []got{{1, "a1", 1, "p1"}, {2, "b1", 1, "p2"}, {3, "a2", 1, "p3"}, {4, "b1", 2, "p4"}}
	// One counter numbers the entries of every queue.
	wantTwo := []got{{2, "b1", 1, "p2"}, {4, "b1", 2, "p4"}}
	if g := list("one"); !slices.Equal(g, wantOne) {
		t.Errorf("queue one = %v, want %v", g, wantOne)
	}
	if g := list("two"); !slices.Equal(g, wantTwo) {
		t.Errorf("queue two = %v, want %v", g, wantTwo)
	}
	if d, _ := depth(t, s, "one"); d != 4 {
		t.Errorf("depth of one = %d, want 4", d)
	}
	if notified.Load() != 3 {
		t.Errorf("notified queues %b, want 11", notified.Load())
	}
	if b.Epoch == "" {
		t.Fatal("no epoch")
	}
	if _, err := s.ReadOutbox(ctx, "three", 0, 0); !errors.Is(err, ErrNoQueue) {
		t.Errorf("reading an unknown queue: %v, want ErrNoQueue", err)
	}
	// Paging: after and limit.
	page, err := s.ReadOutbox(ctx, "one", 1, 2)
	if err != nil || len(page) != 2 || page[0].Seq != 2 || page[1].Seq != 3 {
		t.Errorf("ReadOutbox(after 1, limit 2) = %v, %v", page, err)
	}
}

func TestOutboxRemoveBuryReviveAcrossReopen(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	clock := newFakeClock()
	opts := Options{Dir: dir, Now: clock.Now, Outbox: Outbox{Queues: []string{"one"}, Route: routeByPrefix}}
	s := openTest(t, opts)
	ctx := context.Background()
	for i := range 5 {
		mustAppend(t, s, "a", Record{Payload: payload("m%d", i)})
	}
	if err := s.Enqueue(ctx, "one", []OutboxEntry{{Payload: []byte(`{"life":1}`)}}); err != nil {
		t.Fatal(err)
	}
	es := readQueue(t, s, "one")
	if len(es) != 6 || es[5].Seq != 6 || es[5].Channel != "" || string(es[5].Payload) != `{"life":1}` || !es[5].Time.Equal(clock.Now()) {
		t.Fatalf("after Enqueue: %+v", es)
	}
	if err := s.Remove(ctx, "one", []uint64{1, 2}); err != nil {
		t.Fatal(err)
	}
	if err := s.Bury(ctx, "one", es[2:4], "410 Gone"); err != nil {
		t.Fatal(err)
	}
	if d, dead := depth(t, s, "one"); d != 2 || dead != 2 {
		t.Fatalf("depth %d dead %d, want 2 and 2", d, dead)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	s, err := Open(opts)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if d, dead := depth(t, s, "one"); d != 2 || dead != 2 {
		t.Fatalf("after reopen: depth %d dead %d, want 2 and 2", d, dead)
	}
	dead, err := s.ReadDead(ctx, "one", 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(dead) != 2 || dead[0].Seq != 3 || string(dead[0].Payload) != "m2" || dead[0].Reason != "410 Gone" || !dead[0].Died.Equal(clock.Now()) {
		t.Fatalf("dead letters: %+v", dead)
	}
	if err := s.Revive(ctx, "one", dead[:1]); err != nil {
		t.Fatal(err)
	}
	es = readQueue(t, s, "one")
	var seqs []uint64
	for _, e := range es {
		seqs = append(seqs, e.Seq)
	}
	// The revived entry is queued again at the end, under a sequence no
	// entry or dead letter had.
	if !slices.Equal(seqs, []uint64{5, 6, 7}) || string(es[2].Payload) != "m2" || es[2].Offset != 3 || es[2].Channel != "a" {
		t.Fatalf("after Revive: seqs %v, last %+v", seqs, es[len(es)-1])
	}
	if d, dead := depth(t, s, "one"); d != 3 || dead != 1 {
		t.Fatalf("after Revive: depth %d dead %d, want 3 and 1", d, dead)
	}
	mustAppend(t, s, "a", Record{Payload: []byte("m5")})
	if es := readQueue(t, s, "one"); es[len(es)-1].Seq != 8 {
		t.Fatalf("next entry after reopen has seq %d, want 8", es[len(es)-1].Seq)
	}
}

// TestOutboxPinsTheLogEntriesItRefersTo: a queued record's log entry is
// kept past the channel's retention until no queue holds it (the entry
// refers to it instead of copying it), across a reopen; a channel that
// keeps nothing has its payloads copied into the outbox instead.
func TestOutboxPinsTheLogEntriesItRefersTo(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	ctx := context.Background()
	opts := Options{Dir: dir, TrimInterval: time.Hour,
		Retention: func(ch string) Retention {
			if ch == "a_none" {
				return Retention{MaxCount: 0}
			}
			return Retention{MaxCount: 1}
		},
		Outbox: Outbox{Queues: []string{"one"}, Route: routeByPrefix}}
	s := openTest(t, opts)
	for i := range 3 {
		mustAppend(t, s, "a", Record{Payload: payload("m%d", i)})
	}
	mustAppend(t, s, "a_none", Record{Payload: []byte("kept nowhere else")})
	trim := func(s *Store, want uint64) {
		t.Helper()
		if _, err := s.Trim(ctx, "a", Retention{MaxCount: 1}); err != nil {
			t.Fatal(err)
		}
		if p := mustRead(t, s, "a", 0, 0); p.First != want {
			t.Fatalf("the log of a kept from %d, want %d", p.First, want)
		}
	}
	trim(s, 1) // all three are queued
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s, err := Open(opts)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	trim(s, 1) // still, after a reopen
	es := readQueue(t, s, "one")
	if len(es) != 4 || string(es[0].Payload) != "m0" || string(es[2].Payload) != "m2" || string(es[3].Payload) != "kept nowhere else" {
		t.Fatalf("outbox: %+v", es)
	}
	if err := s.Remove(ctx, "one", []uint64{1}); err != nil {
		t.Fatal(err)
	}
	trim(s, 2) // m0 is done: it goes; m1 is still queued
	if err := s.Remove(ctx, "one", []uint64{2, 3}); err != nil {
		t.Fatal(err)
	}
	trim(s, 3) // retention again: the newest one

	// Were a referred log entry gone all the same, its entry comes back
	// without a payload (its reader dead-letters what it cannot decode).
	mustAppend(t, s, "a", Record{Payload: []byte("m3")})
	if err := s.apply([]kvOp{{key: logKey("a", 4), del: true}}); err != nil {
		t.Fatal(err)
	}
	if es := readQueue(t, s, "one"); len(es) != 2 || es[1].Offset != 4 || es[1].Payload != nil {
		t.Fatalf("an entry whose log entry is gone: %+v", es)
	}
}

func TestOutboxDropsEntriesOfRecordsBeyondTheHead(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	opts := Options{Dir: dir, Durability: NoSync, Outbox: Outbox{Queues: []string{"one"}, Route: routeByPrefix}}
	s := openTest(t, opts)
	a := mustAppend(t, s, "a", Record{Payload: []byte("stored")})
	// What a crash between two transactions of a NoSync batch leaves: the
	// entries of offset 2, but not the head that stores it.
	e := OutboxEntry{Time: time.Now(), Channel: "a", Offset: 2, Epoch: a.Epoch, Payload: []byte("unstored")}
	if err := s.apply([]kvOp{{key: chunkKey(2), value: chunkValue([]chunkEntry{{bits: 1 << s.outbox.queues[0].bit, e: e}})}}); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s2, err := Open(opts)
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	es := readQueue(t, s2, "one")
	if len(es) != 1 || string(es[0].Payload) != "stored" {
		t.Fatalf("outbox after reopen: %+v", es)
	}
	if d, _ := depth(t, s2, "one"); d != 1 {
		t.Fatalf("depth %d, want 1", d)
	}
}

func TestOutboxOptionsAreChecked(t *testing.T) {
	t.Parallel()
	many := make([]string, 65)
	for i := range many {
		many[i] = fmt.Sprint("q", i)
	}
	for _, o := range []Outbox{
		{Queues: many},
		{Queues: []string{"a", "a"}},
		{Queues: []string{""}},
	} {
		if _, err := Open(Options{InMemory: true, Outbox: o}); err == nil {
			t.Errorf("Open accepted %d queues %q", len(o.Queues), o.Queues[0])
		}
	}
}

// hasPayload reports whether entry seq is still stored in a chunk.
func hasPayload(t *testing.T, s *Store, seq uint64) bool {
	t.Helper()
	found := false
	err := s.db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: []byte{kindChunk}, PrefetchValues: true})
		defer it.Close()
		for it.Seek([]byte{kindChunk}); it.ValidForPrefix([]byte{kindChunk}); it.Next() {
			first := binary.BigEndian.Uint64(it.Item().Key()[1:])
			err := it.Item().Value(func(v []byte) error {
				return parseChunk(first, v, func(got, _ uint64, _ []byte) bool {
					found = found || got == seq
					return true
				})
			})
			if err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return found
}

func TestOutboxSharesOnePayloadAmongQueues(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	opts := Options{Dir: dir, Outbox: Outbox{Queues: []string{"one", "two"}, Route: routeByPrefix}}
	s := openTest(t, opts)
	ctx := context.Background()
	mustAppend(t, s, "b", Record{Payload: []byte("shared")})
	mustAppend(t, s, "b", Record{Payload: []byte("second")})
	if err := s.Remove(ctx, "one", []uint64{1}); err != nil {
		t.Fatal(err)
	}
	// Removing again, or what was never queued, changes nothing.
	if err := s.Remove(ctx, "one", []uint64{1, 1, 99}); err != nil {
		t.Fatal(err)
	}
	if d, _ := depth(t, s, "one"); d != 1 {
		t.Fatalf("depth of one = %d, want 1", d)
	}
	if es := readQueue(t, s, "two"); len(es) != 2 || string(es[0].Payload) != "shared" || !hasPayload(t, s, 1) {
		t.Fatalf("queue two after one removed its entry: %+v", es)
	}
	if err := s.Remove(ctx, "two", []uint64{1}); err != nil {
		t.Fatal(err)
	}
	if hasPayload(t, s, 1) {
		t.Fatal("the payload outlived its last queue key")
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	// The reference counts come back from the keys: entry 2 is held by
	// both queues, and goes with the second removal only.
	s, err := Open(opts)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := s.Remove(ctx, "two", []uint64{2}); err != nil {
		t.Fatal(err)
	}
	if !hasPayload(t, s, 2) {
		t.Fatal("the payload went while queue one still held it")
	}
	if err := s.Bury(ctx, "one", readQueue(t, s, "one"), "test"); err != nil {
		t.Fatal(err)
	}
	if hasPayload(t, s, 2) {
		t.Fatal("the payload outlived its last queue key (buried)")
	}
	if dead, err := s.ReadDead(ctx, "one", 0, 0); err != nil || len(dead) != 1 || string(dead[0].Payload) != "second" {
		t.Fatalf("dead letters %+v, %v", dead, err)
	}
}

func TestOutboxQueuesComeAndGoWithTheConfiguration(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	all := func(string, *Record) uint64 { return 1<<8 - 1 }
	s, err := Open(Options{Dir: dir, Outbox: Outbox{Queues: []string{"one", "two"}, Route: all}})
	if err != nil {
		t.Fatal(err)
	}
	mustAppend(t, s, "a", Record{Payload: []byte("m1")})
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	// "one" is gone, "three" is new: it starts after what is queued, and
	// the entry stays for "two" only.
	s, err = Open(Options{Dir: dir, Outbox: Outbox{Queues: []string{"three", "two"}, Route: all}})
	if err != nil {
		t.Fatal(err)
	}
	if es := readQueue(t, s, "three"); len(es) != 0 {
		t.Fatalf("a new queue got old entries: %+v", es)
	}
	if es := readQueue(t, s, "two"); len(es) != 1 || string(es[0].Payload) != "m1" {
		t.Fatalf("queue two lost its entry: %+v", es)
	}
	mustAppend(t, s, "a", Record{Payload: []byte("m2")})
	if es := readQueue(t, s, "three"); len(es) != 1 || string(es[0].Payload) != "m2" {
		t.Fatalf("queue three: %+v", es)
	}
	if err := s.Remove(context.Background(), "two", []uint64{1}); err != nil {
		t.Fatal(err)
	}
	if hasPayload(t, s, 1) {
		t.Fatal("an entry no configured queue holds was kept")
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s, err = Open(Options{Dir: dir, Outbox: Outbox{Queues: []string{"three", "two"}, Route: all}})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if es := readQueue(t, s, "two"); len(es) != 1 || string(es[0].Payload) != "m2" {
		t.Fatalf("after reopen, queue two holds %+v, want m2 only", es)
	}
	if d, _ := depth(t, s, "three"); d != 1 {
		t.Fatalf("depth of three %d, want 1", d)
	}
}

func TestOutboxBatchIsOneChunkKeptUntilEveryEntryIsDone(t *testing.T) {
	t.Parallel()
	s := openTest(t, Options{Dir: t.TempDir(), Outbox: Outbox{Queues: []string{"one"}, Route: routeByPrefix}})
	ctx := context.Background()
	res, err := s.AppendBatch(ctx, []ChannelRecord{
		{Channel: "a1", Record: Record{Payload: []byte("x")}},
		{Channel: "c", Record: Record{Payload: []byte("not routed")}},
		{Channel: "a2", Record: Record{Payload: []byte("y")}},
		{Channel: "a1", Record: Record{Payload: []byte("z")}},
	})
	if err != nil || res[3].Err != nil {
		t.Fatal(err, res)
	}
	chunks := func() int {
		n := 0
		_ = s.db.View(func(txn *badger.Txn) error {
			n64, _ := countKeys(txn, []byte{kindChunk})
			n = int(n64)
			return nil
		})
		return n
	}
	if n := chunks(); n != 1 {
		t.Fatalf("%d chunks for one batch, want 1", n)
	}
	if err := s.Remove(ctx, "one", []uint64{1, 3}); err != nil {
		t.Fatal(err)
	}
	if es := readQueue(t, s, "one"); len(es) != 1 || es[0].Seq != 2 || string(es[0].Payload) != "y" || es[0].Channel != "a2" {
		t.Fatalf("after two of three removed: %+v", es)
	}
	if n := chunks(); n != 1 {
		t.Fatalf("the chunk went with an entry still queued (%d chunks)", n)
	}
	if err := s.Remove(ctx, "one", []uint64{2}); err != nil {
		t.Fatal(err)
	}
	if n := chunks(); n != 0 {
		t.Fatalf("%d chunks left once every entry is done", n)
	}
}
