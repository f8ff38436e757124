package storetest

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/heraldrt/herald/store"
)

// Options are the settings the suite needs to control in the engine it
// opens; the harness passes them on in the engine's own terms.
type Options struct {
	// Retention is each channel's retention. Never nil.
	Retention func(channel string) store.Retention
	// IdempotencyTTL is how long an idempotency key is remembered.
	IdempotencyTTL time.Duration
	// Now is the engine's clock: the Time of a record appended with a zero
	// Time, the age that retention measures and the expiry of idempotency
	// keys all come from it. Never nil; the suite moves it by hand.
	Now func() time.Time
}

// Harness opens the engine under test for the suite.
type Harness struct {
	// Open opens the engine with opts over the durable state kept in dir,
	// an existing directory owned by the test. The engine keeps all its
	// durable state in dir, so that removing dir's contents loses it (the
	// suite does that to check that a lost log starts a new epoch). The
	// suite closes every engine it opens before its test ends, and never
	// has two open on one dir.
	Open func(t testing.TB, dir string, opts Options) (store.Engine, error)

	// Trim applies retention r to channel now, as the engine's own
	// retention would on its schedule, so that tests need not wait for a
	// timer. The engine may also apply retention on its own at any time:
	// the suite never expects a record to outlive its retention.
	Trim func(ctx context.Context, e store.Engine, channel string, r store.Retention) error

	// Durable is true when an engine opened on dir finds everything an
	// engine closed before it on the same dir acknowledged. An in-memory
	// engine sets it false: the suite then runs no test that reopens.
	Durable bool
}

// Run runs the whole suite against the engine h opens, each guarantee as a
// parallel subtest of t.
func Run(t *testing.T, h Harness) {
	if h.Open == nil || h.Trim == nil {
		t.Fatal("storetest: Harness.Open and Harness.Trim are required")
	}
	tests := []struct {
		name    string
		durable bool // reopens: only for a Durable harness
		run     func(*testing.T, Harness)
	}{
		// The log: offsets, epochs, reads.
		{"OffsetsStartAtOneAndAreContiguousPerChannel", false, testOffsetsAreContiguous},
		{"ConcurrentAppendsGetEveryOffsetExactlyOnce", false, testConcurrentAppends},
		{"HeadCreatesTheEpochOnFirstUseAndReadDoesNot", false, testHeadCreatesEpoch},
		{"EpochAndHeadSurviveReopen", true, testEpochSurvivesReopen},
		{"LostLogStartsANewEpoch", false, testLostLogNewEpoch},
		{"ReadPagesWithinBounds", false, testReadPages},
		{"ReadNeverReturnsRecordsBeyondItsHead", false, testReadBeyondHead},
		{"ChannelsListsInNameOrderAndPages", false, testChannels},
		{"BadChannelNamesAreRefused", false, testBadChannelNames},
		{"DoneContextStoresNothing", false, testDoneContext},
		{"CloseKeepsEveryAcknowledgedAppend", false, testCloseKeepsAcknowledged},
		{"CallsAfterCloseReturnErrClosed", false, testCallsAfterClose},
		{"AppendBatchAnswersEachRecordInOrder", false, testAppendBatch},
		{"ConcurrentAppendBatchesDoNotInterleave", false, testConcurrentAppendBatches},

		// Retention.
		{"RetentionByCountKeepsTheNewest", false, testRetentionByCount},
		{"RetentionByAgeUsesTheClock", false, testRetentionByAge},
		{"RetentionOfNothingKeepsOnlyOffsets", false, testRetentionOfNothing},

		// Idempotency.
		{"IdempotentAppendReturnsTheFirstResultAndStoresNothing", false, testIdempotentAppend},
		{"ConcurrentAppendsWithOneKeyStoreOnce", false, testIdempotentConcurrent},
		{"IdempotencyKeyExpiresAfterItsWindow", false, testIdempotencyExpires},

		// The commit feed.
		{"FeedReportsEveryStoredRecordOnceInOffsetOrder", false, testFeedOrder},
		{"FeedCallsNeverOverlap", false, testFeedNoOverlap},
		{"FeedReportsARecordOnlyOnceItIsVisible", false, testFeedVisible},
		{"FeedSkipsDuplicates", false, testFeedSkipsDuplicates},
		{"FeedStartsWhenItIsSet", false, testFeedStartsWhenItIsSet},
		{"FeedIsSetOnce", false, testFeedSetOnce},

		// Small state.
		{"StatePutGetDeleteAndScanByPrefix", false, testState},
		{"StateSurvivesReopen", true, testStateSurvivesReopen},
	}
	for _, tc := range tests {
		if tc.durable && !h.Durable {
			continue // reopening an in-memory engine finds nothing, by design
		}
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			tc.run(t, h)
		})
	}
}

// start is when every test's fake clock starts.
var start = time.Date(2026, 11, 26, 16, 0, 0, 0, time.UTC)

// clock is a fake clock the test moves by hand.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *clock) Set(t time.Time) {
	c.mu.Lock()
	c.now = t
	c.mu.Unlock()
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

