package e2e

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/heraldrt/herald/client"
)

// faultProxy is a TCP proxy on loopback that makes a bad network of a
// good one, in both directions: every chunk waits latency plus up to
// jitter, goes out in slices of slice bytes at most bytesPerSec, and a
// connection is reset (RST) after a random 0.3–1.5 s. stall freezes the
// connections open at that moment: they stay open and carry nothing (and
// are not reset), as a half-open TCP connection does, until the client
// gives up on one and closes it.
type faultProxy struct {
	ln          net.Listener
	target      string
	latency     time.Duration
	jitter      time.Duration
	slice       int
	bytesPerSec int

	resets atomic.Int64 // connections the proxy cut
	// calm, while set, puts off the reset of the connections whose time
	// comes (a browser test loads its page on a calm network): each is
	// reset a new 0.3–1.5 s later, so a kept-alive connection the page
	// was loaded on is reset too once the network is bad.
	calm atomic.Bool
	mu   sync.Mutex
	open map[*proxied]bool
	wg   sync.WaitGroup
}

// proxied is one client connection and its upstream.
type proxied struct {
	client, server net.Conn
	frozen         atomic.Bool
	done           atomic.Bool // its server → client copy has ended
}

func startFaultProxy(t *testing.T, target string) *faultProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &faultProxy{ln: ln, target: target, latency: 2 * time.Millisecond, jitter: 5 * time.Millisecond,
		slice: 1400, bytesPerSec: 1 << 20, open: map[*proxied]bool{}}
	p.wg.Go(p.accept)
	t.Cleanup(func() {
		ln.Close()
		p.mu.Lock()
		for c := range p.open {
			c.client.Close()
			c.server.Close()
		}
		p.mu.Unlock()
		p.wg.Wait()
	})
	return p
}

func (p *faultProxy) url() string { return "http://" + p.ln.Addr().String() }

func (p *faultProxy) accept() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		s, err := net.Dial("tcp", p.target)
		if err != nil {
			c.Close()
			continue
		}
		pc := &proxied{client: c, server: s}
		p.mu.Lock()
		p.open[pc] = true
		p.mu.Unlock()
		p.resetLater(pc)
		p.wg.Go(func() { defer pc.done.Store(true); p.pipe(pc, s, c) }) // server → client
		p.wg.Go(func() { p.pipe(pc, c, s) })                            // client → server
	}
}

// resetLater resets pc (RST both ways) after a random 0.3–1.5 s, unless
// it is frozen or gone by then; while the proxy is calm, it puts the
// reset off by another such time.
func (p *faultProxy) resetLater(pc *proxied) {
	life := 300*time.Millisecond + time.Duration(rand.Int64N(int64(1200*time.Millisecond)))
	time.AfterFunc(life, func() {
		switch {
		case pc.frozen.Load() || pc.done.Load():
			return
		case p.calm.Load():
			p.resetLater(pc)
			return
		}
		p.resets.Add(1)
		for _, conn := range []net.Conn{pc.client, pc.server} {
			if tc, ok := conn.(*net.TCPConn); ok {
				_ = tc.SetLinger(0) // close with RST
			}
			conn.Close()
		}
	})
}

// pipe copies from src to dst through the faults.
func (p *faultProxy) pipe(pc *proxied, src, dst net.Conn) {
	defer func() {
		p.mu.Lock()
		delete(p.open, pc)
		p.mu.Unlock()
		src.Close()
		dst.Close()
	}()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		for off := 0; off < n; {
			if pc.frozen.Load() {
				// Frozen: what arrives is dropped, until the client gives
				// up and closes (or, upstream, the other direction ends).
				_, _ = io.Copy(io.Discard, src)
				return
			}
			end := min(off+p.slice, n)
			delay := p.latency + time.Duration(rand.Int64N(int64(p.jitter)+1)) + time.Duration(end-off)*time.Second/time.Duration(p.bytesPerSec)
			time.Sleep(delay) // the fault itself: latency, jitter and bandwidth
			if _, err := dst.Write(buf[off:end]); err != nil {
				return
			}
			off = end
		}
		if err != nil {
			return
		}
	}
}

// stall freezes every connection open now, and returns how many.
func (p *faultProxy) stall() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	for c := range p.open {
		c.frozen.Store(true)
	}
	return len(p.open)
}

// The Go client through a bad network, on each transport: latency and
// jitter, a bandwidth cap and small slices on both directions, a reset
// of every connection after 0.3–1.5 s, and once every connection frozen open (SSE and
// WebSocket: the stream goes silent while its TCP connection stays up).
// The client gets 1..400 exactly once, in order; on SSE and WebSocket it
// notices the frozen stream by its silence (no heartbeat or ping for the
// stall timeout) and replaces it.
func TestGoClientThroughABadNetwork(t *testing.T) {
	t.Parallel()
	srv := startServer(t, "--config", writeConfig(t, "sse:\n  heartbeat: 1s\nws:\n  ping_interval: 1s\n"))
	for _, tr := range []client.Transport{client.SSE, client.WebSocket, client.LongPoll} {
		t.Run(string(tr), func(t *testing.T) {
			t.Parallel()
			const n = 400
			channel := "badnet_" + string(tr)
			px := startFaultProxy(t, srv.addr)
			c, err := client.New(px.url(), client.Options{Token: apiKey})
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
			defer cancel()
			sub, err := c.Subscribe(ctx, client.SubscribeOptions{Transport: tr, Channels: []string{channel},
				StallTimeout: 3 * time.Second, PollTimeout: 2 * time.Second, RetryMax: 500 * time.Millisecond})
			if err != nil {
				t.Fatal(err)
			}
			defer sub.Close()
			pubDone := make(chan error, 1)
			go func() {
				for i := 1; i <= n; i++ {
					data := fmt.Sprintf(`{"i":%d,"pad":"%0100d"}`, i, i)
					if _, err := publishRetrying(ctx, srv.url(), channel, data, fmt.Sprint(channel, i)); err != nil {
						pubDone <- err
						return
					}
					time.Sleep(5 * time.Millisecond) // a steady publisher, not a burst
				}
				pubDone <- nil
			}()
			var frozen int
			for want := uint64(1); want <= n; {
				ev, err := sub.Next(ctx)
				if err != nil {
					t.Fatalf("after %d of %d: %v (resets %d)", want-1, n, err, px.resets.Load())
				}
				if ev.Kind != client.KindMessage {
					t.Fatalf("a %s event at %d: %s", ev.Kind, want, ev.Raw)
				}
				if ev.Envelope.Offset != want {
					t.Fatalf("offset %d, want %d", ev.Envelope.Offset, want)
				}
				if want == n/2 && tr != client.LongPoll {
					frozen = px.stall()
				}
				want++
			}
			if err := <-pubDone; err != nil {
				t.Fatal(err)
			}
			if px.resets.Load() == 0 {
				t.Fatal("the proxy reset no connection: the test did not test resets")
			}
			if tr != client.LongPoll && frozen == 0 {
				t.Fatal("no connection was open to freeze")
			}
			t.Logf("%s: %d messages once, in order, through %d resets and %d frozen connections", tr, n, px.resets.Load(), frozen)
		})
	}
}
