package store

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4"
)

// logKeys counts the log entries of channel actually in Badger.
func logKeys(t testing.TB, s *Store, channel string) int {
	t.Helper()
	n := 0
	err := s.db.View(func(txn *badger.Txn) error {
		opt := badger.DefaultIteratorOptions
		opt.Prefix = logPrefix(channel)
		it := txn.NewIterator(opt)
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			n++
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func TestTrimByCountKeepsNewestAndReadsReportTrimmed(t *testing.T) {
	t.Parallel()
	s := openTest(t, Options{Retention: keepAll})
	for i := range 10 {
		mustAppend(t, s, "count", Record{Payload: payload("%d", i+1)})
	}
	removed, err := s.Trim(context.Background(), "count", Retention{MaxCount: 3})
	if err != nil || removed != 7 {
		t.Fatalf("Trim = %d, %v; want 7", removed, err)
	}
	if n := logKeys(t, s, "count"); n != 3 {
		t.Fatalf("%d entries left in badger, want 3", n)
	}
	reads := []struct {
		after       uint64
		wantFirst   uint64 // first entry returned, 0 for none
		wantTrimmed bool
	}{
		{0, 8, true},
		{5, 8, true},
		{6, 8, true},
		{7, 8, false},
		{9, 10, false},
		{10, 0, false},
		{12, 0, false},
	}
	for _, r := range reads {
		p := mustRead(t, s, "count", r.after, 0)
		got := uint64(0)
		if len(p.Entries) > 0 {
			got = p.Entries[0].Offset
			if string(p.Entries[0].Payload) != string(payload("%d", got)) {
				t.Errorf("entry %d holds %q", got, p.Entries[0].Payload)
			}
		}
		if got != r.wantFirst || p.Trimmed != r.wantTrimmed || p.First != 8 || p.Head != 10 {
			t.Errorf("Read(after %d) = first entry %d, trimmed %v, First %d, Head %d; want %d, %v, 8, 10",
				r.after, got, p.Trimmed, p.First, p.Head, r.wantFirst, r.wantTrimmed)
		}
	}
	if removed, _ := s.Trim(context.Background(), "count", Retention{MaxCount: 3}); removed != 0 {
		t.Fatalf("second Trim removed %d", removed)
	}
	if removed, _ := s.Trim(context.Background(), "count", Retention{MaxCount: 0}); removed != 3 {
		t.Fatalf("Trim to nothing removed %d", removed)
	}
	p := mustRead(t, s, "count", 0, 0)
	if len(p.Entries) != 0 || p.First != 11 || !p.Trimmed {
		t.Fatalf("after trimming everything: %+v", p)
	}
	if a := mustAppend(t, s, "count", Record{Payload: []byte("11")}); a.Offset != 11 {
		t.Fatalf("append after trim got %d", a.Offset)
	}
	if p := mustRead(t, s, "count", 10, 0); len(p.Entries) != 1 || p.First != 11 || p.Trimmed {
		t.Fatalf("read of the new entry: %+v", p)
	}
}

func TestTrimLargeLogInChunks(t *testing.T) {
	t.Parallel()
	s := openTest(t, Options{Retention: keepAll, Durability: NoSync})
	const n = 3*trimChunk + 17
	for i := range n {
		mustAppend(t, s, "big", Record{Payload: payload("%d", i)})
	}
	removed, err := s.Trim(context.Background(), "big", Retention{MaxCount: 10})
	if err != nil || removed != n-10 {
		t.Fatalf("Trim = %d, %v; want %d", removed, err, n-10)
	}
	if e := readAll(t, s, "big", 0); len(e) != 10 || e[0].Offset != n-9 {
		t.Fatalf("kept %d entries from %d", len(e), e[0].Offset)
	}
}

func TestTrimByAgeUsesEntryTime(t *testing.T) {
	t.Parallel()
	clock := newFakeClock()
	s := openTest(t, Options{Now: clock.Now, Retention: keepAll})
	t0 := clock.Now()
	for i := range 4 {
		mustAppend(t, s, "age", Record{Payload: payload("%d", i)}) // Time: Now()
		clock.Advance(time.Hour)
	}
	// Entries at t0, t0+1h, t0+2h, t0+3h; an explicit Time wins over Now.
	mustAppend(t, s, "age", Record{Time: t0.Add(3*time.Hour + 30*time.Minute)})
	steps := []struct {
		now         time.Duration // since t0
		wantRemoved int
		wantFirst   uint64
	}{
		{4 * time.Hour, 0, 1},                 // 24h of age keeps everything
		{25*time.Hour + time.Minute, 2, 3},    // t0 and t0+1h are older than 24h
		{26*time.Hour + 30*time.Minute, 1, 4}, // t0+2h too, t0+3h not yet
		{28 * time.Hour, 2, 6},                // all gone, the explicit Time too
	}
	for i, st := range steps {
		clock.Set(t0.Add(st.now))
		removed, err := s.Trim(context.Background(), "age", Retention{MaxCount: 1000, MaxAge: 24 * time.Hour})
		p := mustRead(t, s, "age", 0, 0)
		if err != nil || removed != st.wantRemoved || p.First != st.wantFirst {
			t.Fatalf("step %d: Trim = %d, %v, First %d; want %d, First %d", i, removed, err, p.First, st.wantRemoved, st.wantFirst)
		}
		if st.wantFirst > 1 && !p.Trimmed {
			t.Fatalf("step %d: read from 0 not marked trimmed", i)
		}
	}
}

func TestBackgroundTrimmerAppliesRetention(t *testing.T) {
	t.Parallel()
	clock := newFakeClock()
	var trimmed atomic.Bool
	s := openTest(t, Options{
		Now:          clock.Now,
		TrimInterval: time.Millisecond,
		Retention: func(ch string) Retention {
			switch ch {
			case "by-count":
				return Retention{MaxCount: 5}
			case "by-age":
				return Retention{MaxCount: 1000, MaxAge: time.Hour}
			}
			trimmed.Store(true)
			return keepAll(ch)
		},
	})
	for i := range 20 {
		mustAppend(t, s, "by-count", Record{Payload: payload("%d", i)})
		mustAppend(t, s, "by-age", Record{Payload: payload("%d", i)})
		mustAppend(t, s, "kept", Record{Payload: payload("%d", i)})
	}
	waitFor(t, "trim by count", func() bool { return mustRead(t, s, "by-count", 0, 0).First == 16 })
	if e := readAll(t, s, "by-count", 0); len(e) != 5 || e[0].Offset != 16 {
		t.Fatalf("by-count kept %+v", e)
	}
	if p := mustRead(t, s, "by-age", 0, 0); len(p.Entries) != 20 {
		t.Fatalf("by-age trimmed before its entries aged: %d left", len(p.Entries))
	}
	clock.Advance(2 * time.Hour)
	waitFor(t, "trim by age", func() bool { return mustRead(t, s, "by-age", 0, 0).First == 21 })
	if n := logKeys(t, s, "by-age"); n != 0 {
		t.Fatalf("%d aged entries left", n)
	}
	waitFor(t, "a trim pass over kept", trimmed.Load)
	if e := readAll(t, s, "kept", 0); len(e) != 20 {
		t.Fatalf("kept channel lost entries: %d left", len(e))
	}
}

func TestMaxCountZeroStoresNothingButAdvancesOffsets(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	none := func(string) Retention { return Retention{MaxCount: 0} }
	s, err := Open(Options{Dir: dir, Retention: none, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		if a := mustAppend(t, s, "none", Record{Payload: []byte("x")}); a.Offset != uint64(i+1) {
			t.Fatalf("append %d got offset %d", i, a.Offset)
		}
	}
	if n := logKeys(t, s, "none"); n != 0 {
		t.Fatalf("%d entries stored", n)
	}
	check := func(s *Store) {
		t.Helper()
		reads := []struct {
			after   uint64
			trimmed bool
		}{{0, true}, {2, true}, {3, false}}
		for _, r := range reads {
			p := mustRead(t, s, "none", r.after, 0)
			if len(p.Entries) != 0 || p.Head != 3 || p.First != 4 || p.Trimmed != r.trimmed {
				t.Fatalf("Read(after %d) = %+v", r.after, p)
			}
		}
	}
	check(s)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = openTest(t, Options{Dir: dir, Retention: none})
	check(s)
}

func TestTrimmedFirstSurvivesReopen(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	s, err := Open(Options{Dir: dir, Retention: keepAll, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	for range 10 {
		mustAppend(t, s, "re", Record{Payload: []byte("x")})
	}
	if _, err := s.Trim(context.Background(), "re", Retention{MaxCount: 4}); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = openTest(t, Options{Dir: dir, Retention: keepAll})
	if p := mustRead(t, s, "re", 0, 0); p.First != 7 || p.Head != 10 || len(p.Entries) != 4 || !p.Trimmed {
		t.Fatalf("after reopen: %+v", p)
	}
	list, err := s.Channels(context.Background(), "", 0)
	if err != nil || len(list) != 1 || list[0].First != 7 {
		t.Fatalf("Channels = %+v, %v", list, err)
	}
}
