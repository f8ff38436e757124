package server

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/heraldrt/herald/store"
)

// remoteEngine is an embedded store that says its reads are remote, and
// whose reads of channel slow wait until gate is closed.
type remoteEngine struct {
	*store.Store
	entered chan struct{} // a read of slow began
	gate    chan struct{}
}

func (r *remoteEngine) RemoteReads() bool { return true }

func (r *remoteEngine) Read(ctx context.Context, channel string, after uint64, limit int) (store.Page, error) {
	if channel == "slow" {
		select {
		case r.entered <- struct{}{}:
		default:
		}
		select {
		case <-r.gate:
		case <-ctx.Done():
			return store.Page{}, ctx.Err()
		}
	}
	return r.Store.Read(ctx, channel, after, limit)
}

// On a remote engine a catch-up page is read off the session's writer:
// Drain returns at once while the read waits (a transport's writer serves
// other sessions meanwhile), and once the page is there the session is
// ready again and the page follows, then live messages, exactly once.
func TestCatchUpReadsOffTheWriter(t *testing.T) {
	t.Parallel()
	var eng *remoteEngine
	srv := newServerOver(t, func(st *store.Store) store.Engine {
		eng = &remoteEngine{Store: st, entered: make(chan struct{}, 1), gate: make(chan struct{})}
		return eng
	})
	publishN(t, srv, "slow", 1, 3)
	sess, err := srv.Transport("test").NewSession(system, "", "")
	if err != nil {
		t.Fatal(err)
	}
	defer sess.Close(ReasonClientGone)
	if _, err := srv.Subscribe(context.Background(), sess, SubscribeRequest{Channel: "slow", From: &Position{}}); err != nil {
		t.Fatal(err)
	}
	// The writer's visits: the first starts the read, the next one finds
	// its page not there yet. Neither waits for it.
	drainNothing := func() {
		t.Helper()
		drained := make(chan []Item, 1)
		go func() { drained <- sess.Drain(nil) }()
		select {
		case items := <-drained:
			if len(offsets(items)["slow"]) != 0 {
				t.Fatalf("drained %v before the read was let through", offsets(items))
			}
		case <-time.After(10 * time.Second):
			t.Fatal("Drain waited for the engine's read")
		}
	}
	drainNothing()
	<-eng.entered
	drainNothing()
	c := collect(t, sess)
	close(eng.gate)
	publishN(t, srv, "slow", 4, 5)
	assertRange(t, offsets(c.waitFor(t, "offsets 1..5", countOffsets("slow", 5)))["slow"], 1, 5)
}

// laggingEngine is an embedded store that says its reads are remote and
// whose head reads lag: the first lagReads of them report lag fewer
// records than there are, as a stream leader just elected can.
type laggingEngine struct {
	*store.Store
	mu       sync.Mutex
	lagReads int
	lag      uint64
}

func (l *laggingEngine) RemoteReads() bool { return true }

func (l *laggingEngine) Head(ctx context.Context, channel string) (store.Position, error) {
	pos, err := l.Store.Head(ctx, channel)
	l.mu.Lock()
	defer l.mu.Unlock()
	if err == nil && l.lagReads > 0 {
		l.lagReads--
		pos.Head -= min(l.lag, pos.Head)
	}
	return pos, err
}

// A client whose position is ahead of a lagging head read (it saw the
// records through another node) is not reset on a remote engine: the
// head is read again until it reaches the position, and the client goes
// on from there exactly once. A client that is ahead of the log in
// truth is reset (unknown_position) once the reads have had their time.
func TestAHeadReadBehindTheClientIsReadAgain(t *testing.T) {
	t.Parallel()
	var eng *laggingEngine
	srv := newServerOver(t, func(st *store.Store) store.Engine { eng = &laggingEngine{Store: st}; return eng })
	publishN(t, srv, "room", 1, 5)
	pos, err := eng.Store.Head(context.Background(), "room")
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name      string
		lagReads  int
		since     uint64
		wantReset bool
	}{
		{"lagging read", 2, 5, false},
		{"ahead in truth", 0, 9, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			eng.mu.Lock()
			eng.lagReads, eng.lag = c.lagReads, 2
			eng.mu.Unlock()
			sess, err := srv.Transport("test").NewSession(system, "", "")
			if err != nil {
				t.Fatal(err)
			}
			got := collect(t, sess)
			if _, err := srv.Subscribe(context.Background(), sess, SubscribeRequest{Channel: "room", From: &Position{Epoch: pos.Epoch, Since: c.since}}); err != nil {
				t.Fatal(err)
			}
			if c.wantReset {
				items := got.waitFor(t, "a reset", func(items []Item) bool {
					return slices.ContainsFunc(items, func(it Item) bool { return it.Kind == KindReset })
				})
				for _, it := range items {
					if it.Kind == KindReset && !strings.Contains(string(it.Msg.Raw), `"reason":"unknown_position"`) {
						t.Fatalf("reset %s, want unknown_position", it.Msg.Raw)
					}
				}
				return
			}
			publishN(t, srv, "room", 6, 7)
			items := got.waitFor(t, "offsets 6..7", countOffsets("room", 2))
			for _, it := range items {
				if it.Kind == KindReset {
					t.Fatalf("a reset for a client the lagging read had behind: %s", it.Msg.Raw)
				}
			}
			assertRange(t, offsets(items)["room"], 6, 7)
		})
	}
}

// failingReads is an embedded store whose reads fail with err.
type failingReads struct {
	*store.Store
	err error
}

func (f *failingReads) Read(context.Context, string, uint64, int) (store.Page, error) {
	return store.Page{}, f.err
}

// A catch-up read that fails ends the session: as unavailable (the
// client comes back after a backoff and resumes) when the engine says it
// cannot be reached for now, as internal otherwise; both reconnect.
func TestAFailedCatchUpReadSaysWhy(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		name string
		err  error
		want Reason
	}{
		{"unavailable", fmt.Errorf("%w: nats: no responders", store.ErrUnavailable), ReasonUnavailable},
		{"anything else", errors.New("damaged page"), ReasonInternal},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			srv := newServerOver(t, func(st *store.Store) store.Engine { return &failingReads{Store: st, err: c.err} })
			publishN(t, srv, "room", 1, 3)
			sess, err := srv.Transport("test").NewSession(system, "", "")
			if err != nil {
				t.Fatal(err)
			}
			collect(t, sess)
			if _, err := srv.Subscribe(context.Background(), sess, SubscribeRequest{Channel: "room", From: &Position{Since: 0}}); err != nil {
				t.Fatal(err)
			}
			select {
			case <-sess.Done():
			case <-time.After(10 * time.Second):
				t.Fatal("the session whose catch-up read failed is still open")
			}
			if r := sess.Reason(); r != c.want || !r.Reconnect() {
				t.Fatalf("reason %s (reconnect %v), want %s and a reconnect", r, r.Reconnect(), c.want)
			}
			if got := string(DisconnectData(c.want)); !strings.Contains(got, `"reason":"`+c.want.String()+`","reconnect":true`) {
				t.Errorf("notice %s", got)
			}
		})
	}
}
