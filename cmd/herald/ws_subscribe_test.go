package main

import (
	"errors"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/gorilla/websocket"
)

// ---- (a) an abnormal close, then a resume by since and epoch ----

func TestWSSubscribeResumesAfterAbnormalClose(t *testing.T) {
	const prefix = "/herald"
	srv, sc := newWSServer(t, prefix,
		func(c *wsTestConn) {
			c.connected()
			a := c.expectSubscribe("A", "-", "")
			b := c.expectSubscribe("B", "-", "")
			c.subscribed(a, "e1", 0)
			c.subscribed(b, "e2", 5)
			c.send(batchPush(envelopeJSON("A", "e1", 1), envelopeJSON("A", "e1", 2)), msgPush(envelopeJSON("B", "e2", 6)))
			c.abort()
		},
		func(c *wsTestConn) {
			c.connected()
			a := c.expectSubscribe("A", "2", "e1")
			b := c.expectSubscribe("B", "6", "e2")
			c.subscribed(a, "e1", 2)
			c.subscribed(b, "e2", 6)
			c.send(msgPush(envelopeJSON("A", "e1", 3)))
		},
	)
	out, stderr, err := runWSSub(t, srv, prefix, "--channel", "A", "--channel", "B", "--max", "4")
	if err != nil {
		t.Fatalf("subscribe: %v\nstderr: %s", err, stderr)
	}
	want := jsonLines(envelopeJSON("A", "e1", 1), envelopeJSON("A", "e1", 2), envelopeJSON("B", "e2", 6), envelopeJSON("A", "e1", 3))
	if out != want {
		t.Errorf("output:\n%s\nwant:\n%s", out, want)
	}
	reqs := sc.requests()
	if len(reqs) != 2 {
		t.Fatalf("%d connections, want 2", len(reqs))
	}
	for i, r := range reqs {
		if r.auth != "Bearer tok" {
			t.Errorf("connection %d Authorization = %q, want Bearer tok", i+1, r.auth)
		}
	}
	if reqs[1].end != websocket.CloseNormalClosure {
		t.Errorf("after --max the client ended the connection with %d, want a normal close", reqs[1].end)
	}
}

// ---- (b) a replayed duplicate is dropped ----

func TestWSSubscribeDropsReplayedDuplicate(t *testing.T) {
	srv, _ := newWSServer(t, "",
		func(c *wsTestConn) {
			c.connected()
			c.subscribed(c.expectSubscribe("A", "-", ""), "e1", 0)
			c.send(msgPush(envelopeJSON("A", "e1", 1)), msgPush(envelopeJSON("A", "e1", 2)))
			c.abort()
		},
		func(c *wsTestConn) {
			c.connected()
			c.subscribed(c.expectSubscribe("A", "2", "e1"), "e1", 3)
			c.send(batchPush(envelopeJSON("A", "e1", 1), envelopeJSON("A", "e1", 2), envelopeJSON("A", "e1", 3)))
		},
	)
	out, stderr, err := runWSSub(t, srv, "", "--channel", "A", "--max", "3", "--verbose")
	if err != nil {
		t.Fatalf("subscribe: %v\nstderr: %s", err, stderr)
	}
	want := jsonLines(envelopeJSON("A", "e1", 1), envelopeJSON("A", "e1", 2), envelopeJSON("A", "e1", 3))
	if out != want {
		t.Errorf("output:\n%s\nwant:\n%s", out, want)
	}
	if n := strings.Count(stderr, "dropped a replayed message"); n != 2 {
		t.Errorf("stderr logs %d dropped duplicates, want 2:\n%s", n, stderr)
	}
	for _, s := range []string{"connected: session s_test, user 17", "subscribed A: head e1:0", "resume with --since \"3\" --epoch \"e1\""} {
		if !strings.Contains(stderr, s) {
			t.Errorf("verbose stderr lacks %q:\n%s", s, stderr)
		}
	}
}

// ---- (c) a gap: resubscribe from the last good offset ----

