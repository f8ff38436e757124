package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/heraldrt/herald/protocol"
)

func wsOpts(channels ...string) SubscribeOptions {
	return SubscribeOptions{Transport: WebSocket, Channels: channels}
}

// ---- (a) an abnormal close, then a resume by since, epoch and session ----

func TestWSResumesAfterAbnormalClose(t *testing.T) {
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
	run := runSub(t, srv.URL+prefix, wsOpts("A", "B"), 4)
	if run.err != nil {
		t.Fatalf("subscribe: %v\nlog: %s", run.err, run.log)
	}
	want := jsonLines(envelopeJSON("A", "e1", 1), envelopeJSON("A", "e1", 2), envelopeJSON("B", "e2", 6), envelopeJSON("A", "e1", 3))
	if run.out != want {
		t.Errorf("output:\n%s\nwant:\n%s", run.out, want)
	}
	if p := run.positions; p["A"] != (Position{3, "e1"}) || p["B"] != (Position{6, "e2"}) || run.cursor != "" {
		t.Errorf("positions %v cursor %q, want A e1:3, B e2:6 and no cursor", p, run.cursor)
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
	// The reconnect continues the session the first connection was given.
	if reqs[0].session != "" || reqs[1].session != "s_test" {
		t.Errorf("sessions at the upgrade: %q, %q; want none, then s_test", reqs[0].session, reqs[1].session)
	}
	if reqs[1].end != websocket.CloseNormalClosure {
		t.Errorf("after Close the client ended the connection with %d, want a normal close", reqs[1].end)
	}
}

// ---- (b) a replayed duplicate is dropped ----

func TestWSDropsReplayedDuplicate(t *testing.T) {
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
	run := runSub(t, srv.URL, wsOpts("A"), 3)
	if run.err != nil {
		t.Fatalf("subscribe: %v\nlog: %s", run.err, run.log)
	}
	want := jsonLines(envelopeJSON("A", "e1", 1), envelopeJSON("A", "e1", 2), envelopeJSON("A", "e1", 3))
	if run.out != want {
		t.Errorf("output:\n%s\nwant:\n%s", run.out, want)
	}
	if n := strings.Count(run.log, "dropped a replayed message"); n != 2 {
		t.Errorf("the log has %d dropped duplicates, want 2:\n%s", n, run.log)
	}
	for _, s := range []string{"msg=connected transport=ws session=s_test user=17", "msg=subscribed transport=ws channel=A head=e1:0"} {
		if !strings.Contains(run.log, s) {
			t.Errorf("the log lacks %q:\n%s", s, run.log)
		}
	}
}

// ---- (c) a gap: resubscribe from the last good offset ----

func TestWSGapResubscribes(t *testing.T) {
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
	run := runSub(t, srv.URL, wsOpts("A"), 3)
	if run.err != nil {
		t.Fatalf("subscribe: %v\nlog: %s", run.err, run.log)
	}
	want := jsonLines(envelopeJSON("A", "e1", 1), envelopeJSON("A", "e1", 2), envelopeJSON("A", "e1", 3))
	if run.out != want {
		t.Errorf("output:\n%s\nwant:\n%s", run.out, want)
	}
	if !strings.Contains(run.log, "gap, expected offset 2, got 3") {
		t.Errorf("the log does not give the gap:\n%s", run.log)
	}
	if end := sc.requests()[0].end; end != websocket.CloseProtocolError {
		t.Errorf("the client ended the gapped connection with %d", end)
	}
}

// ---- (d) a reset moves the position; ephemeral, presence and unsubscribed ----

func TestWSReset(t *testing.T) {
	reset := `{"channel":"A","epoch":"e2","event":"herald.reset","data":{"reason":"epoch_changed","epoch":"e2","resume_after":2,"head":4},"time":"2026-11-26T16:52:20.123Z"}`
	ephemeral := `{"channel":"A","id":"m_x","event":"typing","data":{"user":"17"},"time":"2026-11-26T16:52:20.123Z"}`
	join := `{"channel":"A","event":"herald.join","data":{"user":"18","sessions":1},"time":"2026-11-26T16:52:20.123Z"}`
	srv, _ := newWSServer(t, "",
		func(c *wsTestConn) {
			c.connected()
			c.subscribed(c.expectSubscribe("A", "41", "e1"), "e2", 4)
			c.send(protocol.ResetPrefix+reset+`}`, msgPush(ephemeral), protocol.PresencePrefix+join+`}`)
			c.abort()
		},
		func(c *wsTestConn) {
			c.connected()
			c.subscribed(c.expectSubscribe("A", "2", "e2"), "e2", 4)
			c.send(batchPush(envelopeJSON("A", "e2", 3), envelopeJSON("A", "e2", 4)))
			c.send(`{"type":"unsubscribed","channel":"A","reason":"revoked"}`)
		},
	)
	opts := wsOpts("A")
	opts.Positions = map[string]Position{"A": {Offset: 41, Epoch: "e1"}}
	run := runSub(t, srv.URL, opts, 6)
	if run.err != nil {
		t.Fatalf("subscribe: %v\nlog: %s", run.err, run.log)
	}
	lines := strings.SplitAfter(run.out, "\n")
	want := jsonLines(reset, ephemeral, join, envelopeJSON("A", "e2", 3), envelopeJSON("A", "e2", 4))
	if len(lines) != 7 || strings.Join(lines[:5], "") != want ||
		!strings.HasPrefix(lines[5], `{"channel":"A","event":"herald.unsubscribed","data":{"reason":"revoked"},"time":"`) {
		t.Errorf("output:\n%s\nwant:\n%s{herald.unsubscribed…}", run.out, want)
	}
	if k := fmt.Sprint(run.kinds); k != "[reset ephemeral ephemeral message message ephemeral]" {
		t.Errorf("kinds %s", k)
	}
}

// ---- (e) refusals stop, transient failures retry ----

func TestWSStopsOnRefusal(t *testing.T) {
	cases := []struct {
		name    string
		conn    func(c *wsTestConn)
		wantErr string
		refused bool
	}{
		{"403 reply", func(c *wsTestConn) {
			c.connected()
			op := c.expectSubscribe("A", "-", "")
			c.replyError(op.ID, 403, `not allowed to subscribe channel "A"`)
		}, `subscribe "A": server answered 403 Forbidden: not allowed to subscribe channel "A"`, true},
		{"400 reply", func(c *wsTestConn) {
			c.connected()
			op := c.expectSubscribe("A", "-", "")
			c.replyError(op.ID, 400, "since is ahead")
		}, "400 Bad Request: since is ahead", true},
		{"4001 close", func(c *wsTestConn) {
			c.closeWith(4001, "token is expired")
		}, "the server closed the connection: 4001 unauthorized: token is expired", true},
		{"1009 close", func(c *wsTestConn) {
			c.connected()
			c.expectSubscribe("A", "-", "")
			c.closeWith(websocket.CloseMessageTooBig, "")
		}, "1009 frame too big", false},
		{"401 upgrade answer", func(c *wsTestConn) {
			c.refuse(401, "token signature is invalid")
		}, "server answered 401 Unauthorized: token signature is invalid", true},
		{"disconnect for good", func(c *wsTestConn) {
			c.connected()
			c.subscribed(c.expectSubscribe("A", "-", ""), "e1", 0)
			c.send(`{"type":"disconnect","code":4008,"reason":"revoked","reconnect":false}`)
		}, "the server closed the stream for good: revoked", false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			srv, sc := newWSServer(t, "", tc.conn)
			run := runSub(t, srv.URL, wsOpts("A"), 0)
			if run.err == nil || !strings.Contains(run.err.Error(), tc.wantErr) {
				t.Fatalf("err = %v, want one containing %q\nlog: %s", run.err, tc.wantErr, run.log)
			}
			if errors.Is(run.err, ErrRefused) != tc.refused {
				t.Errorf("errors.Is(%v, ErrRefused) = %t, want %t", run.err, !tc.refused, tc.refused)
			}
			if n := len(sc.requests()); n != 1 {
				t.Errorf("%d connections, want 1", n)
			}
		})
	}
}

