package store

import (
	"bytes"
	"context"
	"errors"
	"regexp"
	"strings"
	"sync"
	"testing"

	"github.com/dgraph-io/badger/v4"
)

var epochPattern = regexp.MustCompile(`^[0-9a-f]{12}$`)

func TestOffsetsStartAtOneAndAreContiguousPerChannel(t *testing.T) {
	t.Parallel()
	s := openTest(t, Options{})
	steps := []struct {
		channel string
		want    uint64
	}{
		{"a", 1}, {"a", 2}, {"b", 1}, {"a", 3}, {"c", 1}, {"b", 2}, {"b", 3}, {"a", 4},
	}
	epochs := map[string]string{}
	for i, st := range steps {
		a := mustAppend(t, s, st.channel, Record{ID: "m", Payload: payload("%d", i)})
		if a.Offset != st.want {
			t.Fatalf("step %d: append to %q got offset %d, want %d", i, st.channel, a.Offset, st.want)
		}
		if !epochPattern.MatchString(a.Epoch) {
			t.Fatalf("step %d: epoch %q is not 12 lowercase hex characters", i, a.Epoch)
		}
		if e, ok := epochs[st.channel]; ok && e != a.Epoch {
			t.Fatalf("step %d: epoch of %q changed from %q to %q", i, st.channel, e, a.Epoch)
		}
		epochs[st.channel] = a.Epoch
		if a.ID != "m" || a.Duplicate {
			t.Fatalf("step %d: got %+v", i, a)
		}
	}
	if epochs["a"] == epochs["b"] || epochs["b"] == epochs["c"] {
		t.Fatalf("channels share an epoch: %v", epochs)
	}
	for ch, head := range map[string]uint64{"a": 4, "b": 3, "c": 1} {
		pos, err := s.Head(context.Background(), ch)
		if err != nil || pos.Head != head || pos.Epoch != epochs[ch] {
			t.Fatalf("Head(%q) = %+v, %v; want head %d epoch %s", ch, pos, err, head, epochs[ch])
		}
	}
}

func TestConcurrentAppendsGetEveryOffsetOnce(t *testing.T) {
	t.Parallel()
	s := openTest(t, Options{Retention: keepAll})
	const goroutines, each = 64, 200
	channels := []string{"x", "y"}
	got := make([][]Appended, goroutines)
	var wg sync.WaitGroup
	for g := range goroutines {
		wg.Go(func() {
			for i := range each {
				a, err := s.Append(context.Background(), channels[g%2], Record{Payload: payload("%d-%d", g, i)})
				if err != nil {
					t.Errorf("append: %v", err)
					return
				}
				got[g] = append(got[g], a)
			}
		})
	}
	wg.Wait()
	for ci, ch := range channels {
		seen := make(map[uint64]string)
		for g := ci; g < goroutines; g += 2 {
			last := uint64(0)
			for i, a := range got[g] {
				if prev, dup := seen[a.Offset]; dup {
					t.Fatalf("%s: offset %d given twice (%s and %d-%d)", ch, a.Offset, prev, g, i)
				}
				if a.Offset <= last {
					t.Fatalf("%s: goroutine %d got offset %d after %d", ch, g, a.Offset, last)
				}
				last = a.Offset
				seen[a.Offset] = string(payload("%d-%d", g, i))
			}
		}
		n := uint64(goroutines / 2 * each)
		entries := readAll(t, s, ch, 0)
		if uint64(len(entries)) != n {
			t.Fatalf("%s: read %d entries, want %d", ch, len(entries), n)
		}
		for i, e := range entries {
			if e.Offset != uint64(i+1) {
				t.Fatalf("%s: entry %d has offset %d", ch, i, e.Offset)
			}
			if string(e.Payload) != seen[e.Offset] {
				t.Fatalf("%s: offset %d holds %q, acknowledged %q", ch, e.Offset, e.Payload, seen[e.Offset])
			}
		}
	}
}

