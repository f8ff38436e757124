package storetest

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/heraldrt/herald/store"
)

// testOffsetsAreContiguous: offsets start at 1 and grow by exactly 1 per
// channel, a channel's epoch stays, and an acknowledged record is visible
// to Head and Read as soon as Append returns.
func testOffsetsAreContiguous(t *testing.T, h Harness) {
	e := newFixture(t, h, nil).e
	steps := []struct {
		channel string
		want    uint64
	}{
		{"a", 1}, {"a", 2}, {"b", 1}, {"a", 3}, {"c", 1}, {"b", 2}, {"b", 3}, {"a", 4},
	}
	epochs := map[string]string{}
	for i, st := range steps {
		id := fmt.Sprintf("m%d", i)
		a := mustAppend(t, e, st.channel, store.Record{ID: id, Payload: payload("p%d", i)})
		if a.Offset != st.want || a.ID != id || a.Duplicate || a.Epoch == "" {
			t.Fatalf("step %d: append to %q = %+v; want offset %d, ID %s, an epoch, no duplicate", i, st.channel, a, st.want, id)
		}
		if prev, ok := epochs[st.channel]; ok && prev != a.Epoch {
			t.Fatalf("step %d: epoch of %q changed from %q to %q", i, st.channel, prev, a.Epoch)
		}
		epochs[st.channel] = a.Epoch
		if pos := mustHead(t, e, st.channel); pos.Head < a.Offset || pos.Epoch != a.Epoch {
			t.Fatalf("step %d: Head(%q) = %+v right after append %+v", i, st.channel, pos, a)
		}
		p := mustRead(t, e, st.channel, a.Offset-1, 1)
		if len(p.Entries) != 1 || p.Entries[0].Offset != a.Offset || string(p.Entries[0].Payload) != fmt.Sprintf("p%d", i) {
			t.Fatalf("step %d: Read(%q, %d, 1) right after append = %+v", i, st.channel, a.Offset-1, p)
		}
	}
	for ch, head := range map[string]uint64{"a": 4, "b": 3, "c": 1} {
		if pos := mustHead(t, e, ch); pos.Head != head || pos.Epoch != epochs[ch] {
			t.Fatalf("Head(%q) = %+v; want head %d, epoch %s", ch, pos, head, epochs[ch])
		}
		entries := readAll(t, e, ch, 0)
		if uint64(len(entries)) != head || entries[0].Offset != 1 {
			t.Fatalf("%q: read %d records from offset %d, want %d from 1", ch, len(entries), entries[0].Offset, head)
		}
	}
}

