package server

import (
	"context"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/heraldrt/herald/store"
)

// memBus is a store.Bus between the engines of one test: every listener
// of a topic hears every broadcast, in order.
type memBus struct {
	mu        sync.Mutex
	listeners map[string][]chan []byte
}

func (b *memBus) Broadcast(topic string, data []byte) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, ch := range b.listeners[topic] {
		select {
		case ch <- data:
		default: // best effort, as the real bus
		}
	}
	return nil
}

func (b *memBus) Listen(topic string, fn func([]byte)) (func(), error) {
	ch, quit, done := make(chan []byte, 16), make(chan struct{}), make(chan struct{})
	b.mu.Lock()
	b.listeners[topic] = append(b.listeners[topic], ch)
	b.mu.Unlock()
	go func() {
		defer close(done)
		for {
			select {
			case d := <-ch:
				fn(d)
			case <-quit:
				return
			}
		}
	}()
	return func() { close(quit); <-done }, nil
}

// busEngine is an in-memory store with a bus: one node of a test cluster.
type busEngine struct {
	*store.Store
	*memBus
}

// The per-user session limit holds across the nodes of a cluster: with
// two sessions on node A and a limit of 3, node B takes one and refuses
// the next, naming the user's 3 sessions; once A's close is heard, B
// takes one again.
func TestSessionLimitCountsEveryNode(t *testing.T) {
	t.Parallel()
	bus := &memBus{listeners: map[string][]chan []byte{}}
	node := func() *Server {
		st, err := store.Open(store.Options{InMemory: true})
		if err != nil {
			t.Fatal(err)
		}
		srv, err := New(Config{APIKey: testAPIKey, JWTSecret: testSecret, Logger: slog.New(slog.NewTextHandler(t.Output(), nil)),
			Rules: []RuleConfig{{Pattern: "room", Subscribe: []string{"authenticated"}}}, Limits: Limits{MaxSessionsPerUser: 3}}, busEngine{st, bus})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { srv.Shutdown(); _ = st.Close() })
		return srv
	}
	a, b := node(), node()
	a1 := openAs(t, a, userWith("9"), "room")
	openAs(t, a, userWith("9"), "room")
	open := func() (*Session, error) {
		sess, _, err := b.Transport("test").Open(context.Background(), userWith("9"), OpenRequest{Channels: []string{"room"}})
		return sess, err
	}
	if _, err := open(); err != nil {
		t.Fatalf("B's first session of the user: %v", err)
	}
	// B refuses a second once it has heard of A's two (one taken before
	// that is closed again, and B tries anew).
	deadline := time.Now().Add(10 * time.Second)
	for {
		sess, err := open()
		if err == nil {
			sess.Close(ReasonClientGone)
		} else if e := AsError(err); e.Code == 429 && strings.Contains(e.Message, `user "9" has 3 open sessions, the limit is 3`) {
			break
		} else {
			t.Fatal(err)
		}
		if time.Now().After(deadline) {
			t.Fatal("B still takes a fourth session of the user")
		}
		time.Sleep(50 * time.Millisecond) // the counts come every second: polled
	}
	a1.Close(ReasonClientGone)
	deadline = time.Now().Add(10 * time.Second)
	for {
		if _, err := open(); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("B does not take a session after A closed one")
		}
		time.Sleep(50 * time.Millisecond) // the counts come every second: polled
	}
}