func TestWSSubscribeGapResubscribes(t *testing.T) {
	srv, sc := newWSServer(t, "",
		func(c *wsTestConn) {
			c.connected()
			c.subscribed(c.expectSubscribe("A", "-", ""), "e1", 0)
			c.send(batchPush(envelopeJSON("A", "e1", 1), envelopeJSON("A", "e1", 3)), // 2 is missing
				msgPush(envelopeJSON("A", "e1", 4))) // must not be taken either
		},
		func(c *wsTestConn) {
			c.connected()
			c.subscribed(c.expectSubscribe("A", "1", "e1"), "e1", 4)
			c.send(batchPush(envelopeJSON("A", "e1", 2), envelopeJSON("A", "e1", 3)))
		},
	)
	out, stderr, err := runWSSub(t, srv, "", "--channel", "A", "--max", "3")
	if err != nil {
		t.Fatalf("subscribe: %v\nstderr: %s", err, stderr)
	}
	want := jsonLines(envelopeJSON("A", "e1", 1), envelopeJSON("A", "e1", 2), envelopeJSON("A", "e1", 3))
	if out != want {
		t.Errorf("output:\n%s\nwant:\n%s", out, want)
	}
	if !strings.Contains(stderr, "gap, expected offset 2, got 3") {
		t.Errorf("stderr does not explain the gap:\n%s", stderr)
	}
	if end := sc.requests()[0].end; end != websocket.CloseProtocolError {
		t.Errorf("the client ended the gapped connection with %d", end)
	}
}

// ---- (d) a reset moves the position; ephemeral and unsubscribed ----

func TestWSSubscribeReset(t *testing.T) {
	reset := `{"channel":"A","epoch":"e2","event":"herald.reset","data":{"reason":"epoch_changed","epoch":"e2","resume_after":2,"head":4},"time":"2026-11-26T16:52:20.123Z"}`
	ephemeral := `{"channel":"A","id":"m_x","event":"typing","data":{"user":"17"},"time":"2026-11-26T16:52:20.123Z"}`
	srv, _ := newWSServer(t, "",
		func(c *wsTestConn) {
			c.connected()
			c.subscribed(c.expectSubscribe("A", "41", "e1"), "e2", 4)
			c.send(`{"type":"reset","message":`+reset+`}`, msgPush(ephemeral),
				`{"type":"presence","channel":"A","members":[]}`)
			c.abort()
		},
		func(c *wsTestConn) {
			c.connected()
			c.subscribed(c.expectSubscribe("A", "2", "e2"), "e2", 4)
			c.send(batchPush(envelopeJSON("A", "e2", 3), envelopeJSON("A", "e2", 4)))
			c.send(`{"type":"unsubscribed","channel":"A","reason":"revoked"}`)
		},
	)
	out, stderr, err := runWSSub(t, srv, "", "--channel", "A", "--since", "41", "--epoch", "e1", "--max", "5")
	if err != nil {
		t.Fatalf("subscribe: %v\nstderr: %s", err, stderr)
	}
	lines := strings.SplitAfter(out, "\n")
	want := jsonLines(reset, ephemeral, envelopeJSON("A", "e2", 3), envelopeJSON("A", "e2", 4))
	if len(lines) != 6 || strings.Join(lines[:4], "") != want ||
		!strings.HasPrefix(lines[4], `{"channel":"A","event":"herald.unsubscribed","data":{"reason":"revoked"},"time":"`) {
		t.Errorf("output:\n%s\nwant:\n%s{herald.unsubscribed…}", out, want)
	}
}

// ---- (e) refusals stop, transient failures retry ----

func TestWSSubscribeStopsOnRefusal(t *testing.T) {
	cases := []struct {
		name    string
		conn    func(c *wsTestConn)
		wantErr string
	}{
		{"403 reply", func(c *wsTestConn) {
			c.connected()
			op := c.expectSubscribe("A", "-", "")
			c.replyError(op.ID, 403, `not allowed to subscribe channel "A"`)
		}, `subscribe "A": server answered 403 Forbidden: not allowed to subscribe channel "A"`},
		{"400 reply", func(c *wsTestConn) {
			c.connected()
			op := c.expectSubscribe("A", "-", "")
			c.replyError(op.ID, 400, "since is ahead")
		}, "400 Bad Request: since is ahead"},
		{"4001 close", func(c *wsTestConn) {
			c.closeWith(4001, "token is expired")
		}, "the server closed the connection: 4001 unauthorized: token is expired"},
		{"1009 close", func(c *wsTestConn) {
			c.connected()
			c.expectSubscribe("A", "-", "")
			c.closeWith(websocket.CloseMessageTooBig, "")
		}, "1009 frame too big"},
		{"401 upgrade answer", func(c *wsTestConn) {
			c.refuse(401, "token signature is invalid")
		}, "server answered 401 Unauthorized: token signature is invalid"},
		{"disconnect for good", func(c *wsTestConn) {
			c.connected()
			c.subscribed(c.expectSubscribe("A", "-", ""), "e1", 0)
			c.send(`{"type":"disconnect","code":4008,"reason":"revoked","reconnect":false}`)
		}, "the server closed the stream for good: revoked"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			srv, sc := newWSServer(t, "", tc.conn)
			_, stderr, err := runWSSub(t, srv, "", "--channel", "A")
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("err = %v, want one containing %q\nstderr: %s", err, tc.wantErr, stderr)
			}
			if n := len(sc.requests()); n != 1 {
				t.Errorf("%d connections, want 1", n)
			}
		})
	}
}