func TestReopenKeepsHeadsEpochsAndEntries(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	open := func() *Store {
		s, err := Open(Options{Dir: dir, Logger: testLogger(t), Retention: keepAll})
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	ctx := context.Background()
	s := open()
	var epoch string
	for i := range 5 {
		epoch = mustAppend(t, s, "kept", Record{Payload: payload("m%d", i)}).Epoch
	}
	empty, err := s.Head(ctx, "empty")
	if err != nil || empty.Head != 0 || !epochPattern.MatchString(empty.Epoch) {
		t.Fatalf("Head(empty) = %+v, %v", empty, err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	for round := range 2 {
		s = open()
		for ch, want := range map[string]Position{"kept": {Epoch: epoch, Head: uint64(5 + round)}, "empty": empty} {
			pos, err := s.Head(ctx, ch)
			if err != nil || pos != want {
				t.Fatalf("round %d: Head(%q) = %+v, %v; want %+v", round, ch, pos, err, want)
			}
		}
		entries := readAll(t, s, "kept", 0)
		if len(entries) != 5+round {
			t.Fatalf("round %d: %d entries after reopen", round, len(entries))
		}
		for i, e := range entries[:5] {
			if e.Offset != uint64(i+1) || string(e.Payload) != string(payload("m%d", i)) {
				t.Fatalf("round %d: entry %d = %d %q", round, i, e.Offset, e.Payload)
			}
		}
		a := mustAppend(t, s, "kept", Record{Payload: []byte("after reopen")})
		if a.Offset != uint64(6+round) || a.Epoch != epoch {
			t.Fatalf("round %d: append after reopen = %+v", round, a)
		}
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
	}
}

func TestHeadCreatesEpochOnceAndReadDoesNot(t *testing.T) {
	t.Parallel()
	s := openTest(t, Options{})
	ctx := context.Background()

	p := mustRead(t, s, "never", 0, 0)
	if p.Epoch != "" || p.Head != 0 || p.First != 1 || len(p.Entries) != 0 || p.Trimmed {
		t.Fatalf("Read of a never-used channel = %+v", p)
	}
	if list, _ := s.Channels(ctx, "", 0); len(list) != 0 {
		t.Fatalf("Read created a channel: %+v", list)
	}

	first, err := s.Head(ctx, "fresh")
	if err != nil || first.Head != 0 || !epochPattern.MatchString(first.Epoch) {
		t.Fatalf("Head = %+v, %v", first, err)
	}
	again, err := s.Head(ctx, "fresh")
	if err != nil || again != first {
		t.Fatalf("second Head = %+v, %v; want %+v", again, err, first)
	}
	if a := mustAppend(t, s, "fresh", Record{}); a.Offset != 1 || a.Epoch != first.Epoch {
		t.Fatalf("append after Head = %+v", a)
	}

	// Concurrent Heads of a new channel agree on one epoch.
	var wg sync.WaitGroup
	epochs := make([]string, 16)
	for i := range epochs {
		wg.Go(func() {
			pos, err := s.Head(ctx, "raced")
			if err != nil {
				t.Error(err)
			}
			epochs[i] = pos.Epoch
		})
	}
	wg.Wait()
	for _, e := range epochs {
		if e != epochs[0] || e == "" {
			t.Fatalf("concurrent Heads saw epochs %v", epochs)
		}
	}
}

func TestChannelsListsInNameOrder(t *testing.T) {
	t.Parallel()
	s := openTest(t, Options{})
	ctx := context.Background()
	for _, ch := range []string{"c", "a", "b/2", "b"} {
		mustAppend(t, s, ch, Record{})
	}
	if _, err := s.Head(ctx, "d"); err != nil {
		t.Fatal(err)
	}
	names := func(list []ChannelInfo) string {
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
		list, err := s.Channels(ctx, tc.after, tc.limit)
		if err != nil {
			t.Fatal(err)
		}
		if got := names(list); got != tc.want {
			t.Errorf("Channels(%q, %d) = %q, want %q", tc.after, tc.limit, got, tc.want)
		}
	}
	list, _ := s.Channels(ctx, "b/2", 1)
	if len(list) != 1 || list[0].Head != 1 || list[0].First != 1 || !epochPattern.MatchString(list[0].Epoch) {
		t.Fatalf("Channels info = %+v", list)
	}
}

func TestReadNeverReturnsEntriesBeyondItsHead(t *testing.T) {
	t.Parallel()
	s := openTest(t, Options{Retention: keepAll})
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := 0; ctx.Err() == nil; i++ {
				if _, err := s.Append(context.Background(), "live", Record{Payload: payload("%d-%d", g, i)}); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	after := uint64(0)
	for after < 3000 {
		p := mustRead(t, s, "live", after, 100)
		for i, e := range p.Entries {
			if e.Offset != after+uint64(i)+1 || e.Offset > p.Head {
				t.Fatalf("read after %d: entry %d has offset %d, head %d", after, i, e.Offset, p.Head)
			}
		}
		if p.Trimmed {
			t.Fatalf("read after %d reported trimmed: %+v", after, p)
		}
		if n := len(p.Entries); n > 0 {
			after = p.Entries[n-1].Offset
		}
	}
	cancel()
	wg.Wait()
}

func TestFeedSeesEveryRecordOnceInOffsetOrder(t *testing.T) {
	t.Parallel()
	var mu sync.Mutex
	feed := map[string][]Committed{}
	s := openTest(t, Options{
		Retention: func(ch string) Retention {
			if ch == "c0" {
				return Retention{MaxCount: 0} // stored records are still fed
			}
			return DefaultRetention
		},
	})
	mustFeed(t, s, func(batch []Committed) {
		mu.Lock()
		defer mu.Unlock()
		for _, c := range batch {
			feed[c.Channel] = append(feed[c.Channel], c)
		}
	})
	const goroutines, each = 16, 100
	var wg sync.WaitGroup
	for g := range goroutines {
		wg.Go(func() {
			for i := range each {
				ch := []string{"c0", "c1", "c2", "c3"}[(g+i)%4]
				tag := [2]int{g, i}
				if _, err := s.Append(context.Background(), ch, Record{Payload: payload("%d", i), Tag: tag}); err != nil {
					t.Error(err)
				}
			}
		})
	}
	wg.Wait()
	// The feed runs after the answers; one more append per channel flushes
	// every earlier batch's callback through the single committer.
	for _, ch := range []string{"c0", "c1", "c2", "c3"} {
		mustAppend(t, s, ch, Record{Tag: "last"})
	}
	waitFor(t, "last commits", func() bool {
		mu.Lock()
		defer mu.Unlock()
		for _, ch := range []string{"c0", "c1", "c2", "c3"} {
			if n := len(feed[ch]); n == 0 || feed[ch][n-1].Record.Tag != "last" {
				return false
			}
		}
		return true
	})
	mu.Lock()
	defer mu.Unlock()
	tags := map[[2]int]bool{}
	for ch, list := range feed {
		pos, _ := s.Head(context.Background(), ch)
		if uint64(len(list)) != pos.Head {
			t.Errorf("%s: the feed saw %d records, head is %d", ch, len(list), pos.Head)
		}
		for i, c := range list {
			if c.Offset != uint64(i+1) || c.Epoch != pos.Epoch {
				t.Fatalf("%s: record %d reported as offset %d epoch %s", ch, i, c.Offset, c.Epoch)
			}
			if tag, ok := c.Record.Tag.([2]int); ok {
				if tags[tag] {
					t.Fatalf("tag %v reported twice", tag)
				}
				tags[tag] = true
			}
		}
	}
	if len(tags) != goroutines*each {
		t.Fatalf("the feed saw %d tagged records, want %d", len(tags), goroutines*each)
	}
}

func TestCloseAnswersPendingAppendsThenRefusesCalls(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	g := newGate()
	s, err := Open(Options{Dir: dir, Logger: testLogger(t), Durability: NoSync})
	if err != nil {
		t.Fatal(err)
	}
	mustFeed(t, s, g.receive)
	blockCommitter(t, s, g)

	const pending = 50
	results := make(chan error, pending)
	offsets := make(chan uint64, pending)
	for i := range pending {
		go func() {
			a, err := s.Append(context.Background(), "pending", Record{Payload: payload("%d", i)})
			offsets <- a.Offset
			results <- err
		}()
	}
	waitFor(t, "appends queued", func() bool { return s.queued() == pending })
	closed := make(chan error, 1)
	go func() { closed <- s.Close() }()
	waitFor(t, "close started", s.closed.Load)
	g.release()
	seen := map[uint64]bool{}
	for range pending {
		if err := <-results; err != nil {
			t.Fatalf("pending append answered with %v", err)
		}
		seen[<-offsets] = true
	}
	if err := <-closed; err != nil {
		t.Fatalf("Close: %v", err)
	}
	if len(seen) != pending || seen[0] {
		t.Fatalf("pending appends got offsets %v", seen)
	}

	ctx := context.Background()
	calls := map[string]error{}
	_, calls["Append"] = s.Append(ctx, "pending", Record{})
	_, calls["Read"] = s.Read(ctx, "pending", 0, 0)
	_, calls["Head"] = s.Head(ctx, "pending")
	_, calls["Trim"] = s.Trim(ctx, "pending", DefaultRetention)
	_, calls["Channels"] = s.Channels(ctx, "", 0)
	for name, err := range calls {
		if !errors.Is(err, ErrClosed) {
			t.Errorf("%s after Close: %v, want ErrClosed", name, err)
		}
	}
	if err := s.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}

	s = openTest(t, Options{Dir: dir})
	if pos, _ := s.Head(ctx, "pending"); pos.Head != pending {
		t.Fatalf("after reopen head is %d, want %d", pos.Head, pending)
	}
}

func TestAppendWithDoneContextStoresNothing(t *testing.T) {
	t.Parallel()
	s := openTest(t, Options{})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := s.Append(ctx, "ctx", Record{}); !errors.Is(err, context.Canceled) {
		t.Fatalf("Append with a cancelled context: %v", err)
	}
	if _, err := s.Head(ctx, "ctx"); !errors.Is(err, context.Canceled) {
		t.Fatalf("Head with a cancelled context: %v", err)
	}
	if a := mustAppend(t, s, "ctx", Record{}); a.Offset != 1 {
		t.Fatalf("next append got offset %d", a.Offset)
	}
}

func TestInvalidInputIsRejected(t *testing.T) {
	t.Parallel()
	s := openTest(t, Options{MaxBatchBytes: 1024})
	ctx := context.Background()
	long := strings.Repeat("x", 256)
	for _, name := range []string{"", long, "a\x00b"} {
		_, errA := s.Append(ctx, name, Record{})
		_, errR := s.Read(ctx, name, 0, 0)
		_, errH := s.Head(ctx, name)
		_, errT := s.Trim(ctx, name, DefaultRetention)
		for op, err := range map[string]error{"Append": errA, "Read": errR, "Head": errH, "Trim": errT} {
			if !errors.Is(err, ErrBadChannel) {
				t.Errorf("%s(%q): %v, want ErrBadChannel", op, name, err)
			}
		}
		if name != "" && !strings.Contains(errA.Error(), name[:1]) {
			t.Errorf("error %q does not name the channel", errA)
		}
	}
	if _, err := s.Append(ctx, strings.Repeat("y", 255), Record{}); err != nil {
		t.Errorf("255-byte name: %v", err)
	}
	big := Record{Payload: bytes.Repeat([]byte("p"), 1000), ID: strings.Repeat("i", 25)}
	if _, err := s.Append(ctx, "big", big); !errors.Is(err, ErrTooLarge) {
		t.Errorf("1025-byte record: %v, want ErrTooLarge", err)
	}
	big.ID = ""
	if _, err := s.Append(ctx, "big", big); err != nil {
		t.Errorf("1000-byte record: %v", err)
	}
	// In memory, Badger keeps values of at most 1 MiB.
	s = openTest(t, Options{})
	if _, err := s.Append(ctx, "big", Record{Payload: make([]byte, 1<<20)}); !errors.Is(err, ErrTooLarge) {
		t.Errorf("1 MiB record in memory: %v, want ErrTooLarge", err)
	}
}

func TestOpenRejectsBadOptions(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name string
		opts Options
		want string
	}{
		{"no dir", Options{}, "dir is required"},
		{"durability", Options{InMemory: true, Durability: 7}, "durability 7"},
		{"trim interval", Options{InMemory: true, TrimInterval: -1}, "trim interval"},
		{"ttl", Options{InMemory: true, IdempotencyTTL: -1}, "idempotency ttl"},
		{"records", Options{InMemory: true, MaxBatchRecords: -1}, "max batch records -1"},
		{"bytes", Options{InMemory: true, MaxBatchBytes: 1 << 30}, "max batch bytes"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			s, err := Open(tc.opts)
			if err == nil {
				s.Close()
				t.Fatal("Open succeeded")
			}
			if !strings.Contains(err.Error(), tc.want) || !strings.HasPrefix(err.Error(), "store: ") {
				t.Fatalf("error %q does not contain %q", err, tc.want)
			}
		})
	}
}

func TestFailedBatchRollsBackAndLaterAppendsReuseNothing(t *testing.T) {
	t.Parallel()
	g := newGate()
	s := openTest(t, Options{})
	mustFeed(t, s, g.receive)
	// A corrupt idempotency record makes the committer's lookup fail, and
	// with it the whole batch that holds the lookup.
	if err := s.db.Update(func(txn *badger.Txn) error {
		return txn.Set(idemKey("rb", "bad"), []byte("junk"))
	}); err != nil {
		t.Fatal(err)
	}
	blockCommitter(t, s, g)
	errs := make(chan error, 2)
	go func() { _, err := s.Append(context.Background(), "rb", Record{Payload: []byte("one")}); errs <- err }()
	waitFor(t, "first append queued", func() bool { return s.queued() == 1 })
	go func() {
		_, err := s.Append(context.Background(), "rb", Record{Payload: []byte("two"), IdempotencyKey: "bad"})
		errs <- err
	}()
	waitFor(t, "second append queued", func() bool { return s.queued() == 2 })
	g.release()
	for range 2 {
		if err := <-errs; err == nil || !strings.HasPrefix(err.Error(), "store: commit 2 appends") {
			t.Fatalf("append in a failed batch: %v", err)
		}
	}
	if p := mustRead(t, s, "rb", 0, 0); p.Epoch != "" || p.Head != 0 {
		t.Fatalf("failed batch left state behind: %+v", p)
	}
	a := mustAppend(t, s, "rb", Record{Payload: []byte("three")})
	if a.Offset != 1 {
		t.Fatalf("append after a failed batch got offset %d, want 1", a.Offset)
	}
	if e := readAll(t, s, "rb", 0); len(e) != 1 || string(e[0].Payload) != "three" {
		t.Fatalf("entries after rollback: %+v", e)
	}
}

func TestFullBatchesFitInOneTransaction(t *testing.T) {
	t.Parallel()
	long := strings.Repeat("n", 255)
	inMemoryMax := Options{InMemory: true}.withDefaults().maxRecordBytes()
	cases := []struct {
		name    string
		onDisk  bool
		count   int
		channel string
		rec     func(i int) Record
	}{
		{"max-size records on disk", true, 5, "big", func(i int) Record {
			return Record{ID: "m", Payload: bytes.Repeat([]byte{byte(i)}, defaultMaxBatchBytes-1)}
		}},
		{"max-size records in memory", false, 9, "big", func(i int) Record {
			return Record{ID: "m", Payload: bytes.Repeat([]byte{byte(i)}, inMemoryMax-1)}
		}},
		{"small records with the longest keys", false, 3000, long, func(i int) Record {
			return Record{
				ID:             strings.Repeat("i", 100) + string(payload("%d", i)),
				Payload:        bytes.Repeat([]byte("p"), 1024),
				IdempotencyKey: strings.Repeat("k", maxRawIdemKey-8) + string(payload("%08d", i)),
			}
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			g := newGate()
			opts := Options{Durability: NoSync}
			if tc.onDisk {
				opts.Dir = t.TempDir()
			}
			s := openTest(t, opts)
			mustFeed(t, s, g.receive)
			blockCommitter(t, s, g)
			errs := make(chan error, tc.count)
			for i := range tc.count {
				go func() {
					_, err := s.Append(context.Background(), tc.channel, tc.rec(i))
					errs <- err
				}()
			}
			waitFor(t, "appends queued", func() bool { return s.queued() == tc.count })
			g.release()
			for range tc.count {
				if err := <-errs; err != nil {
					t.Fatal(err)
				}
			}
			if pos, _ := s.Head(context.Background(), tc.channel); pos.Head != uint64(tc.count) {
				t.Fatalf("head %d, want %d", pos.Head, tc.count)
			}
		})
	}
}
