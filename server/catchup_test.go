package server

import (
	"context"
	"log/slog"
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
	st, err := store.Open(store.Options{InMemory: true})
	if err != nil {
		t.Fatal(err)
	}
	eng := &remoteEngine{Store: st, entered: make(chan struct{}, 1), gate: make(chan struct{})}
	srv, err := New(Config{APIKey: testAPIKey, Logger: slog.New(slog.NewTextHandler(t.Output(), nil))}, eng)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Shutdown(); _ = st.Close() })
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