func TestWSRetries(t *testing.T) {
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
	run := runSub(t, srv.URL, wsOpts("A"), 2)
	if run.err != nil {
		t.Fatalf("subscribe: %v\nlog: %s", run.err, run.log)
	}
	if want := jsonLines(envelopeJSON("A", "e1", 1), envelopeJSON("A", "e1", 2)); run.out != want {
		t.Errorf("output:\n%s\nwant:\n%s", run.out, want)
	}
	if n := len(sc.requests()); n != 6 {
		t.Errorf("%d connections, want 6", n)
	}
	for _, s := range []string{"503 Service Unavailable: starting", `subscribe \"A\": server answered 429 Too Many Requests`, "4009 slow consumer", "1011 internal error"} {
		if !strings.Contains(run.log, s) {
			t.Errorf("the log lacks %q:\n%s", s, run.log)
		}
	}
}

// ---- (f) stalls and pings ----

func TestWSStallResumes(t *testing.T) {
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
	opts := wsOpts("A")
	opts.StallTimeout = 2 * time.Second
	run := runSub(t, srv.URL, opts, 1)
	if run.err != nil {
		t.Fatalf("subscribe: %v\nlog: %s", run.err, run.log)
	}
	if want := jsonLines(envelopeJSON("A", "e1", 1)); run.out != want {
		t.Errorf("output %q, want %q", run.out, want)
	}
	if !strings.Contains(run.log, "no frame and no ping for 2s (stall timeout)") {
		t.Errorf("the log does not give the stall:\n%s", run.log)
	}
}

