package watch

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/heraldrt/herald/transports/internal/writer"
)

// hidden hides a connection's descriptor, so that the Watcher reads it
// with a goroutine (as it does without epoll, or for TLS).
type hidden struct{ net.Conn }

var modes = []struct {
	name string
	wrap func(net.Conn) net.Conn
}{
	{"socket", func(c net.Conn) net.Conn { return c }},
	{"goroutine", func(c net.Conn) net.Conn { return hidden{c} }},
}

// tcpPair returns the two ends of a loopback TCP connection.
func tcpPair(t *testing.T) (server, client net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	dialed := make(chan net.Conn, 1)
	go func() {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Error(err)
		}
		dialed <- c
	}()
	s, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	c := <-dialed
	if c == nil {
		t.FailNow()
	}
	t.Cleanup(func() { s.Close(); c.Close() })
	return s, c
}

// recorder is an OnRead that keeps what it got and signals each call.
type recorder struct {
	mu    sync.Mutex
	got   bytes.Buffer
	err   error
	calls chan struct{}
	pause bool // answer "no more" to the next call
}

func newRecorder() *recorder { return &recorder{calls: make(chan struct{}, 1024)} }

func (r *recorder) onRead(p []byte, err error) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.got.Write(p)
	if err != nil {
		r.err = err
	}
	r.calls <- struct{}{}
	if r.pause {
		r.pause = false
		return false
	}
	return true
}

// waitFor waits until what arrived satisfies cond.
func (r *recorder) waitFor(t *testing.T, what string, cond func(got string, err error) bool) {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		r.mu.Lock()
		ok := cond(r.got.String(), r.err)
		r.mu.Unlock()
		if ok {
			return
		}
		select {
		case <-r.calls:
		case <-deadline:
			r.mu.Lock()
			defer r.mu.Unlock()
			t.Fatalf("waiting for %s: got %q, %v", what, r.got.String(), r.err)
		}
	}
}

func waitGroup(t *testing.T, g *writer.Group) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := g.Wait(ctx); err != nil {
		t.Errorf("goroutines left running: %v", err)
	}
}

func TestWhatTheClientSendsArrivesInOrderThenItsClose(t *testing.T) {
	t.Parallel()
	for _, mode := range modes {
		t.Run(mode.name, func(t *testing.T) {
			t.Parallel()
			var g writer.Group
			w := New(&g)
			// Many connections on one watcher, each with its own stream.
			const conns = 50
			type pair struct {
				srv, cli net.Conn
				rec      *recorder
				wt       *Watch
			}
			pairs := make([]pair, conns)
			for i := range pairs {
				s, c := tcpPair(t)
				rec := newRecorder()
				wt, ok := w.Watch(mode.wrap(s), rec.onRead)
				if !ok {
					t.Fatal("watch refused")
				}
				pairs[i] = pair{s, c, rec, wt}
			}
			var want [conns]string
			for round := range 20 {
				for i, p := range pairs {
					chunk := fmt.Sprintf("conn %d round %d;", i, round)
					want[i] += chunk
					if _, err := p.cli.Write([]byte(chunk)); err != nil {
						t.Fatal(err)
					}
				}
			}
			for i, p := range pairs {
				p.cli.Close()
				p.rec.waitFor(t, "everything, then the end", func(got string, err error) bool {
					return got == want[i] && errors.Is(err, io.EOF)
				})
			}
			for _, p := range pairs {
				p.wt.Stop()
				p.srv.Close()
			}
			waitGroup(t, &g) // the loop ends with the last watch
		})
	}
}

