package writer

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
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

// lineFramer frames each message as its envelope on a line, a heartbeat
// as "beat", and a close the client is told of as "bye <reason>"; it
// reports the messages of every write on writes.
type lineFramer struct {
	sess   *server.Session
	writes chan int
}

func (f *lineFramer) Frame(t *Turn) int {
	if t.Kind == TurnClose {
		if r := f.sess.Reason(); r.Told() {
			t.Items = f.sess.Drain(t.Items[:0])
			t.Buf = appendLines(t.Buf, t.Items)
			clear(t.Items)
			t.Buf = append(t.Buf, "bye "+r.String()+"\n"...)
		}
		return 0
	}
	t.Items = f.sess.Drain(t.Items[:0])
	n := len(t.Items)
	t.Buf = appendLines(t.Buf, t.Items)
	clear(t.Items)
	if t.Kind == TurnHeartbeat {
		t.Buf = append(t.Buf, "beat\n"...)
	}
	if n > 0 && f.writes != nil {
		f.writes <- n
	}
	return n
}

func appendLines(b []byte, items []server.Item) []byte {
	for _, it := range items {
		if it.Kind == server.KindMessage {
			b = append(append(b, it.Msg.Raw...), '\n')
		}
	}
	return b
}

// noRaw hides a connection's descriptor, so that every write takes the
// slow path (as on a platform without non-blocking writes, or over TLS).
type noRaw struct{ net.Conn }

// modes runs a test with writes that never wait (a TCP socket) and with
// writes that all go through the slow path.
var modes = []struct {
	name string
	wrap func(net.Conn) net.Conn
}{
	{"nonblocking", func(c net.Conn) net.Conn { return c }},
	{"slowpath", func(c net.Conn) net.Conn { return noRaw{c} }},
}

// tcpPair returns the two ends of a loopback TCP connection.
func tcpPair(t *testing.T) (server, client *net.TCPConn) {
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
	return s.(*net.TCPConn), c.(*net.TCPConn)
}

// reading reads lines from r until EOF on a goroutine of its own: full is
// closed once n messages came, and got then has the messages' offsets
// and the other lines.
func reading(t *testing.T, r io.Reader, n int) (full <-chan struct{}, got <-chan lines) {
	fullc, gotc := make(chan struct{}), make(chan lines, 1)
	go func() {
		var l lines
		l.offs, l.other = offsets(t, r, func(k int) {
			if k == n {
				close(fullc)
			}
		})
		if len(l.offs) < n {
			close(fullc)
		}
		gotc <- l
	}()
	return fullc, gotc
}

type lines struct {
	offs  []uint64
	other []string
}

// offsets reads lines until EOF, returning the messages' offsets and the
// other lines; each calls counted with the number of messages so far.
func offsets(t *testing.T, r io.Reader, counted func(int)) (offs []uint64, other []string) {
	sc := bufio.NewScanner(r)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, "{") {
			other = append(other, line)
			continue
		}
		var env struct{ Offset uint64 }
		if err := json.Unmarshal([]byte(line), &env); err != nil {
			t.Errorf("line %q: %v", line, err)
			continue
		}
		offs = append(offs, env.Offset)
		counted(len(offs))
	}
	return offs, other
}

func wantSequence(t *testing.T, got []uint64, n int) {
	t.Helper()
	if len(got) != n {
		t.Fatalf("got %d messages, want %d", len(got), n)
	}
	for i, o := range got {
		if o != uint64(i+1) {
			t.Fatalf("message %d has offset %d: lost, repeated or out of order", i, o)
		}
	}
}

func stop(t *testing.T, group *Group) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := group.Wait(ctx); err != nil {
		t.Error(err)
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
	f := NewFlusher(&group, Options{Coalesce: time.Millisecond})
	conn, peer := tcpPair(t)
	go io.Copy(io.Discard, peer) //nolint:errcheck // ends when the connection does
	fr := &lineFramer{sess: sess, writes: make(chan int, 16)}
	if _, ok := f.Start(sess, conn, fr, nil); !ok {
		t.Fatal("flusher refused")
	}
	defer stop(t, &group)
	defer sess.Close(server.ReasonClientGone)
	// Each step waits for its write before the next publishes, so a
	// flusher slowed by a busy machine cannot see two steps at once.
	steps := []struct {
		what        string
		first, last int
	}{
		{"the first message after a quiet spell goes at once", 1, 1},
		{"five more within the hold go in one write, as soon as five are queued", 2, 6},
		{"two more are held until the timeout, then written together", 7, 8},
	}
	for _, st := range steps {
		publishN(t, srv, "ticks", st.first, st.last)
		if got, want := <-fr.writes, st.last-st.first+1; got != want {
			t.Fatalf("%s: a write of %d messages, want %d", st.what, got, want)
		}
	}
}