func TestWSPings(t *testing.T) {
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
			if op.Op != protocol.OpPing {
				t.Errorf("op %q, want ping", op.Op)
			}
			pingOps++
			c.reply(op.ID, "")
		}
		c.send(msgPush(envelopeJSON("A", "e1", 1)))
	})
	opts := wsOpts("A")
	opts.StallTimeout = 3 * time.Second
	run := runSub(t, srv.URL, opts, 1)
	if run.err != nil {
		t.Fatalf("subscribe: %v\nlog: %s", run.err, run.log)
	}
	if want := jsonLines(envelopeJSON("A", "e1", 1)); run.out != want {
		t.Errorf("output %q, want %q", run.out, want)
	}
}

func TestWSBadFrames(t *testing.T) {
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
	run := runSub(t, srv.URL, wsOpts("A"), 2)
	if run.err != nil {
		t.Fatalf("subscribe: %v\nlog: %s", run.err, run.log)
	}
	if want := jsonLines(envelopeJSON("A", "e1", 1), envelopeJSON("A", "e1", 2)); run.out != want {
		t.Errorf("output:\n%s\nwant:\n%s", run.out, want)
	}
	for _, s := range []string{"not a JSON object", `a message of epoch \"e9\" while at epoch \"e1\"`} {
		if !strings.Contains(run.log, s) {
			t.Errorf("the log lacks %q:\n%s", s, run.log)
		}
	}
}

func TestTrackerSkipMovesThePositionPastOwnMessages(t *testing.T) {
	t.Parallel()
	tr := newTracker(SubscribeOptions{Channels: []string{"room"}, Positions: map[string]Position{"room": {Offset: 3, Epoch: "e1"}}})
	cases := []struct {
		name    string
		o       outcome
		verdict verdict
	}{
		{"skip of the next offset", tr.skip("room", "e1", 4), verdictIgnore},
		{"the message after it", tr.message([]byte(`{"channel":"room","offset":5,"epoch":"e1","event":"message","data":1}`), false), verdictDeliver},
		{"a replayed skip", tr.skip("room", "e1", 5), verdictDuplicate},
		{"a skip past a gap", tr.skip("room", "e1", 9), verdictBroken},
		{"another epoch", tr.skip("room", "e2", 6), verdictBroken},
	}
	for _, tc := range cases {
		if tc.o.verdict != tc.verdict {
			t.Errorf("%s: verdict %v, want %v", tc.name, tc.o.verdict, tc.verdict)
		}
	}
	if p := tr.at("room"); p.offset != 5 || p.epoch != "e1" {
		t.Fatalf("position %+v", p)
	}
}

// ---- publishing on a Conn ----

// publishReply answers a publish op as the server does once it is stored.
func publishReply(c *wsTestConn, op protocol.Request, offset int) {
	c.reply(op.ID, fmt.Sprintf(`"channel":%q,"offset":%d,"epoch":"e1","message_id":"m_%d"`, op.Channel, offset, offset))
}

