package store

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	if dir := os.Getenv(crashChildEnv); dir != "" {
		// Re-executed by TestCrash…: append until killed.
		crashChild(dir)
		return
	}
	if dir := os.Getenv(walCrashChildEnv); dir != "" {
		walCrashChild(dir)
		return
	}
	goleak.VerifyTestMain(m)
}

// openTest opens a store for t, in memory unless opts.Dir is set, logging
// warnings to the test output, and closes it when t ends.
func openTest(t testing.TB, opts Options) *Store {
	t.Helper()
	if opts.Dir == "" {
		opts.InMemory = true
	}
	if opts.Logger == nil {
		opts.Logger = testLogger(t)
	}
	s, err := Open(opts)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return s
}

func testLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelWarn}))
}

// keepAll is a retention that trims nothing in a test's lifetime.
func keepAll(string) Retention { return Retention{MaxCount: 1 << 40} }

// mustFeed sets receive as s's commit feed receiver.
func mustFeed(t testing.TB, s *Store, receive func([]Committed)) {
	t.Helper()
	if err := s.Feed(receive); err != nil {
		t.Fatalf("Feed: %v", err)
	}
}

func mustAppend(t testing.TB, s *Store, channel string, rec Record) Appended {
	t.Helper()
	a, err := s.Append(context.Background(), channel, rec)
	if err != nil {
		t.Fatalf("Append(%q): %v", channel, err)
	}
	return a
}

func mustRead(t testing.TB, s *Store, channel string, after uint64, limit int) Page {
	t.Helper()
	p, err := s.Read(context.Background(), channel, after, limit)
	if err != nil {
		t.Fatalf("Read(%q, %d, %d): %v", channel, after, limit, err)
	}
	return p
}

// readAll reads every kept entry of channel after offset after.
func readAll(t testing.TB, s *Store, channel string, after uint64) []Entry {
	t.Helper()
	var all []Entry
	for {
		p := mustRead(t, s, channel, after, 1000)
		all = append(all, p.Entries...)
		if len(p.Entries) == 0 {
			return all
		}
		after = p.Entries[len(p.Entries)-1].Offset
	}
}

// fakeClock is a settable clock for Options.Now.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func newFakeClock() *fakeClock {
	return &fakeClock{now: time.Date(2026, 11, 26, 16, 0, 0, 0, time.UTC)}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Set(t time.Time) {
	c.mu.Lock()
	c.now = t
	c.mu.Unlock()
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// gate blocks the committer inside the feed's receiver while closed, so a test can
// queue several appends and have them committed as one batch.
type gate struct {
	mu      sync.Mutex
	blocked bool
	open    chan struct{}
	entered chan struct{}
	feed    []Committed
}

func newGate() *gate {
	return &gate{open: make(chan struct{}), entered: make(chan struct{}, 1)}
}

// receive records the batch and, the first time, waits for release.
func (g *gate) receive(batch []Committed) {
	g.mu.Lock()
	for _, c := range batch {
		c.Record.Payload = append([]byte(nil), c.Record.Payload...)
		g.feed = append(g.feed, c)
	}
	first := !g.blocked
	g.blocked = true
	g.mu.Unlock()
	if first {
		g.entered <- struct{}{}
		<-g.open
	}
}

func (g *gate) release() { close(g.open) }

func (g *gate) committed() []Committed {
	g.mu.Lock()
	defer g.mu.Unlock()
	return append([]Committed(nil), g.feed...)
}

// queued returns how many requests wait for the committer.
func (s *Store) queued() int {
	s.queue.mu.Lock()
	defer s.queue.mu.Unlock()
	return len(s.queue.reqs)
}

// blockCommitter appends one record to channel "gate" and returns once the
// committer is held in g's receive.
func blockCommitter(t testing.TB, s *Store, g *gate) {
	t.Helper()
	go func() { _, _ = s.Append(context.Background(), "gate", Record{Payload: []byte("gate")}) }()
	<-g.entered
}

func payload(format string, args ...any) []byte { return fmt.Appendf(nil, format, args...) }