func TestABacklogBiggerThanTheSocketArrivesWholeAndInOrder(t *testing.T) {
	t.Parallel()
	for _, mode := range modes {
		t.Run(mode.name, func(t *testing.T) {
			t.Parallel()
			srv := newTestServer(t, server.Config{})
			var group Group
			f := NewFlusher(&group, Options{Shards: 1})
			const n = 300
			sess := open(t, srv, server.Identity{System: true}, "c")
			conn, peer := tcpPair(t)
			// Small buffers (tiny ones stall loopback TCP on its
			// zero-window probes), far smaller than the backlog.
			_ = conn.SetWriteBuffer(16 << 10)
			_ = peer.SetReadBuffer(64 << 10)
			if _, ok := f.Start(sess, mode.wrap(conn), &lineFramer{sess: sess}, nil); !ok {
				t.Fatal("flusher refused")
			}
			// 300 messages of 2 KiB, far more than the socket holds, published
			// before the reader reads anything: writes are cut short and
			// finished by the slow path, and the stream goes back to its
			// loop between them.
			pad := strings.Repeat("x", 2048)
			for i := 1; i <= n; i++ {
				if _, err := srv.Publish(context.Background(), server.Identity{System: true}, server.PublishRequest{
					Channel: "c", Data: json.RawMessage(fmt.Sprintf(`{"n":%d,"pad":%q}`, i, pad)),
				}); err != nil {
					t.Fatal(err)
				}
			}
			full, got := reading(t, peer, n)
			<-full
			sess.Close(server.ReasonShutdown)
			wantSequence(t, (<-got).offs, n)
			stop(t, &group)
		})
	}
}

func TestASlowReaderIsDroppedWhileOthersKeepReceiving(t *testing.T) {
	t.Parallel()
	for _, mode := range modes {
		t.Run(mode.name, func(t *testing.T) {
			t.Parallel()
			srv := newTestServer(t, server.Config{})
			var group Group
			// One shard: the slow stream and the good one share a loop.
			f := NewFlusher(&group, Options{Shards: 1, WriteTimeout: 300 * time.Millisecond})
			slow := open(t, srv, server.Identity{System: true}, "c")
			slowConn, slowPeer := tcpPair(t)
			_ = slowConn.SetWriteBuffer(4096)
			_ = slowPeer.SetReadBuffer(4096)
			good := open(t, srv, server.Identity{System: true}, "c")
			goodConn, goodPeer := tcpPair(t)
			for _, s := range []struct {
				sess *server.Session
				conn net.Conn
			}{{slow, slowConn}, {good, goodConn}} {
				if _, ok := f.Start(s.sess, mode.wrap(s.conn), &lineFramer{sess: s.sess}, nil); !ok {
					t.Fatal("flusher refused")
				}
			}
			const n = 200
			full, got := reading(t, goodPeer, n)
			pad := strings.Repeat("x", 4096)
			for i := 1; i <= n; i++ {
				if _, err := srv.Publish(context.Background(), server.Identity{System: true}, server.PublishRequest{
					Channel: "c", Data: json.RawMessage(fmt.Sprintf(`{"n":%d,"pad":%q}`, i, pad)),
				}); err != nil {
					t.Fatal(err)
				}
			}
			// The slow reader never reads: its write times out and it is
			// dropped as a slow consumer.
			select {
			case <-slow.Done():
			case <-time.After(30 * time.Second):
				t.Fatal("the slow reader was never dropped")
			}
			if r := slow.Reason(); r != server.ReasonSlowConsumer {
				t.Errorf("slow reader closed with %v, want %v", r, server.ReasonSlowConsumer)
			}
			<-full
			good.Close(server.ReasonShutdown)
			wantSequence(t, (<-got).offs, n)
			stop(t, &group)
		})
	}
}

func TestQuietStreamsGetHeartbeats(t *testing.T) {
	t.Parallel()
	for _, steady := range []bool{false, true} {
		t.Run(fmt.Sprintf("steady=%v", steady), func(t *testing.T) {
			t.Parallel()
			srv := newTestServer(t, server.Config{})
			var group Group
			f := NewFlusher(&group, Options{Heartbeat: 50 * time.Millisecond, Steady: steady})
			sess := open(t, srv, server.Identity{System: true}, "c")
			conn, peer := tcpPair(t)
			if _, ok := f.Start(sess, conn, &lineFramer{sess: sess}, nil); !ok {
				t.Fatal("flusher refused")
			}
			sc := bufio.NewScanner(peer)
			for beats := 0; beats < 3; {
				if !sc.Scan() {
					t.Fatalf("stream ended after %d heartbeats: %v", beats, sc.Err())
				}
				if sc.Text() == "beat" {
					beats++
				}
			}
			sess.Close(server.ReasonClientGone)
			stop(t, &group)
		})
	}
}

func TestCloseSendsTheRestAndWhyThenEnds(t *testing.T) {
	t.Parallel()
	for _, mode := range modes {
		t.Run(mode.name, func(t *testing.T) {
			t.Parallel()
			srv := newTestServer(t, server.Config{})
			var group Group
			f := NewFlusher(&group, Options{})
			sess := open(t, srv, server.Identity{System: true}, "c")
			conn, peer := tcpPair(t)
			closed := make(chan struct{})
			if _, ok := f.Start(sess, mode.wrap(conn), &lineFramer{sess: sess}, func() { close(closed) }); !ok {
				t.Fatal("flusher refused")
			}
			full, got := reading(t, peer, 3)
			publishN(t, srv, "c", 1, 3)
			<-full
			publishN(t, srv, "c", 4, 5) // queued, or not yet: they come before the close line if they do
			sess.Close(server.ReasonShutdown)
			l := <-got // until the end of the connection
			if len(l.offs) < 3 {
				t.Fatalf("got %d messages, want 3 or more", len(l.offs))
			}
			wantSequence(t, l.offs, len(l.offs))
			if len(l.other) != 1 || l.other[0] != "bye shutdown" {
				t.Errorf("after the messages: %q, want the close line", l.other)
			}
			<-closed
			stop(t, &group)
		})
	}
}