func TestConnPublish(t *testing.T) {
	type sent struct {
		op     protocol.Request
		fields map[string]json.RawMessage
	}
	cases := []struct {
		name    string
		reqs    []protocol.PublishRequest
		conn    func(c *wsTestConn, got *[]sent)
		wantOps []string // the ops, as the client sent them
		wantRes []string // the results, as JSON
		wantErr string
	}{
		{
			name: "idempotency key, exclude-sender; pushes and stray replies ignored",
			reqs: []protocol.PublishRequest{
				{Channel: "c", Event: "message_sent", Data: json.RawMessage(`{"n":1}`), IdempotencyKey: "k-1", ExcludeSender: true},
				{Channel: "c", Event: "message_sent", Data: json.RawMessage(`{"n":2}`), IdempotencyKey: "k-2", ExcludeSender: true},
			},
			conn: func(c *wsTestConn, got *[]sent) {
				c.connected()
				for i := 1; i <= 2; i++ {
					op, fields := c.expect(protocol.OpPublish)
					*got = append(*got, sent{op, fields})
					c.send(msgPush(envelopeJSON("c", "e1", 99)), `{"id":999,"ok":true}`)
					if err := c.conn().WriteMessage(websocket.PingMessage, nil); err != nil {
						t.Errorf("ping: %v", err)
					}
					publishReply(c, op, i)
				}
			},
			wantOps: []string{
				`{"id":1,"op":"publish","channel":"c","event":"message_sent","data":{"n":1},"idempotency_key":"k-1","exclude_self":true}`,
				`{"id":2,"op":"publish","channel":"c","event":"message_sent","data":{"n":2},"idempotency_key":"k-2","exclude_self":true}`,
			},
			wantRes: []string{`{"channel":"c","offset":1,"epoch":"e1","id":"m_1"}`, `{"channel":"c","offset":2,"epoch":"e1","id":"m_2"}`},
		},
		{
			name: "ephemeral",
			reqs: []protocol.PublishRequest{{Channel: "c", Event: "typing", Data: json.RawMessage(`null`), Ephemeral: true}},
			conn: func(c *wsTestConn, got *[]sent) {
				c.connected()
				op, fields := c.expect(protocol.OpPublish)
				*got = append(*got, sent{op, fields})
				c.reply(op.ID, `"message_id":"m_x","ephemeral":true`)
			},
			wantOps: []string{`{"id":1,"op":"publish","channel":"c","event":"typing","data":null,"ephemeral":true}`},
			wantRes: []string{`{"channel":"c","id":"m_x","ephemeral":true}`},
		},
		{
			name: "403 reply",
			reqs: []protocol.PublishRequest{{Channel: "team_3_x", Data: json.RawMessage(`"hi"`)}},
			conn: func(c *wsTestConn, got *[]sent) {
				c.connected()
				op, fields := c.expect(protocol.OpPublish)
				*got = append(*got, sent{op, fields})
				c.replyError(op.ID, 403, `not allowed to publish to channel "team_3_x"`)
			},
			wantOps: []string{`{"id":1,"op":"publish","channel":"team_3_x","data":"hi"}`},
			wantErr: `server answered 403 Forbidden: not allowed to publish to channel "team_3_x"`,
		},
		{
			name:    "unauthorized at connect",
			conn:    func(c *wsTestConn, _ *[]sent) { c.closeWith(4001, "token is expired") },
			wantErr: "4001 unauthorized: token is expired",
		},
		{
			name:    "upgrade refused",
			conn:    func(c *wsTestConn, _ *[]sent) { c.refuse(401, "token signature is invalid") },
			wantErr: "server answered 401 Unauthorized: token signature is invalid",
		},
		{
			name: "connection lost before the reply",
			reqs: []protocol.PublishRequest{{Channel: "c", Data: json.RawMessage(`null`)}},
			conn: func(c *wsTestConn, got *[]sent) {
				c.connected()
				op, fields := c.expect(protocol.OpPublish)
				*got = append(*got, sent{op, fields})
				c.send(`{"type":"disconnect","code":1012,"reason":"shutdown","reconnect":true}`)
				c.closeWith(websocket.CloseServiceRestart, "shutdown")
			},
			wantOps: []string{`{"id":1,"op":"publish","channel":"c","data":null}`},
			wantErr: "the server closed the connection: shutdown (close code 1012)",
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var got []sent
			srv, sc := newWSServer(t, "/herald", func(c *wsTestConn) { tc.conn(c, &got) })
			c, err := New(srv.URL+"/herald/", Options{Token: "tok"})
			if err != nil {
				t.Fatal(err)
			}
			ctx := context.Background()
			var res []string
			conn, err := c.Dial(ctx)
			if err == nil {
				if conn.Session() != "s_test" {
					t.Errorf("session %q, want s_test", conn.Session())
				}
				for _, req := range tc.reqs {
					var r protocol.PublishResult
					if r, err = conn.Publish(ctx, req); err != nil {
						break
					}
					b, _ := json.Marshal(r)
					res = append(res, string(b))
				}
				conn.Close()
			}
			switch {
			case tc.wantErr == "" && err != nil:
				t.Fatalf("publish: %v", err)
			case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
				t.Fatalf("err = %v, want one containing %q", err, tc.wantErr)
			}
			if strings.Join(res, "\n") != strings.Join(tc.wantRes, "\n") {
				t.Errorf("results:\n%s\nwant:\n%s", strings.Join(res, "\n"), strings.Join(tc.wantRes, "\n"))
			}
			reqs := sc.requests() // the script is done: got is complete
			if len(reqs) != 1 || reqs[0].auth != "Bearer tok" {
				t.Errorf("connections %+v, want one with Bearer tok", reqs)
			}
			if len(got) != len(tc.wantOps) {
				t.Fatalf("%d publish ops, want %d", len(got), len(tc.wantOps))
			}
			for i, s := range got {
				b, _ := json.Marshal(s.op)
				if string(b) != tc.wantOps[i] {
					t.Errorf("op %d: %s, want %s", i+1, b, tc.wantOps[i])
				}
			}
		})
	}
}