func TestWSSubscribeRetries(t *testing.T) {
	srv, sc := newWSServer(t, "",
		func(c *wsTestConn) { c.refuse(503, "starting") },
		func(c *wsTestConn) {
			c.connected()
			c.replyError(c.expectSubscribe("A", "-", "").ID, 429, "too many subscriptions")
		},
		func(c *wsTestConn) {
			c.connected()
			c.subscribed(c.expectSubscribe("A", "-", ""), "e1", 0)
			c.send(msgPush(envelopeJSON("A", "e1", 1)), `{"type":"disconnect","code":1012,"reason":"shutdown","reconnect":true}`)
			c.closeWith(websocket.CloseServiceRestart, "shutdown")
		},
		func(c *wsTestConn) {
			c.connected()
			c.expectSubscribe("A", "1", "e1")
			c.closeWith(4009, "slow consumer")
		},
		func(c *wsTestConn) {
			c.connected()
			c.subscribed(c.expectSubscribe("A", "1", "e1"), "e1", 1)
			c.closeWith(websocket.CloseInternalServerErr, "")
		},
		func(c *wsTestConn) {
			c.connected()
			c.subscribed(c.expectSubscribe("A", "1", "e1"), "e1", 2)
			c.send(msgPush(envelopeJSON("A", "e1", 2)))
		},
	)
	out, stderr, err := runWSSub(t, srv, "", "--channel", "A", "--max", "2", "-v")
	if err != nil {
		t.Fatalf("subscribe: %v\nstderr: %s", err, stderr)
	}
	if want := jsonLines(envelopeJSON("A", "e1", 1), envelopeJSON("A", "e1", 2)); out != want {
		t.Errorf("output:\n%s\nwant:\n%s", out, want)
	}
	if n := len(sc.requests()); n != 6 {
		t.Errorf("%d connections, want 6", n)
	}
	for _, s := range []string{"503 Service Unavailable: starting", `subscribe "A": server answered 429 Too Many Requests`, "4009 slow consumer", "1011 internal error"} {
		if !strings.Contains(stderr, s) {
			t.Errorf("stderr lacks %q:\n%s", s, stderr)
		}
	}
}

// ---- (g) stop conditions, stalls and pings ----

func TestWSSubscribeMax(t *testing.T) {
	srv, sc := newWSServer(t, "", func(c *wsTestConn) {
		c.connected()
		c.subscribed(c.expectSubscribe("A", "-", ""), "e1", 0)
		for i := 1; i <= 4; i++ {
			c.send(msgPush(envelopeJSON("A", "e1", i)))
		}
	})
	out, _, err := runWSSub(t, srv, "", "--channel", "A", "--max", "2")
	if err != nil {
		t.Fatalf("subscribe: %v", err)
	}
	if want := jsonLines(envelopeJSON("A", "e1", 1), envelopeJSON("A", "e1", 2)); out != want {
		t.Errorf("output:\n%s\nwant:\n%s", out, want)
	}
	reqs := sc.requests()
	if len(reqs) != 1 || reqs[0].end != websocket.CloseNormalClosure {
		t.Errorf("connections %+v, want one, closed normally", reqs)
	}
}

func TestWSSubscribeStallResumes(t *testing.T) {
	srv, _ := newWSServer(t, "",
		func(c *wsTestConn) {
			c.connected()
			c.subscribed(c.expectSubscribe("A", "-", ""), "e1", 0)
			c.silent()
		},
		func(c *wsTestConn) {
			c.connected()
			c.subscribed(c.expectSubscribe("A", "0", "e1"), "e1", 1)
			c.send(msgPush(envelopeJSON("A", "e1", 1)))
		},
	)
	// The stall timeout is what the second connection must beat: long
	// next to a loopback exchange on a busy machine.
	out, stderr, err := runWSSub(t, srv, "", "--channel", "A", "--max", "1", "--stall-timeout", "2s", "-v")
	if err != nil {
		t.Fatalf("subscribe: %v\nstderr: %s", err, stderr)
	}
	if want := jsonLines(envelopeJSON("A", "e1", 1)); out != want {
		t.Errorf("output %q, want %q", out, want)
	}
	if !strings.Contains(stderr, "no frame and no ping for 2s (--stall-timeout)") {
		t.Errorf("stderr does not log the stall:\n%s", stderr)
	}
}

