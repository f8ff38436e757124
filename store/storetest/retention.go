package storetest

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/heraldrt/herald/store"
)

// checkKept checks that a Read of channel after offset after reports
// head, first and trimmed, and returns the kept records from
// max(after+1, first) to head holding the payloads want gives them.
func checkKept(t *testing.T, e store.Engine, channel string, after, head, first uint64, want func(offset uint64) string) {
	t.Helper()
	p := mustRead(t, e, channel, after, 0)
	trimmed := after+1 < first && after < head
	if p.Head != head || p.First != first || p.Trimmed != trimmed {
		t.Fatalf("Read(%q, after %d) = head %d, first %d, trimmed %v; want %d, %d, %v",
			channel, after, p.Head, p.First, p.Trimmed, head, first, trimmed)
	}
	from := max(after+1, first)
	n := uint64(0)
	if head >= from {
		n = head - from + 1
	}
	if uint64(len(p.Entries)) != n {
		t.Fatalf("Read(%q, after %d) returned %d records; want %d, from %d to %d", channel, after, len(p.Entries), n, from, head)
	}
	for i, en := range p.Entries {
		if off := from + uint64(i); en.Offset != off || string(en.Payload) != want(off) {
			t.Fatalf("Read(%q, after %d): record %d is offset %d holding %q; want offset %d holding %q",
				channel, after, i, en.Offset, en.Payload, off, want(off))
		}
	}
}

// checkListed checks the head and first Channels reports for channel.
func checkListed(t *testing.T, e store.Engine, channel string, head, first uint64) {
	t.Helper()
	for after := ""; ; {
		list, err := e.Channels(context.Background(), after, 0)
		if err != nil {
			t.Fatal(err)
		}
		if len(list) == 0 {
			t.Fatalf("Channels does not list %q", channel)
		}
		for _, c := range list {
			if c.Name == channel {
				if c.Head != head || c.First != first {
					t.Fatalf("Channels lists %q with head %d, first %d; want %d, %d", channel, c.Head, c.First, head, first)
				}
				return
			}
		}
		after = list[len(list)-1].Name
	}
}

// testRetentionByCount: retention by count removes only the oldest
// records, raises First, leaves offsets and the head alone, reports
// Trimmed exactly when records right after the position are gone, and
// (durable engines) holds across a reopen.
func testRetentionByCount(t *testing.T, h Harness) {
	f := newFixture(t, h, func(o *Options) {
		o.Retention = func(ch string) store.Retention {
			if ch == "count" {
				return store.Retention{MaxCount: 3}
			}
			return keepAll(ch)
		}
	})
	for i := 1; i <= 10; i++ {
		mustAppend(t, f.e, "count", store.Record{Payload: payload("%d", i)})
		mustAppend(t, f.e, "kept", store.Record{Payload: payload("%d", i)})
	}
	f.trim("count")
	f.trim("kept")
	same := func(off uint64) string { return fmt.Sprint(off) }
	for _, after := range []uint64{0, 5, 6, 7, 9, 10, 12} {
		checkKept(t, f.e, "count", after, 10, 8, same)
	}
	checkListed(t, f.e, "count", 10, 8)
	checkKept(t, f.e, "kept", 0, 10, 1, same)

	if a := mustAppend(t, f.e, "count", store.Record{Payload: []byte("11")}); a.Offset != 11 {
		t.Fatalf("append after a trim got offset %d, want 11", a.Offset)
	}
	f.trim("count")
	checkKept(t, f.e, "count", 0, 11, 9, same)
	checkKept(t, f.e, "count", 8, 11, 9, same)
	if !h.Durable {
		return
	}
	e := f.reopen()
	checkKept(t, e, "count", 0, 11, 9, same)
	checkListed(t, e, "count", 11, 9)
	if a := mustAppend(t, e, "count", store.Record{Payload: []byte("12")}); a.Offset != 12 {
		t.Fatalf("append after reopen got offset %d, want 12", a.Offset)
	}
}

// testRetentionByAge: retention by age measures record times against the
// engine's clock and removes only records older than the age, oldest
// first; a record keeps the Time it was appended with (or the clock's).
func testRetentionByAge(t *testing.T, h Harness) {
	f := newFixture(t, h, func(o *Options) {
		o.Retention = func(string) store.Retention { return store.Retention{MaxCount: 1000, MaxAge: 24 * time.Hour} }
	})
	t0 := f.clock.Now()
	times := map[uint64]time.Time{}
	for i := range 4 {
		a := mustAppend(t, f.e, "age", store.Record{Payload: payload("%d", i+1)}) // Time: the clock's
		times[a.Offset] = f.clock.Now()
		f.clock.Advance(time.Hour)
	}
	explicit := t0.Add(3*time.Hour + 30*time.Minute)
	a := mustAppend(t, f.e, "age", store.Record{Time: explicit, Payload: []byte("5")})
	times[a.Offset] = explicit
	for _, en := range mustRead(t, f.e, "age", 0, 0).Entries {
		if got, want := en.Time.Truncate(time.Millisecond), times[en.Offset]; !got.Equal(want) {
			t.Fatalf("record %d has time %v, want %v", en.Offset, en.Time, want)
		}
	}
	// Records at t0, t0+1h, t0+2h, t0+3h and t0+3h30.
	steps := []struct {
		now       time.Duration // since t0
		wantFirst uint64
	}{
		{4 * time.Hour, 1},                 // nothing is 24h old
		{25*time.Hour + time.Minute, 3},    // t0 and t0+1h are
		{26*time.Hour + 30*time.Minute, 4}, // t0+2h too, t0+3h not yet
		{28 * time.Hour, 6},                // all of them
	}
	same := func(off uint64) string { return fmt.Sprint(off) }
	for _, st := range steps {
		f.clock.Set(t0.Add(st.now))
		f.trim("age")
		checkKept(t, f.e, "age", 0, 5, st.wantFirst, same)
		checkListed(t, f.e, "age", 5, st.wantFirst)
	}
}

// testRetentionOfNothing: a channel whose retention keeps nothing still
// gets contiguous offsets, but every read of its past reports Trimmed,
// across a reopen too.
func testRetentionOfNothing(t *testing.T, h Harness) {
	f := newFixture(t, h, func(o *Options) {
		o.Retention = func(string) store.Retention { return store.Retention{MaxCount: 0} }
	})
	for i := 1; i <= 3; i++ {
		if a := mustAppend(t, f.e, "none", store.Record{Payload: []byte("x")}); a.Offset != uint64(i) {
			t.Fatalf("append %d got offset %d", i, a.Offset)
		}
	}
	f.trim("none")
	none := func(uint64) string { return "" }
	check := func(e store.Engine) {
		t.Helper()
		for _, after := range []uint64{0, 2, 3} {
			checkKept(t, e, "none", after, 3, 4, none)
		}
	}
	check(f.e)
	if h.Durable {
		check(f.reopen())
	}
}
