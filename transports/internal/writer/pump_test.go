package writer

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/heraldrt/herald/server"
	"github.com/heraldrt/herald/store"
)

// newTestServer returns a real core on an in-memory store, shut down with
// the test.
func newTestServer(t testing.TB, cfg server.Config) *server.Server {
	t.Helper()
	cfg.APIKey = "test-api-key-0123456789"
	cfg.Logger = slog.New(slog.NewTextHandler(t.Output(), nil))
	srv, st, err := server.Open(cfg, store.Options{InMemory: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		srv.Shutdown()
		if err := st.Close(); err != nil {
			t.Errorf("close store: %v", err)
		}
	})
	return srv
}

func open(t testing.TB, srv *server.Server, id server.Identity, channel string) *server.Session {
	t.Helper()
	sess, _, err := srv.Transport("test").Open(context.Background(), id, server.OpenRequest{Channels: []string{channel}})
	if err != nil {
		t.Fatalf("open %s: %v", channel, err)
	}
	return sess
}

func publishN(t testing.TB, srv *server.Server, channel string, from, to int) {
	t.Helper()
	for i := from; i <= to; i++ {
		if _, err := srv.Publish(context.Background(), server.Identity{System: true}, server.PublishRequest{
			Channel: channel, Data: json.RawMessage(fmt.Sprintf(`{"n":%d}`, i)),
		}); err != nil {
			t.Fatalf("publish %d: %v", i, err)
		}
	}
}

func TestBatchRuleHoldsMessagesUpToItsTimeoutOrSize(t *testing.T) {
	t.Parallel()
	srv := newTestServer(t, server.Config{Rules: []server.RuleConfig{{Pattern: "ticks", Subscribe: []string{"authenticated"},
		// A hold far longer than a few publishes take, so what is
		// published together is held together however busy the machine.
		Batch: &server.BatchConfig{Size: 5, Timeout: 2 * time.Second}}}})
	sess := open(t, srv, server.Identity{User: "1"}, "ticks")
	var group Group
	var mu sync.Mutex
	var writes []int
	wrote := make(chan struct{}, 16)
	pump := NewPump(sess, &group, Options{Coalesce: time.Millisecond, Heartbeat: time.Hour}, func(k TurnKind) int {
		if k == TurnClose {
			return 0
		}
		items := sess.Drain(nil)
		n := 0
		for _, it := range items {
			if it.Kind == server.KindMessage {
				n++
			}
		}
		if n > 0 {
			mu.Lock()
			writes = append(writes, n)
			mu.Unlock()
			wrote <- struct{}{}
		}
		return len(items)
	})
	if !pump.Start() {
		t.Fatal("pump refused")
	}
	defer func() {
		sess.Close(server.ReasonClientGone)
		if err := group.Wait(context.Background()); err != nil {
			t.Error(err)
		}
	}()
	// The first message after a quiet spell goes at once.
	publishN(t, srv, "ticks", 1, 1)
	<-wrote
	// Five more within the hold go in one write, as soon as five are queued.
	publishN(t, srv, "ticks", 2, 6)
	<-wrote
	// Two more: held until the timeout, then written together.
	publishN(t, srv, "ticks", 7, 8)
	<-wrote
	mu.Lock()
	defer mu.Unlock()
	if len(writes) != 3 || writes[0] != 1 || writes[1] != 5 || writes[2] != 2 {
		t.Fatalf("writes %v, want [1 5 2]", writes)
	}
}