func TestWSSubscribePings(t *testing.T) {
	var pongs atomic.Int32
	srv, _ := newWSServer(t, "", func(c *wsTestConn) {
		c.connected()
		c.subscribed(c.expectSubscribe("A", "-", ""), "e1", 0)
		c.conn().SetPongHandler(func(string) error { pongs.Add(1); return nil })
		if err := c.conn().WriteMessage(websocket.PingMessage, []byte("hb")); err != nil {
			t.Errorf("server ping: %v", err)
		}
		// The client answers the ping, and sends ping ops; the pong is seen
		// while reading them.
		pingOps := 0
		for pingOps == 0 || pongs.Load() == 0 {
			op, _, ok := c.next()
			if !ok {
				return
			}
			if op.Op != "ping" {
				t.Errorf("op %q, want ping", op.Op)
			}
			pingOps++
			c.reply(op.ID, "")
		}
		c.send(msgPush(envelopeJSON("A", "e1", 1)))
	})
	out, stderr, err := runWSSub(t, srv, "", "--channel", "A", "--max", "1", "--stall-timeout", "3s")
	if err != nil {
		t.Fatalf("subscribe: %v\nstderr: %s", err, stderr)
	}
	if want := jsonLines(envelopeJSON("A", "e1", 1)); out != want {
		t.Errorf("output %q, want %q", out, want)
	}
}

func TestWSSubscribeBadFrames(t *testing.T) {
	srv, _ := newWSServer(t, "",
		func(c *wsTestConn) {
			c.connected()
			c.subscribed(c.expectSubscribe("A", "-", ""), "e1", 0)
			c.send(msgPush(envelopeJSON("A", "e1", 1)), `{"type":"message","message":{"channel":"A","offs`)
		},
		func(c *wsTestConn) {
			c.connected()
			c.subscribed(c.expectSubscribe("A", "1", "e1"), "e1", 1)
			c.send(`{"type":"message","message":{"channel":"A","epoch":"e9","offset":2}}`) // epoch change without reset
		},
		func(c *wsTestConn) {
			c.connected()
			c.subscribed(c.expectSubscribe("A", "1", "e1"), "e1", 2)
			c.send(msgPush(envelopeJSON("B", "e1", 1)), msgPush(envelopeJSON("A", "e1", 2)))
		},
	)
	out, stderr, err := runWSSub(t, srv, "", "--channel", "A", "--max", "2")
	if err != nil {
		t.Fatalf("subscribe: %v\nstderr: %s", err, stderr)
	}
	if want := jsonLines(envelopeJSON("A", "e1", 1), envelopeJSON("A", "e1", 2)); out != want {
		t.Errorf("output:\n%s\nwant:\n%s", out, want)
	}
	for _, s := range []string{"not a JSON object", `a message of epoch "e9" while at epoch "e1"`} {
		if !strings.Contains(stderr, s) {
			t.Errorf("stderr lacks %q:\n%s", s, stderr)
		}
	}
}

func TestWSSubscribeTimeout(t *testing.T) {
	srv, sc := newWSServer(t, "", func(c *wsTestConn) {
		c.connected()
		c.subscribed(c.expectSubscribe("A", "-", ""), "e1", 0)
		c.send(msgPush(envelopeJSON("A", "e1", 1)))
	})
	out, _, err := runWSSub(t, srv, "", "--channel", "A", "--timeout", "2s")
	var idle *idleTimeout
	if !errors.As(err, &idle) {
		t.Fatalf("err = %v, want the --timeout error", err)
	}
	if want := jsonLines(envelopeJSON("A", "e1", 1)); out != want {
		t.Errorf("output %q, want %q", out, want)
	}
	if reqs := sc.requests(); len(reqs) != 1 || reqs[0].end != websocket.CloseNormalClosure {
		t.Errorf("connections %+v, want one, closed normally", reqs)
	}
}

func TestTrackerSkipMovesThePositionPastOwnMessages(t *testing.T) {
	t.Parallel()
	tr := newTracker(subscribeOptions{channels: []string{"room"}, since: []string{"3"}, epochs: []string{"e1"}})
	cases := []struct {
		name    string
		o       outcome
		verdict verdict
	}{
		{"skip of the next offset", tr.skip("room", "e1", 4), verdictIgnore},
		{"the message after it", tr.message([]byte(`{"channel":"room","offset":5,"epoch":"e1","event":"message","data":1}`), false), verdictPrint},
		{"a replayed skip", tr.skip("room", "e1", 5), verdictDuplicate},
		{"a skip past a gap", tr.skip("room", "e1", 9), verdictBroken},
		{"another epoch", tr.skip("room", "e2", 6), verdictBroken},
	}
	for _, tc := range cases {
		if tc.o.verdict != tc.verdict {
			t.Errorf("%s: verdict %v, want %v", tc.name, tc.o.verdict, tc.verdict)
		}
	}
	if p := tr.pos["room"]; p.offset != 5 || p.epoch != "e1" {
		t.Fatalf("position %+v", p)
	}
}
