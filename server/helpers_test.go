package server

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/heraldrt/herald/store"
)

const testAPIKey = "test-api-key-0123456789"
const testSecret = "test-jwt-secret-0123456789abcdef0123"

// newTestServer returns a Server on an in-memory store, closed with the
// test.
func newTestServer(t testing.TB, cfg Config, opts ...func(*store.Options)) (*Server, *store.Store) {
	t.Helper()
	if cfg.APIKey == "" {
		cfg.APIKey = testAPIKey
	}
	if cfg.JWTSecret == "" {
		cfg.JWTSecret = testSecret
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(t.Output(), nil))
	}
	so := store.Options{InMemory: true}
	for _, o := range opts {
		o(&so)
	}
	srv, st, err := Open(cfg, so)
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	t.Cleanup(func() {
		srv.Shutdown()
		if err := st.Close(); err != nil {
			t.Errorf("close store: %v", err)
		}
	})
	return srv, st
}

// newServerOver returns a Server with the API key over an in-memory
// store as wrap makes it into an engine (one whose reads behave as a
// remote engine's may), closed with the test.
func newServerOver(t testing.TB, wrap func(*store.Store) store.Engine) *Server {
	t.Helper()
	st, err := store.Open(store.Options{InMemory: true})
	if err != nil {
		t.Fatal(err)
	}
	srv, err := New(Config{APIKey: testAPIKey, Logger: slog.New(slog.NewTextHandler(t.Output(), nil))}, wrap(st))
	if err != nil {
		_ = st.Close()
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Shutdown(); _ = st.Close() })
	return srv
}

var system = Identity{System: true}

func publishN(t testing.TB, srv *Server, channel string, from, to int) {
	t.Helper()
	for i := from; i <= to; i++ {
		if _, err := srv.Publish(context.Background(), system, PublishRequest{
			Channel: channel, Data: json.RawMessage(fmt.Sprintf(`{"n":%d}`, i)),
		}); err != nil {
			t.Fatalf("publish %d: %v", i, err)
		}
	}
}

// collector drains a session from its own goroutine, as a transport does,
// and records every item.
type collector struct {
	sess *Session
	stop chan struct{}
	done chan struct{}

	mu     sync.Mutex
	items  []Item
	notify chan struct{}
}

func collect(t testing.TB, sess *Session) *collector {
	c := &collector{sess: sess, stop: make(chan struct{}), done: make(chan struct{}), notify: make(chan struct{}, 1)}
	go func() {
		defer close(c.done)
		var buf []Item
		for {
			select {
			case <-c.stop:
				return
			case <-sess.Done():
				buf = sess.Drain(buf[:0])
				c.add(buf)
				return
			case <-sess.Ready():
				buf = sess.Drain(buf[:0])
				c.add(buf)
			}
		}
	}()
	t.Cleanup(c.close)
	return c
}

func (c *collector) add(items []Item) {
	if len(items) == 0 {
		return
	}
	c.mu.Lock()
	c.items = append(c.items, items...)
	c.mu.Unlock()
	select {
	case c.notify <- struct{}{}:
	default:
	}
}

func (c *collector) close() {
	select {
	case <-c.stop:
	default:
		close(c.stop)
	}
	<-c.done
	c.sess.Close(ReasonClientGone)
}

// waitFor waits until cond holds over the items collected so far.
func (c *collector) waitFor(t testing.TB, what string, cond func([]Item) bool) []Item {
	t.Helper()
	deadline := time.NewTimer(10 * time.Second)
	defer deadline.Stop()
	for {
		c.mu.Lock()
		items := append([]Item(nil), c.items...)
		c.mu.Unlock()
		if cond(items) {
			return items
		}
		select {
		case <-c.notify:
		case <-c.sess.Done():
			c.mu.Lock()
			items = append([]Item(nil), c.items...)
			c.mu.Unlock()
			if cond(items) {
				return items
			}
			// Let the goroutine record the final drain.
			<-c.done
			c.mu.Lock()
			items = append([]Item(nil), c.items...)
			c.mu.Unlock()
			if cond(items) {
				return items
			}
			t.Fatalf("session closed (%s) before %s; got %d items", c.sess.Reason(), what, len(items))
		case <-deadline.C:
			t.Fatalf("timed out waiting for %s; got %d items", what, len(items))
		}
	}
}

// offsets returns the stored-message offsets among items, per channel.
func offsets(items []Item) map[string][]uint64 {
	out := map[string][]uint64{}
	for _, it := range items {
		if it.Kind == KindMessage && it.Msg.Offset > 0 {
			out[it.Msg.Channel] = append(out[it.Msg.Channel], it.Msg.Offset)
		}
	}
	return out
}

func countOffsets(channel string, n int) func([]Item) bool {
	return func(items []Item) bool { return len(offsets(items)[channel]) >= n }
}

// assertRange checks that got is exactly from..to, each once, in order.
func assertRange(t testing.TB, got []uint64, from, to uint64) {
	t.Helper()
	if want := int(to - from + 1); len(got) != want {
		t.Fatalf("got %d offsets, want %d (%d..%d); first %v", len(got), want, from, to, head(got))
	}
	for i, o := range got {
		if o != from+uint64(i) {
			t.Fatalf("offset #%d is %d, want %d (gap, duplicate or reorder)", i, o, from+uint64(i))
		}
	}
}

func head(s []uint64) []uint64 {
	if len(s) > 10 {
		return s[:10]
	}
	return s
}

// authorizeOn is authorize for a channel whose rule is looked up here.
func authorizeOn(srv *Server, id Identity, action Action, channel string) error {
	cr := srv.rules.lookup(channel)
	return srv.authorize(id, action, &cr)
}

// limitOf is a history page limit.
func limitOf(n uint64) *uint64 { return &n }