// testConcurrentAppends: many goroutines on several channels get every
// offset exactly once, a goroutine's successive appends get rising
// offsets, heads match and every offset holds what was acknowledged.
func testConcurrentAppends(t *testing.T, h Harness) {
	e := newFixture(t, h, nil).e
	const goroutines, each = 32, 60
	channels := []string{"w", "x", "y", "z"}
	type ack struct {
		channel string
		offset  uint64
		payload string
	}
	acks := make([][]ack, goroutines)
	var wg sync.WaitGroup
	for g := range goroutines {
		wg.Go(func() {
			for i := range each {
				ch := channels[(g+i)%len(channels)]
				p := fmt.Sprintf("g%d-%d", g, i)
				a, err := e.Append(context.Background(), ch, store.Record{Payload: []byte(p)})
				if err != nil {
					t.Errorf("append: %v", err)
					return
				}
				acks[g] = append(acks[g], ack{ch, a.Offset, p})
			}
		})
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	held := map[string]map[uint64]string{}
	for _, ch := range channels {
		held[ch] = map[uint64]string{}
	}
	for g, list := range acks {
		last := map[string]uint64{}
		for _, a := range list {
			if prev, dup := held[a.channel][a.offset]; dup {
				t.Fatalf("%s: offset %d acknowledged twice (%s and %s)", a.channel, a.offset, prev, a.payload)
			}
			if a.offset <= last[a.channel] {
				t.Fatalf("%s: goroutine %d got offset %d after %d", a.channel, g, a.offset, last[a.channel])
			}
			last[a.channel] = a.offset
			held[a.channel][a.offset] = a.payload
		}
	}
	for _, ch := range channels {
		n := uint64(len(held[ch]))
		if pos := mustHead(t, e, ch); pos.Head != n {
			t.Fatalf("%s: head %d after %d acknowledged appends", ch, pos.Head, n)
		}
		entries := readAll(t, e, ch, 0)
		if uint64(len(entries)) != n {
			t.Fatalf("%s: read %d records, want %d", ch, len(entries), n)
		}
		for i, en := range entries {
			if en.Offset != uint64(i+1) || string(en.Payload) != held[ch][en.Offset] {
				t.Fatalf("%s: record %d is offset %d holding %q; acknowledged %q", ch, i, en.Offset, en.Payload, held[ch][en.Offset])
			}
		}
	}
}

// testHeadCreatesEpoch: Read of a channel never used creates nothing; the
// first Head creates the epoch, later ones and appends keep it, and
// concurrent first Heads agree on it.
func testHeadCreatesEpoch(t *testing.T, h Harness) {
	e := newFixture(t, h, nil).e
	ctx := context.Background()
	p := mustRead(t, e, "never", 0, 0)
	if p.Epoch != "" || p.Head != 0 || p.First != 1 || len(p.Entries) != 0 || p.Trimmed {
		t.Fatalf("Read of a channel never used = %+v; want an empty page with First 1", p)
	}
	if list, err := e.Channels(ctx, "", 0); err != nil || len(list) != 0 {
		t.Fatalf("Read created a channel: Channels = %+v, %v", list, err)
	}
	first := mustHead(t, e, "fresh")
	if first.Head != 0 || first.Epoch == "" {
		t.Fatalf("first Head = %+v; want head 0 and an epoch", first)
	}
	if again := mustHead(t, e, "fresh"); again != first {
		t.Fatalf("second Head = %+v; want %+v", again, first)
	}
	if p := mustRead(t, e, "fresh", 0, 0); p.Epoch != first.Epoch || p.Head != 0 || p.First != 1 || p.Trimmed {
		t.Fatalf("Read after Head = %+v", p)
	}
	if a := mustAppend(t, e, "fresh", store.Record{}); a.Offset != 1 || a.Epoch != first.Epoch {
		t.Fatalf("append after Head = %+v; want offset 1, epoch %s", a, first.Epoch)
	}
	var wg sync.WaitGroup
	epochs := make([]string, 16)
	for i := range epochs {
		wg.Go(func() {
			pos, err := e.Head(ctx, "raced")
			if err != nil {
				t.Error(err)
			}
			epochs[i] = pos.Epoch
		})
	}
	wg.Wait()
	for _, ep := range epochs {
		if ep == "" || ep != epochs[0] {
			t.Fatalf("concurrent first Heads saw epochs %q", epochs)
		}
	}
}

// testEpochSurvivesReopen: heads, epochs and records — of a channel with
// records and of one only created by Head — are the same after a reopen,
// and appends continue at head+1 in the same epoch.
func testEpochSurvivesReopen(t *testing.T, h Harness) {
	f := newFixture(t, h, nil)
	var epoch string
	for i := range 5 {
		epoch = mustAppend(t, f.e, "kept", store.Record{Payload: payload("m%d", i)}).Epoch
	}
	empty := mustHead(t, f.e, "empty")
	for round := range 2 {
		e := f.reopen()
		for ch, want := range map[string]store.Position{"kept": {Epoch: epoch, Head: uint64(5 + round)}, "empty": empty} {
			if pos := mustHead(t, e, ch); pos != want {
				t.Fatalf("round %d: Head(%q) = %+v; want %+v", round, ch, pos, want)
			}
		}
		entries := readAll(t, e, "kept", 0)
		if len(entries) != 5+round {
			t.Fatalf("round %d: %d records after reopen, want %d", round, len(entries), 5+round)
		}
		for i, en := range entries[:5] {
			if en.Offset != uint64(i+1) || string(en.Payload) != fmt.Sprintf("m%d", i) {
				t.Fatalf("round %d: record %d = offset %d %q", round, i, en.Offset, en.Payload)
			}
		}
		if a := mustAppend(t, e, "kept", store.Record{Payload: []byte("after reopen")}); a.Offset != uint64(6+round) || a.Epoch != epoch {
			t.Fatalf("round %d: append after reopen = %+v; want offset %d, epoch %s", round, a, 6+round, epoch)
		}
	}
}

// testLostLogNewEpoch: when the engine's state is lost, a channel is new
// again: nothing to read, a new epoch, offsets from 1.
func testLostLogNewEpoch(t *testing.T, h Harness) {
	f := newFixture(t, h, nil)
	for range 3 {
		mustAppend(t, f.e, "c", store.Record{Payload: []byte("x")})
	}
	old := mustHead(t, f.e, "c")
	e := f.lose()
	if p := mustRead(t, e, "c", 0, 0); p.Epoch != "" || p.Head != 0 || len(p.Entries) != 0 {
		t.Fatalf("Read after the log was lost = %+v; want a channel never used", p)
	}
	if list, err := e.Channels(context.Background(), "", 0); err != nil || len(list) != 0 {
		t.Fatalf("Channels after the log was lost = %+v, %v", list, err)
	}
	pos := mustHead(t, e, "c")
	if pos.Head != 0 || pos.Epoch == "" || pos.Epoch == old.Epoch {
		t.Fatalf("Head after the log was lost = %+v; want head 0 and an epoch other than %s", pos, old.Epoch)
	}
	if a := mustAppend(t, e, "c", store.Record{}); a.Offset != 1 || a.Epoch != pos.Epoch {
		t.Fatalf("append after the log was lost = %+v; want offset 1, epoch %s", a, pos.Epoch)
	}
}

// testReadPages: pages start right after after, stop at limit or at the
// head, and limit <= 0 means a default page of at least 1,000.
func testReadPages(t *testing.T, h Harness) {
	e := newFixture(t, h, nil).e
	for i := 1; i <= 10; i++ {
		mustAppend(t, e, "page", store.Record{Payload: payload("%d", i)})
	}
	cases := []struct {
		after     uint64
		limit     int
		wantFirst uint64 // 0: no records
		wantN     int
	}{
		{0, 3, 1, 3},
		{3, 3, 4, 3},
		{8, 5, 9, 2},
		{9, 1, 10, 1},
		{10, 5, 0, 0},
		{15, 5, 0, 0},
		{0, 0, 1, 10},
		{0, -1, 1, 10},
		{2, 1000, 3, 8},
	}
	for _, tc := range cases {
		p := mustRead(t, e, "page", tc.after, tc.limit)
		if p.Head != 10 || p.First != 1 || p.Trimmed || p.Epoch == "" || len(p.Entries) != tc.wantN {
			t.Errorf("Read(after %d, limit %d) = head %d, first %d, trimmed %v, %d records; want 10, 1, false, %d",
				tc.after, tc.limit, p.Head, p.First, p.Trimmed, len(p.Entries), tc.wantN)
			continue
		}
		for i, en := range p.Entries {
			want := tc.wantFirst + uint64(i)
			if en.Offset != want || string(en.Payload) != fmt.Sprint(want) {
				t.Errorf("Read(after %d, limit %d): record %d is offset %d holding %q; want %d", tc.after, tc.limit, i, en.Offset, en.Payload, want)
			}
		}
	}
	// A default page holds at least 1,000 records. Appending from several
	// goroutines lets a group-committing engine batch them.
	var wg sync.WaitGroup
	for range 10 {
		wg.Go(func() {
			for range 109 {
				if _, err := e.Append(context.Background(), "page", store.Record{Payload: []byte("more")}); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	if p := mustRead(t, e, "page", 0, 0); len(p.Entries) < 1000 {
		t.Fatalf("default page of 1,100 records holds %d, want at least 1,000", len(p.Entries))
	}
}

// testReadBeyondHead: under concurrent appends, a page never holds a
// record beyond the head it reports, is contiguous from after+1, and is
// shorter than its limit only when it reaches that head.
func testReadBeyondHead(t *testing.T, h Harness) {
	e := newFixture(t, h, nil).e
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var wg sync.WaitGroup
	defer wg.Wait()
	for g := range 8 {
		wg.Go(func() {
			for i := 0; ctx.Err() == nil; i++ {
				if _, err := e.Append(context.Background(), "live", store.Record{Payload: payload("%d-%d", g, i)}); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	const limit = 50
	after := uint64(0)
	for after < 1000 && !t.Failed() {
		p := mustRead(t, e, "live", after, limit)
		for i, en := range p.Entries {
			if en.Offset != after+uint64(i)+1 || en.Offset > p.Head {
				t.Fatalf("Read(after %d): record %d has offset %d, head %d", after, i, en.Offset, p.Head)
			}
		}
		if n := len(p.Entries); n < limit && (n > 0 && p.Entries[n-1].Offset != p.Head || n == 0 && after < p.Head) {
			t.Fatalf("Read(after %d, limit %d) returned %d records, not reaching head %d", after, limit, n, p.Head)
		}
		if p.Trimmed {
			t.Fatalf("Read(after %d) reported trimmed: %+v", after, p)
		}
		if n := len(p.Entries); n > 0 {
			after = p.Entries[n-1].Offset
		}
	}
	cancel()
}

// testChannels: Channels lists created channels (not those only read) in
// byte order of names, after a name, a page at a time.
func testChannels(t *testing.T, h Harness) {
	e := newFixture(t, h, nil).e
	ctx := context.Background()
	for _, ch := range []string{"c", "a", "b/2", "b"} {
		mustAppend(t, e, ch, store.Record{})
	}
	mustAppend(t, e, "b/2", store.Record{})
	mustHead(t, e, "d")
	mustRead(t, e, "e", 0, 0)
	if err := e.PutState(ctx, "f", []byte("state, not a channel")); err != nil {
		t.Fatal(err)
	}
	names := func(list []store.ChannelInfo) string {
		var b strings.Builder
		for _, c := range list {
			b.WriteString(c.Name + " ")
		}
		return strings.TrimSpace(b.String())
	}
	cases := []struct {
		after string
		limit int
		want  string
	}{
		{"", 0, "a b b/2 c d"},
		{"", 2, "a b"},
		{"b", 2, "b/2 c"},
		{"a0", 0, "b b/2 c d"},
		{"d", 0, ""},
	}
	for _, tc := range cases {
		list, err := e.Channels(ctx, tc.after, tc.limit)
		if err != nil {
			t.Fatal(err)
		}
		if got := names(list); got != tc.want {
			t.Errorf("Channels(%q, %d) = %q, want %q", tc.after, tc.limit, got, tc.want)
		}
	}
	list, _ := e.Channels(ctx, "b", 1)
	if pos := mustHead(t, e, "b/2"); len(list) != 1 || list[0].Head != 2 || list[0].First != 1 || list[0].Epoch != pos.Epoch {
		t.Fatalf("Channels info of b/2 = %+v; want head 2, first 1, epoch %s", list, pos.Epoch)
	}
	if list, _ := e.Channels(ctx, "c", 1); len(list) != 1 || list[0].Head != 0 || list[0].First != 1 || list[0].Epoch == "" {
		t.Fatalf("Channels info of d, created by Head = %+v", list)
	}

	// Paging through many channels meets each once, in order.
	want := []string{"a", "b", "b/2", "c", "d"}
	for i := range 40 {
		ch := fmt.Sprintf("many/%02d", i)
		mustAppend(t, e, ch, store.Record{})
		want = append(want, ch)
	}
	var got []string
	for after := ""; ; {
		page, err := e.Channels(ctx, after, 7)
		if err != nil {
			t.Fatal(err)
		}
		if len(page) > 7 {
			t.Fatalf("Channels(%q, 7) returned %d", after, len(page))
		}
		if len(page) == 0 {
			break
		}
		for _, c := range page {
			got = append(got, c.Name)
		}
		after = page[len(page)-1].Name
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("paging with limit 7 listed %v, want %v", got, want)
	}
}

// testBadChannelNames: names of 1 to 255 bytes without NUL are opaque and
// accepted; others are refused with ErrBadChannel and create nothing.
func testBadChannelNames(t *testing.T, h Harness) {
	e := newFixture(t, h, nil).e
	ctx := context.Background()
	for _, name := range []string{"", strings.Repeat("x", 256), "a\x00b"} {
		_, errA := e.Append(ctx, name, store.Record{})
		_, errR := e.Read(ctx, name, 0, 0)
		_, errH := e.Head(ctx, name)
		for op, err := range map[string]error{"Append": errA, "Read": errR, "Head": errH} {
			if !errors.Is(err, store.ErrBadChannel) {
				t.Errorf("%s(%q): %v, want ErrBadChannel", op, name, err)
			}
		}
	}
	if list, _ := e.Channels(ctx, "", 0); len(list) != 0 {
		t.Fatalf("refused names created channels: %+v", list)
	}
	for _, name := range []string{strings.Repeat("y", 255), "a b\n/é", "\xff"} {
		a := mustAppend(t, e, name, store.Record{Payload: []byte(name)})
		if p := mustRead(t, e, name, 0, 0); a.Offset != 1 || len(p.Entries) != 1 || string(p.Entries[0].Payload) != name {
			t.Errorf("channel %q: append %+v, read %+v", name, a, p)
		}
	}
}

// testDoneContext: an Append or AppendBatch whose context is done before
// it starts stores nothing, and a Head with one creates nothing.
func testDoneContext(t *testing.T, h Harness) {
	e := newFixture(t, h, nil).e
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := e.Append(ctx, "ctx", store.Record{}); !errors.Is(err, context.Canceled) {
		t.Fatalf("Append with a cancelled context: %v, want context.Canceled", err)
	}
	if _, err := e.Head(ctx, "ctx"); !errors.Is(err, context.Canceled) {
		t.Fatalf("Head with a cancelled context: %v, want context.Canceled", err)
	}
	if res, err := e.AppendBatch(ctx, []store.ChannelRecord{{Channel: "ctx"}}); !errors.Is(err, context.Canceled) || res != nil {
		t.Fatalf("AppendBatch with a cancelled context: %v, %v; want context.Canceled and no answers", res, err)
	}
	if p := mustRead(t, e, "ctx", 0, 0); p.Epoch != "" {
		t.Fatalf("a cancelled Head created the channel: %+v", p)
	}
	if a := mustAppend(t, e, "ctx", store.Record{}); a.Offset != 1 {
		t.Fatalf("next append got offset %d, want 1", a.Offset)
	}
}

// testCloseKeepsAcknowledged: appends racing Close either are answered
// (and then stored, and fed before Close returns) or get ErrClosed (and
// stored nothing); a durable engine reopened holds exactly the answered
// ones, in the same epochs, and continues after them.
func testCloseKeepsAcknowledged(t *testing.T, h Harness) {
	f := newFixture(t, h, nil)
	rec := feed(t, f.e)
	channels := []string{"k0", "k1", "k2"}
	var (
		mu     sync.Mutex
		acked  = map[string]map[uint64]string{}
		epochs = map[string]string{}
		total  atomic.Int64
		enough = make(chan struct{})
		once   sync.Once
		wg     sync.WaitGroup
		done   = make(chan struct{})
	)
	for _, ch := range channels {
		acked[ch] = map[uint64]string{}
	}
	for g := range 8 {
		wg.Go(func() {
			for i := 0; ; i++ {
				ch := channels[(g+i)%len(channels)]
				p := fmt.Sprintf("g%d-%d", g, i)
				a, err := f.e.Append(context.Background(), ch, store.Record{Payload: []byte(p)})
				if errors.Is(err, store.ErrClosed) {
					return
				}
				if err != nil {
					t.Errorf("append racing Close: %v, want success or ErrClosed", err)
					return
				}
				mu.Lock()
				acked[ch][a.Offset] = p
				epochs[ch] = a.Epoch
				mu.Unlock()
				if total.Add(1) == 300 {
					once.Do(func() { close(enough) })
				}
			}
		})
	}
	go func() { wg.Wait(); close(done) }()
	select {
	case <-enough:
	case <-done: // every appender failed: reported above
	}
	f.close()
	<-done
	if t.Failed() {
		return
	}

	// Close returned after the feed's last call, which held every answer.
	got := map[string]map[uint64]string{}
	for _, r := range rec.all() {
		if got[r.Channel] == nil {
			got[r.Channel] = map[uint64]string{}
		}
		got[r.Channel][r.Offset] = r.Payload
	}
	for _, ch := range channels {
		if fmt.Sprint(got[ch]) != fmt.Sprint(acked[ch]) {
			t.Fatalf("%s: the feed reported %d records by Close, %d were acknowledged", ch, len(got[ch]), len(acked[ch]))
		}
	}
	if !h.Durable {
		return
	}
	e := f.open()
	for _, ch := range channels {
		n := uint64(len(acked[ch]))
		pos := mustHead(t, e, ch)
		if pos.Head != n || pos.Epoch != epochs[ch] {
			t.Fatalf("%s after reopen: %+v; want head %d (the acknowledged appends), epoch %s", ch, pos, n, epochs[ch])
		}
		entries := readAll(t, e, ch, 0)
		if uint64(len(entries)) != n {
			t.Fatalf("%s after reopen: %d records, want %d", ch, len(entries), n)
		}
		for _, en := range entries {
			if string(en.Payload) != acked[ch][en.Offset] {
				t.Fatalf("%s after reopen: offset %d holds %q, acknowledged %q", ch, en.Offset, en.Payload, acked[ch][en.Offset])
			}
		}
		if a := mustAppend(t, e, ch, store.Record{}); a.Offset != n+1 || a.Epoch != epochs[ch] {
			t.Fatalf("%s: append after reopen = %+v; want offset %d", ch, a, n+1)
		}
	}
}

// testCallsAfterClose: every method returns ErrClosed after Close, and
// Close again is not an error.
func testCallsAfterClose(t *testing.T, h Harness) {
	f := newFixture(t, h, nil)
	mustAppend(t, f.e, "c", store.Record{})
	f.close()
	ctx := context.Background()
	e := f.e
	calls := map[string]error{}
	_, calls["Append"] = e.Append(ctx, "c", store.Record{})
	_, calls["AppendBatch"] = e.AppendBatch(ctx, []store.ChannelRecord{{Channel: "c"}})
	_, calls["Read"] = e.Read(ctx, "c", 0, 0)
	_, calls["Head"] = e.Head(ctx, "c")
	_, calls["Channels"] = e.Channels(ctx, "", 0)
	calls["Feed"] = e.Feed(func([]store.Committed) {})
	calls["PutState"] = e.PutState(ctx, "k", nil)
	_, _, calls["GetState"] = e.GetState(ctx, "k")
	calls["DeleteState"] = e.DeleteState(ctx, "k")
	calls["ScanState"] = e.ScanState(ctx, "", func(string, []byte) error { return nil })
	for name, err := range calls {
		if !errors.Is(err, store.ErrClosed) {
			t.Errorf("%s after Close: %v, want ErrClosed", name, err)
		}
	}
	if err := e.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}