// keepAll is a retention that keeps everything a test appends.
func keepAll(string) store.Retention { return store.Retention{MaxCount: 1 << 40} }

// fixture is one test's engine, its directory and its clock.
type fixture struct {
	t     *testing.T
	h     Harness
	dir   string
	clock *clock
	opts  Options
	e     store.Engine // the engine open now
}

// newFixture opens an engine for t with keepAll retention and a one-hour
// idempotency window, after applying edit (which may be nil) to the
// options.
func newFixture(t *testing.T, h Harness, edit func(*Options)) *fixture {
	t.Helper()
	f := &fixture{t: t, h: h, dir: t.TempDir(), clock: &clock{now: start}}
	f.opts = Options{Retention: keepAll, IdempotencyTTL: time.Hour, Now: f.clock.Now}
	if edit != nil {
		edit(&f.opts)
	}
	f.open()
	return f
}

// open opens an engine on the fixture's directory; it is closed when the
// test ends unless the test closes it first.
func (f *fixture) open() store.Engine {
	f.t.Helper()
	e, err := f.h.Open(f.t, f.dir, f.opts)
	if err != nil {
		f.t.Fatalf("open engine: %v", err)
	}
	f.t.Cleanup(func() {
		if err := e.Close(); err != nil {
			f.t.Errorf("close engine: %v", err)
		}
	})
	f.e = e
	return e
}

// close closes the engine open now.
func (f *fixture) close() {
	f.t.Helper()
	if err := f.e.Close(); err != nil {
		f.t.Fatalf("close engine: %v", err)
	}
}

// reopen closes the engine and opens a new one on the same directory.
func (f *fixture) reopen() store.Engine {
	f.t.Helper()
	f.close()
	return f.open()
}

// lose closes the engine, loses its durable state and opens a new one.
func (f *fixture) lose() store.Engine {
	f.t.Helper()
	f.close()
	entries, err := os.ReadDir(f.dir)
	if err != nil {
		f.t.Fatal(err)
	}
	for _, de := range entries {
		if err := os.RemoveAll(filepath.Join(f.dir, de.Name())); err != nil {
			f.t.Fatal(err)
		}
	}
	return f.open()
}

// trim applies the fixture's retention of channel now.
func (f *fixture) trim(channel string) {
	f.t.Helper()
	if err := f.h.Trim(context.Background(), f.e, channel, f.opts.Retention(channel)); err != nil {
		f.t.Fatalf("trim %q: %v", channel, err)
	}
}

func mustAppend(t testing.TB, e store.Engine, channel string, rec store.Record) store.Appended {
	t.Helper()
	a, err := e.Append(context.Background(), channel, rec)
	if err != nil {
		t.Fatalf("Append(%q): %v", channel, err)
	}
	return a
}

func mustRead(t testing.TB, e store.Engine, channel string, after uint64, limit int) store.Page {
	t.Helper()
	p, err := e.Read(context.Background(), channel, after, limit)
	if err != nil {
		t.Fatalf("Read(%q, %d, %d): %v", channel, after, limit, err)
	}
	return p
}

func mustHead(t testing.TB, e store.Engine, channel string) store.Position {
	t.Helper()
	pos, err := e.Head(context.Background(), channel)
	if err != nil {
		t.Fatalf("Head(%q): %v", channel, err)
	}
	return pos
}

// readAll reads every kept record of channel after offset after, checking
// that pages are contiguous.
func readAll(t testing.TB, e store.Engine, channel string, after uint64) []store.Entry {
	t.Helper()
	var all []store.Entry
	for {
		p := mustRead(t, e, channel, after, 100)
		for i, en := range p.Entries {
			if i > 0 && en.Offset != p.Entries[i-1].Offset+1 {
				t.Fatalf("Read(%q, %d): offset %d follows %d", channel, after, en.Offset, p.Entries[i-1].Offset)
			}
		}
		all = append(all, p.Entries...)
		if len(p.Entries) == 0 {
			return all
		}
		after = p.Entries[len(p.Entries)-1].Offset
	}
}

func payload(format string, args ...any) []byte { return fmt.Appendf(nil, format, args...) }

// fed is one record as the commit feed reported it, copied out of the call.
type fed struct {
	Channel string
	Offset  uint64
	Epoch   string
	ID      string
	Payload string
	Tag     any
}

// recorder is a feed receiver that keeps a copy of everything it is given.
type recorder struct {
	mu      sync.Mutex
	records []fed
	calls   int
}

func (r *recorder) receive(batch []store.Committed) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.calls++
	for _, c := range batch {
		r.records = append(r.records, fed{c.Channel, c.Offset, c.Epoch, c.Record.ID, string(c.Record.Payload), c.Record.Tag})
	}
}

func (r *recorder) all() []fed {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]fed(nil), r.records...)
}

// feed sets a new recorder as e's receiver.
func feed(t testing.TB, e store.Engine) *recorder {
	t.Helper()
	r := &recorder{}
	if err := e.Feed(r.receive); err != nil {
		t.Fatalf("Feed: %v", err)
	}
	return r
}
