package store

import (
	"bytes"
	"context"
	"errors"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/dgraph-io/badger/v4"
)

var epochPattern = regexp.MustCompile(`^[0-9a-f]{12}$`)

// The contract (Engine) is checked by store/storetest (engine_test.go);
// the tests here are about how Store keeps it.

func TestEpochsAreTwelveRandomHexCharacters(t *testing.T) {
	t.Parallel()
	s := openTest(t, Options{})
	seen := map[string]bool{}
	for i := range 8 {
		ch := string(payload("c%d", i))
		pos, err := s.Head(context.Background(), ch)
		if err != nil || !epochPattern.MatchString(pos.Epoch) {
			t.Fatalf("Head(%q) = %+v, %v; want an epoch of 12 lowercase hex characters", ch, pos, err)
		}
		if a := mustAppend(t, s, ch, Record{}); a.Epoch != pos.Epoch {
			t.Fatalf("append to %q got epoch %s, Head said %s", ch, a.Epoch, pos.Epoch)
		}
		if seen[pos.Epoch] {
			t.Fatalf("epoch %s given to two channels", pos.Epoch)
		}
		seen[pos.Epoch] = true
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

func TestFullBatchesOfLargeRecordsCommit(t *testing.T) {
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

// The committer takes a batch of appends (AppendBatch) whole: never split
// over two commits, and alone when it is larger than a commit's bounds.
func TestQueueTakesAGroupWhole(t *testing.T) {
	t.Parallel()
	q := queue{ready: make(chan struct{}, 1)}
	single := func() *request { return &request{cost: 10} }
	groupOf := func(n int) []*request {
		g := &group{}
		reqs := make([]*request, n)
		for i := range reqs {
			reqs[i] = &request{cost: 10, group: g}
			g.cost += 10
		}
		g.left.Store(int64(n))
		return reqs
	}
	q.push(single())
	q.push(single())
	q.pushAll(groupOf(5))
	q.push(single())
	q.pushAll(groupOf(8))
	var sizes []int
	for range 4 {
		batch, ok := q.next(nil, 4, 1<<20)
		if !ok {
			t.Fatal("queue closed")
		}
		sizes = append(sizes, len(batch))
	}
	// max 4 records: two singles; the group of 5 alone; a single; the group of 8 alone.
	if want := []int{2, 5, 1, 8}; !slices.Equal(sizes, want) {
		t.Fatalf("batches of %v, want %v", sizes, want)
	}
}