func TestAPausedConnectionIsNotReadUntilResumed(t *testing.T) {
	t.Parallel()
	for _, mode := range modes {
		t.Run(mode.name, func(t *testing.T) {
			t.Parallel()
			var g writer.Group
			w := New(&g)
			s, c := tcpPair(t)
			rec := newRecorder()
			rec.pause = true
			wt, ok := w.Watch(mode.wrap(s), rec.onRead)
			if !ok {
				t.Fatal("watch refused")
			}
			if _, err := c.Write([]byte("first")); err != nil {
				t.Fatal(err)
			}
			rec.waitFor(t, "the first read", func(got string, _ error) bool { return got == "first" })
			for len(rec.calls) > 0 {
				<-rec.calls // the first read's signal, when waitFor found it done already
			}
			// Paused: what the client sends now waits in the socket.
			if _, err := c.Write([]byte("second")); err != nil {
				t.Fatal(err)
			}
			// The client's close comes after it: had the connection been
			// read meanwhile, "second" and the end would already be here.
			c.Close()
			select {
			case <-rec.calls:
				t.Fatal("a paused connection was read")
			case <-time.After(50 * time.Millisecond): // a bound, not a wait for an event: nothing must come
			}
			wt.Resume()
			rec.waitFor(t, "the rest after Resume", func(got string, err error) bool {
				return got == "firstsecond" && errors.Is(err, io.EOF)
			})
			wt.Stop()
			s.Close()
			waitGroup(t, &g)
		})
	}
}

func TestAStoppedWatchIsNotCalledAgain(t *testing.T) {
	t.Parallel()
	for _, mode := range modes {
		t.Run(mode.name, func(t *testing.T) {
			t.Parallel()
			var g writer.Group
			w := New(&g)
			s, c := tcpPair(t)
			rec := newRecorder()
			wt, ok := w.Watch(mode.wrap(s), rec.onRead)
			if !ok {
				t.Fatal("watch refused")
			}
			wt.Stop()
			s.Close() // what a transport does when it ends a connection
			c.Write([]byte("late"))
			c.Close()
			waitGroup(t, &g) // every goroutine of the watcher has ended
			rec.mu.Lock()
			defer rec.mu.Unlock()
			if rec.got.Len() > 0 || rec.err != nil {
				t.Errorf("a stopped watch got %q, %v", rec.got.String(), rec.err)
			}
		})
	}
}

func TestAWatcherStartsAgainAfterItsLastWatchEnded(t *testing.T) {
	t.Parallel()
	var g writer.Group
	w := New(&g)
	for round := range 3 {
		s, c := tcpPair(t)
		rec := newRecorder()
		wt, ok := w.Watch(s, rec.onRead)
		if !ok {
			t.Fatal("watch refused")
		}
		msg := fmt.Sprintf("round %d", round)
		c.Write([]byte(msg))
		rec.waitFor(t, msg, func(got string, _ error) bool { return got == msg })
		wt.Stop()
		s.Close()
	}
	waitGroup(t, &g)
	if _, ok := w.Watch(nil, nil); ok {
		t.Error("a watcher whose group is waited for took a connection")
	}
}

func TestAStoppedWatchHandsTheConnectionOnIntact(t *testing.T) {
	t.Parallel()
	for _, mode := range modes {
		t.Run(mode.name, func(t *testing.T) {
			t.Parallel()
			var g writer.Group
			w := New(&g)
			s, c := tcpPair(t)
			conn := mode.wrap(s)
			rec := newRecorder()
			wt, ok := w.Watch(conn, rec.onRead)
			if !ok {
				t.Fatal("watch refused")
			}
			c.Write([]byte("watched"))
			rec.waitFor(t, "watched", func(got string, _ error) bool { return got == "watched" })
			wt.Stop()
			// What comes after Stop is the next reader's, with no deadline
			// left behind.
			c.Write([]byte("next"))
			buf := make([]byte, 16)
			n, err := io.ReadAtLeast(conn, buf, len("next"))
			if err != nil || string(buf[:n]) != "next" {
				t.Fatalf("reading after Stop: %q, %v", buf[:n], err)
			}
			rec.mu.Lock()
			if rec.got.String() != "watched" || rec.err != nil {
				t.Errorf("the stopped watch got %q, %v", rec.got.String(), rec.err)
			}
			rec.mu.Unlock()
			s.Close()
			waitGroup(t, &g)
		})
	}
}