func TestConnPublishRefusesSessionFields(t *testing.T) {
	srv, _ := newWSServer(t, "", func(c *wsTestConn) { c.connected() })
	c, err := New(srv.URL, Options{})
	if err != nil {
		t.Fatal(err)
	}
	conn, err := c.Dial(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := conn.Publish(context.Background(), protocol.PublishRequest{Channel: "c", ExcludeSession: "s_1"}); err == nil || !strings.Contains(err.Error(), "ExcludeSession") {
		t.Errorf("err = %v, want the refusal of ExcludeSession", err)
	}
}

// ---- unit tests of the pieces ----

func TestWSURL(t *testing.T) {
	cases := []struct{ base, session, want string }{
		{"http://127.0.0.1:8080", "", "ws://127.0.0.1:8080/ws"},
		{"https://example.com", "", "wss://example.com/ws"},
		{"https://example.com/herald/", "", "wss://example.com/herald/ws"},
		{"http://127.0.0.1:8080/a/b", "", "ws://127.0.0.1:8080/a/b/ws"},
		{"HTTPS://EXAMPLE.com:8443/herald", "", "wss://EXAMPLE.com:8443/herald/ws"},
		{"http://127.0.0.1:8080", "s_1", "ws://127.0.0.1:8080/ws?session=s_1"},
	}
	for _, tc := range cases {
		c, err := New(tc.base, Options{})
		if err != nil {
			t.Fatal(err)
		}
		if got := c.wsURL(tc.session); got != tc.want {
			t.Errorf("wsURL(%q, %q) = %q, want %q", tc.base, tc.session, got, tc.want)
		}
	}
}

func TestWSReadEnd(t *testing.T) {
	cases := []struct {
		err        error
		fatal      bool
		retryAfter time.Duration
		msg        string
	}{
		{&websocket.CloseError{Code: 4001, Text: "token is expired"}, true, 0, "the server closed the connection: 4001 unauthorized: token is expired"},
		{&websocket.CloseError{Code: 1003}, true, 0, "1003 binary frame refused"},
		{&websocket.CloseError{Code: 1009}, true, 0, "1009 frame too big"},
		{&websocket.CloseError{Code: 1012, Text: "shutdown"}, false, 0, "1012 server restarting: shutdown"},
		{&websocket.CloseError{Code: 1011}, false, 0, "1011 internal error"},
		{&websocket.CloseError{Code: 4009}, false, 0, "4009 slow consumer"},
		{&websocket.CloseError{Code: 4010}, false, 0, "4010 token expired"},
		{&websocket.CloseError{Code: 4008, Text: "too many connections"}, false, wsPolicyRetry, "4008 policy"},
		{&websocket.CloseError{Code: 1006, Text: "unexpected EOF"}, false, 0, "connection lost: unexpected EOF"},
		{io.ErrUnexpectedEOF, false, 0, "connection lost"},
		{websocket.ErrReadLimit, true, 0, "a frame over 99 bytes"},
	}
	for _, tc := range cases {
		e := wsReadEnd(tc.err, 99)
		if e.fatal != tc.fatal || e.retryAfter != tc.retryAfter || !strings.Contains(e.err.Error(), tc.msg) {
			t.Errorf("%v: fatal %t, retryAfter %s, %q; want %t, %s, %q", tc.err, e.fatal, e.retryAfter, e.err, tc.fatal, tc.retryAfter, tc.msg)
		}
	}
}

func TestWSPingInterval(t *testing.T) {
	for stall, want := range map[time.Duration]time.Duration{
		0:                   wsPingEvery,
		DefaultStallTimeout: wsPingEvery,
		30 * time.Second:    10 * time.Second,
		time.Nanosecond:     time.Millisecond,
	} {
		if got := wsPingInterval(stall); got != want {
			t.Errorf("wsPingInterval(%s) = %s, want %s", stall, got, want)
		}
	}
}

func TestUnsubscribedEnvelope(t *testing.T) {
	got := string(unsubscribedEnvelope("A", "revoked", time.Date(2026, 11, 26, 16, 52, 20, 123e6, time.UTC)))
	want := `{"channel":"A","event":"herald.unsubscribed","data":{"reason":"revoked"},"time":"2026-11-26T16:52:20.123Z"}`
	if got != want {
		t.Errorf("got %s\nwant %s", got, want)
	}
}
