package client

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"testing/iotest"
	"time"
)

func sseOpts(channels ...string) SubscribeOptions {
	return SubscribeOptions{Transport: SSE, Channels: channels}
}

// ---- (a) clean end of stream, then a second connection ----

func TestSSEResumesAfterCleanEnd(t *testing.T) {
	srv, sc := newSSEServer(t,
		func(w http.ResponseWriter, r *http.Request) {
			startStream(w)
			sendSSE(w, connectedEvent("c0", "A@e1:0", "B@e2:5"))
			sendSSE(w, messageEvent("A", "e1", 1, "c1"))
			sendSSE(w, ": heartbeat\n\n")
			sendSSE(w, messageEvent("B", "e2", 6, "c2"))
			// return: a clean end, as from a SIGKILLed server's proxy
		},
		func(w http.ResponseWriter, r *http.Request) {
			startStream(w)
			sendSSE(w, connectedEvent("c2", "A@e1:1", "B@e2:6"))
			sendSSE(w, messageEvent("A", "e1", 2, "c3"))
		},
	)
	run := runSub(t, srv.URL, sseOpts("A", "B"), 3)
	if run.err != nil {
		t.Fatalf("subscribe: %v\nlog: %s", run.err, run.log)
	}
	want := jsonLines(envelopeJSON("A", "e1", 1), envelopeJSON("B", "e2", 6), envelopeJSON("A", "e1", 2))
	if run.out != want {
		t.Errorf("output:\n%s\nwant:\n%s", run.out, want)
	}
	if run.cursor != "c3" || run.session != "s_test" {
		t.Errorf("cursor %q session %q, want c3 s_test", run.cursor, run.session)
	}
	if p := run.positions; p["A"] != (Position{2, "e1"}) || p["B"] != (Position{6, "e2"}) {
		t.Errorf("positions %v, want A e1:2, B e2:6", p)
	}
	reqs := sc.requests()
	if len(reqs) != 2 {
		t.Fatalf("%d requests, want 2", len(reqs))
	}
	if reqs[0].hasLEI {
		t.Errorf("first request sent Last-Event-ID %q, want none", reqs[0].lastEventID)
	}
	if got := reqs[1].lastEventID; got != "c2" {
		t.Errorf("second request Last-Event-ID = %q, want c2 (the last accepted event's id)", got)
	}
	for i, r := range reqs {
		if got := r.query["channel"]; strings.Join(got, ",") != "A,B" {
			t.Errorf("request %d channels = %v, want [A B]", i, got)
		}
		if r.auth != "Bearer tok" {
			t.Errorf("request %d Authorization = %q, want Bearer tok", i, r.auth)
		}
		if r.query["session"] != nil {
			t.Errorf("request %d sent session %v: the cursor names it", i, r.query["session"])
		}
	}
}

// ---- (b) a stream cut in the middle of an event ----

func TestSSEDropsHalfEvent(t *testing.T) {
	env2 := envelopeJSON("A", "e1", 2)
	cases := []struct {
		name    string
		tail    string // written after message 1, then the stream is cut
		hardCut bool   // cut the TCP connection, else end the body cleanly
	}{
		{"id never written, clean end", "event: message_sent\ndata: " + env2 + "\n", false},
		{"id never written, connection cut", "event: message_sent\ndata: " + env2 + "\n", true},
		{"id line cut", "event: message_sent\ndata: " + env2 + "\nid: c2-trunc", true},
		{"id written, blank line missing", "event: message_sent\ndata: " + env2 + "\nid: c2-bad\n", false},
		{"partial data line, connection cut", "event: message_sent\ndata: " + env2[:20], true},
		{"partial data line, clean end", "event: message_sent\ndata: " + env2[:20], false},
		{"event line only", "event: message_sent\n", true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			srv, sc := newSSEServer(t,
				func(w http.ResponseWriter, r *http.Request) {
					startStream(w)
					sendSSE(w, connectedEvent("c0", "A@e1:0"))
					sendSSE(w, messageEvent("A", "e1", 1, "c1"))
					sendSSE(w, tc.tail)
					if tc.hardCut {
						abortConn(t, w)
					}
				},
				func(w http.ResponseWriter, r *http.Request) {
					startStream(w)
					sendSSE(w, connectedEvent("c1", "A@e1:1"))
					sendSSE(w, messageEvent("A", "e1", 2, "c2"))
					sendSSE(w, messageEvent("A", "e1", 3, "c3"))
				},
			)
			run := runSub(t, srv.URL, sseOpts("A"), 3)
			if run.err != nil {
				t.Fatalf("subscribe: %v\nlog: %s", run.err, run.log)
			}
			want := jsonLines(envelopeJSON("A", "e1", 1), env2, envelopeJSON("A", "e1", 3))
			if run.out != want {
				t.Errorf("output:\n%s\nwant:\n%s", run.out, want)
			}
			reqs := sc.requests()
			if len(reqs) != 2 {
				t.Fatalf("%d requests, want 2", len(reqs))
			}
			if got := reqs[1].lastEventID; got != "c1" {
				t.Errorf("reconnect Last-Event-ID = %q, want c1 (not the half event's)", got)
			}
		})
	}
}

// ---- (c) duplicates, gaps, resets, ephemeral messages ----

func TestSSEDropsReplayedDuplicate(t *testing.T) {
	srv, sc := newSSEServer(t,
		func(w http.ResponseWriter, r *http.Request) {
			startStream(w)
			sendSSE(w, connectedEvent("c0", "A@e1:0"))
			sendSSE(w, messageEvent("A", "e1", 1, "c1"))
			sendSSE(w, messageEvent("A", "e1", 2, "c2"))
		},
		func(w http.ResponseWriter, r *http.Request) {
			startStream(w)
			sendSSE(w, connectedEvent("c1", "A@e1:2"))
			sendSSE(w, messageEvent("A", "e1", 1, "c1")) // replayed twice
			sendSSE(w, messageEvent("A", "e1", 2, "c2"))
			sendSSE(w, messageEvent("A", "e1", 3, "c3"))
		},
	)
	run := runSub(t, srv.URL, sseOpts("A"), 3)
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
	if got := sc.requests()[1].lastEventID; got != "c2" {
		t.Errorf("reconnect Last-Event-ID = %q, want c2", got)
	}
}

func TestSSEGapResumesFromLastGoodCursor(t *testing.T) {
	srv, sc := newSSEServer(t,
		func(w http.ResponseWriter, r *http.Request) {
			startStream(w)
			sendSSE(w, connectedEvent("c0", "A@e1:0"))
			sendSSE(w, messageEvent("A", "e1", 1, "c1"))
			sendSSE(w, messageEvent("A", "e1", 3, "c3")) // 2 is missing
			sendSSE(w, messageEvent("A", "e1", 4, "c4")) // must not be taken either
		},
		func(w http.ResponseWriter, r *http.Request) {
			startStream(w)
			sendSSE(w, connectedEvent("c1", "A@e1:4"))
			sendSSE(w, messageEvent("A", "e1", 2, "c2"))
			sendSSE(w, messageEvent("A", "e1", 3, "c3"))
		},
	)
	run := runSub(t, srv.URL, sseOpts("A"), 3)
	if run.err != nil {
		t.Fatalf("subscribe: %v\nlog: %s", run.err, run.log)
	}
	want := jsonLines(envelopeJSON("A", "e1", 1), envelopeJSON("A", "e1", 2), envelopeJSON("A", "e1", 3))
	if run.out != want {
		t.Errorf("output:\n%s\nwant:\n%s", run.out, want)
	}
	if got := sc.requests()[1].lastEventID; got != "c1" {
		t.Errorf("reconnect Last-Event-ID = %q, want c1", got)
	}
	if !strings.Contains(run.log, "gap, expected offset 2, got 3") {
		t.Errorf("the log does not explain the gap:\n%s", run.log)
	}
}

func TestSSEResetAndEphemeral(t *testing.T) {
	reset := `{"channel":"A","epoch":"e2","event":"herald.reset","data":{"reason":"epoch_changed","epoch":"e2","resume_after":0,"head":1},"time":"2026-11-26T16:52:20.123Z"}`
	ephemeral := `{"channel":"A","id":"m_x","event":"typing","data":{"user":"17"},"time":"2026-11-26T16:52:20.123Z"}`
	srv, sc := newSSEServer(t,
		func(w http.ResponseWriter, r *http.Request) {
			startStream(w)
			sendSSE(w, connectedEvent("c0", "A@e1:0"))
			sendSSE(w, "event: typing\ndata: "+ephemeral+"\n\n") // no id: the cursor stays c0
		},
		func(w http.ResponseWriter, r *http.Request) {
			startStream(w)
			sendSSE(w, connectedEvent("c0", "A@e2:1"))
			sendSSE(w, "event: herald.reset\ndata: "+reset+"\nid: r1\n\n")
			sendSSE(w, messageEvent("A", "e2", 1, "c1"))
		},
	)
	run := runSub(t, srv.URL, sseOpts("A"), 3)
	if run.err != nil {
		t.Fatalf("subscribe: %v\nlog: %s", run.err, run.log)
	}
	want := jsonLines(ephemeral, reset, envelopeJSON("A", "e2", 1))
	if run.out != want {
		t.Errorf("output:\n%s\nwant:\n%s", run.out, want)
	}
	if k := fmt.Sprint(run.kinds); k != "[ephemeral reset message]" {
		t.Errorf("kinds %s, want [ephemeral reset message]", k)
	}
	if got := sc.requests()[1].lastEventID; got != "c0" {
		t.Errorf("reconnect Last-Event-ID = %q, want c0 (an ephemeral message moves no cursor)", got)
	}
}

func TestSSEServerDisconnect(t *testing.T) {
	t.Run("reconnect", func(t *testing.T) {
		srv, sc := newSSEServer(t,
			func(w http.ResponseWriter, r *http.Request) {
				startStream(w)
				sendSSE(w, connectedEvent("c0", "A@e1:0"))
				sendSSE(w, messageEvent("A", "e1", 1, "c1"))
				sendSSE(w, "event: herald.disconnect\ndata: {\"reason\":\"shutdown\",\"reconnect\":true}\n\n")
			},
			func(w http.ResponseWriter, r *http.Request) {
				startStream(w)
				sendSSE(w, connectedEvent("c1", "A@e1:1"))
				sendSSE(w, messageEvent("A", "e1", 2, "c2"))
			},
		)
		run := runSub(t, srv.URL, sseOpts("A"), 2)
		if run.err != nil {
			t.Fatalf("subscribe: %v\nlog: %s", run.err, run.log)
		}
		if want := jsonLines(envelopeJSON("A", "e1", 1), envelopeJSON("A", "e1", 2)); run.out != want {
			t.Errorf("output:\n%s\nwant:\n%s", run.out, want)
		}
		if got := sc.requests()[1].lastEventID; got != "c1" {
			t.Errorf("reconnect Last-Event-ID = %q, want c1", got)
		}
		for _, s := range []string{`msg=connected transport=sse session=s_test`, `msg="disconnected by the server" transport=sse reason=shutdown reconnect=true`} {
			if !strings.Contains(run.log, s) {
				t.Errorf("the log lacks %q:\n%s", s, run.log)
			}
		}
		// A connection that worked and ended is routine: Debug.
		if !strings.Contains(run.log, `level=DEBUG msg=reconnecting`) || strings.Contains(run.log, "level=WARN") {
			t.Errorf("the reconnect after a shutdown notice is not logged at Debug alone:\n%s", run.log)
		}
	})
	t.Run("for good", func(t *testing.T) {
		srv, sc := newSSEServer(t,
			func(w http.ResponseWriter, r *http.Request) {
				startStream(w)
				sendSSE(w, connectedEvent("c0", "A@e1:0"))
				sendSSE(w, "event: herald.disconnect\ndata: {\"reason\":\"revoked\",\"reconnect\":false}\n\n")
			},
		)
		run := runSub(t, srv.URL, sseOpts("A"), 0)
		var de *DisconnectError
		if !errors.Is(run.err, ErrDisconnected) || !errors.As(run.err, &de) || de.Reason != "revoked" {
			t.Fatalf("err = %v, want the revoked disconnect", run.err)
		}
		if n := len(sc.requests()); n != 1 {
			t.Errorf("%d requests, want 1 (no reconnect)", n)
		}
	})
}

// ---- (d) error answers ----

func TestSSEErrorAnswers(t *testing.T) {
	cases := []struct {
		name    string
		answer  func(w http.ResponseWriter, r *http.Request)
		cursor  string
		wantErr string
		wantAPI int // the *APIError's status, 0 for none
	}{
		{"403 stops", jsonError(403, `not allowed to subscribe to channel "A"`), "", `403 Forbidden: not allowed to subscribe to channel "A"`, 403},
		{"401 stops", jsonError(401, "token is expired"), "", "401 Unauthorized: token is expired", 401},
		{"400 bad cursor stops", jsonError(400, "cursor is not valid: checksum mismatch"), "bogus", "cursor is not valid: checksum mismatch", 400},
		{"200 but not a stream", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "text/html")
			fmt.Fprint(w, "<html>hello</html>")
		}, "", "not an event stream", 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			srv, sc := newSSEServer(t, tc.answer)
			opts := sseOpts("A")
			opts.Cursor = tc.cursor
			run := runSub(t, srv.URL, opts, 0)
			if run.err == nil || !strings.Contains(run.err.Error(), tc.wantErr) || !errors.Is(run.err, ErrRefused) {
				t.Fatalf("err = %v, want ErrRefused containing %q", run.err, tc.wantErr)
			}
			var ae *APIError
			if got := errors.As(run.err, &ae); got != (tc.wantAPI != 0) || got && ae.Status != tc.wantAPI {
				t.Errorf("err = %#v, want an *APIError with status %d", run.err, tc.wantAPI)
			}
			reqs := sc.requests()
			if len(reqs) != 1 {
				t.Errorf("%d requests, want 1", len(reqs))
			}
			if tc.cursor != "" && reqs[0].lastEventID != tc.cursor {
				t.Errorf("the cursor went as Last-Event-ID %q, want %q", reqs[0].lastEventID, tc.cursor)
			}
		})
	}
}

func TestSSERetries503And429(t *testing.T) {
	srv, sc := newSSEServer(t,
		jsonError(503, "server shutting down"),
		jsonError(429, "too many connections"),
		func(w http.ResponseWriter, r *http.Request) { // a proxy's 502
			w.WriteHeader(http.StatusBadGateway)
		},
		func(w http.ResponseWriter, r *http.Request) {
			startStream(w)
			sendSSE(w, connectedEvent("c0", "A@e1:0"))
			sendSSE(w, messageEvent("A", "e1", 1, "c1"))
		},
	)
	run := runSub(t, srv.URL, sseOpts("A"), 1)
	if run.err != nil {
		t.Fatalf("subscribe: %v", run.err)
	}
	if want := jsonLines(envelopeJSON("A", "e1", 1)); run.out != want {
		t.Errorf("output %q, want %q", run.out, want)
	}
	if n := len(sc.requests()); n != 4 {
		t.Errorf("%d requests, want 4", n)
	}
	if !strings.Contains(run.log, "level=WARN msg=reconnecting") || !strings.Contains(run.log, "503 Service Unavailable: server shutting down") {
		t.Errorf("the log does not warn of the 503:\n%s", run.log)
	}
}

// ---- (e) stop conditions ----

func TestSSEStops(t *testing.T) {
	t.Run("close while the server sends", func(t *testing.T) {
		srv, sc := newSSEServer(t, func(w http.ResponseWriter, r *http.Request) {
			startStream(w)
			sendSSE(w, connectedEvent("c0", "A@e1:0"))
			for i := 1; i <= 4; i++ {
				sendSSE(w, messageEvent("A", "e1", i, fmt.Sprint("c", i)))
			}
			<-r.Context().Done()
		})
		run := runSub(t, srv.URL, sseOpts("A"), 2)
		if run.err != nil {
			t.Fatalf("subscribe: %v", run.err)
		}
		if want := jsonLines(envelopeJSON("A", "e1", 1), envelopeJSON("A", "e1", 2)); run.out != want {
			t.Errorf("output:\n%s\nwant:\n%s", run.out, want)
		}
		// What was read but not taken does not count: the cursor is the
		// second message's.
		if run.cursor != "c2" {
			t.Errorf("cursor %q, want c2", run.cursor)
		}
		if n := len(sc.requests()); n != 1 {
			t.Errorf("%d requests, want 1", n)
		}
	})
	t.Run("next after close", func(t *testing.T) {
		srv, _ := newSSEServer(t, func(w http.ResponseWriter, r *http.Request) {
			startStream(w)
			sendSSE(w, connectedEvent("c0", "A@e1:0"))
			<-r.Context().Done()
		})
		c, err := New(srv.URL, Options{})
		if err != nil {
			t.Fatal(err)
		}
		sub, err := c.Subscribe(context.Background(), sseOpts("A"))
		if err != nil {
			t.Fatal(err)
		}
		sub.Close()
		if _, err := sub.Next(context.Background()); !errors.Is(err, ErrClosed) {
			t.Errorf("Next after Close: %v, want ErrClosed", err)
		}
	})
	t.Run("next's own context", func(t *testing.T) {
		srv, _ := newSSEServer(t, func(w http.ResponseWriter, r *http.Request) {
			startStream(w)
			sendSSE(w, connectedEvent("c0", "A@e1:0"))
			<-r.Context().Done()
		})
		c, err := New(srv.URL, Options{})
		if err != nil {
			t.Fatal(err)
		}
		sub, err := c.Subscribe(context.Background(), sseOpts("A"))
		if err != nil {
			t.Fatal(err)
		}
		defer sub.Close()
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		if _, err := sub.Next(ctx); !errors.Is(err, context.Canceled) {
			t.Errorf("Next with a cancelled context: %v, want context.Canceled", err)
		}
		if sub.Cursor() != "c0" || sub.Session() != "s_test" {
			t.Errorf("after herald.connected: cursor %q session %q, want c0 s_test", sub.Cursor(), sub.Session())
		}
	})
	t.Run("subscribe's context bounds the first connection", func(t *testing.T) {
		srv, _ := newSSEServer(t, jsonError(503, "starting"), jsonError(503, "starting"), jsonError(503, "starting"))
		c, err := New(srv.URL, Options{})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		if _, err := c.Subscribe(ctx, sseOpts("A")); !errors.Is(err, context.Canceled) {
			t.Errorf("Subscribe with a cancelled context: %v", err)
		}
	})
	t.Run("stalled stream is resumed", func(t *testing.T) {
		srv, sc := newSSEServer(t,
			func(w http.ResponseWriter, r *http.Request) {
				startStream(w)
				sendSSE(w, connectedEvent("c0", "A@e1:0"))
				<-r.Context().Done() // silent: no heartbeat
			},
			func(w http.ResponseWriter, r *http.Request) {
				startStream(w)
				sendSSE(w, connectedEvent("c0", "A@e1:0"))
				sendSSE(w, messageEvent("A", "e1", 1, "c1"))
			},
		)
		opts := sseOpts("A")
		opts.StallTimeout = 2 * time.Second
		run := runSub(t, srv.URL, opts, 1)
		if run.err != nil {
			t.Fatalf("subscribe: %v", run.err)
		}
		if want := jsonLines(envelopeJSON("A", "e1", 1)); run.out != want {
			t.Errorf("output %q, want %q", run.out, want)
		}
		if got := sc.requests()[1].lastEventID; got != "c0" {
			t.Errorf("reconnect Last-Event-ID = %q, want c0", got)
		}
		if !strings.Contains(run.log, "no data for 2s (stall timeout)") {
			t.Errorf("the log does not give the stall:\n%s", run.log)
		}
	})
}

func TestSSEPositionsThenCursor(t *testing.T) {
	srv, sc := newSSEServer(t,
		func(w http.ResponseWriter, r *http.Request) {
			startStream(w)
			sendSSE(w, connectedEvent("c41", "A@e1:50", "B@e2:3"))
			sendSSE(w, messageEvent("A", "e1", 42, "c42"))
		},
		func(w http.ResponseWriter, r *http.Request) {
			startStream(w)
			sendSSE(w, connectedEvent("c42", "A@e1:50", "B@e2:3"))
			sendSSE(w, messageEvent("A", "e1", 43, "c43"))
		},
	)
	opts := sseOpts("A", "B")
	opts.Positions = map[string]Position{"A": {Offset: 41, Epoch: "e1"}}
	opts.Session = "s_mine"
	run := runSub(t, srv.URL, opts, 2)
	if run.err != nil {
		t.Fatalf("subscribe: %v\n%s", run.err, run.log)
	}
	if want := jsonLines(envelopeJSON("A", "e1", 42), envelopeJSON("A", "e1", 43)); run.out != want {
		t.Errorf("output:\n%s\nwant:\n%s", run.out, want)
	}
	reqs := sc.requests()
	if got := join(reqs[0].query["since"]); got != "41," {
		t.Errorf("first request since = %q, want \"41,\"", got)
	}
	if got := join(reqs[0].query["epoch"]); got != "e1," {
		t.Errorf("first request epoch = %q, want \"e1,\"", got)
	}
	if got := join(reqs[0].query["session"]); got != "s_mine" {
		t.Errorf("first request session = %q, want s_mine (the session to continue)", got)
	}
	if reqs[1].query["since"] != nil || reqs[1].query["session"] != nil || reqs[1].lastEventID != "c42" {
		t.Errorf("reconnect: since %v, session %v, Last-Event-ID %q; want none, none, c42",
			reqs[1].query["since"], reqs[1].query["session"], reqs[1].lastEventID)
	}
}

// ---- unit tests of the pieces ----

func TestSubscribeOptionsValidate(t *testing.T) {
	cases := []struct {
		opts    SubscribeOptions
		wantErr string
	}{
		{SubscribeOptions{Channels: []string{"A"}}, ""},
		{SubscribeOptions{}, "at least one channel"},
		{SubscribeOptions{Channels: []string{"A", "A"}}, "given twice"},
		{SubscribeOptions{Channels: []string{"A"}, Transport: "pigeon"}, `transport "pigeon" is unknown`},
		{SubscribeOptions{Channels: []string{"A"}, Transport: WebSocket, Cursor: "c"}, "resumes by Positions"},
		{SubscribeOptions{Channels: []string{"A"}, Positions: map[string]Position{"B": {}}}, `position for channel "B"`},
		{SubscribeOptions{Channels: []string{"A"}, PollTimeout: 1500 * time.Millisecond}, "whole seconds"},
		{SubscribeOptions{Channels: []string{"A"}, RetryMin: time.Second, RetryMax: time.Millisecond}, "RetryMin ≤ RetryMax"},
	}
	for _, tc := range cases {
		err := tc.opts.withDefaults().validate()
		switch {
		case tc.wantErr == "" && err != nil:
			t.Errorf("%+v: %v", tc.opts, err)
		case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
			t.Errorf("%+v: err = %v, want %q", tc.opts, err, tc.wantErr)
		}
	}
}

func TestTracker(t *testing.T) {
	msg := func(ch, epoch string, off int, id string) streamEvent {
		return streamEvent{name: "message_sent", data: []byte(envelopeJSON(ch, epoch, off)), id: id, hasID: id != ""}
	}
	connected := func(id string, heads ...string) streamEvent {
		s := connectedEvent(id, heads...)
		data := s[strings.Index(s, "data: ")+6 : strings.Index(s, "\nid:")]
		return streamEvent{name: "herald.connected", data: []byte(data), id: id, hasID: true}
	}
	type step struct {
		ev         streamEvent
		want       verdict
		wantCursor string
	}
	cases := []struct {
		name  string
		opts  SubscribeOptions
		steps []step
	}{
		{"in order, duplicate, gap", sseOpts("A"), []step{
			{connected("c0", "A@e1:5"), verdictConnected, "c0"},
			{msg("A", "e1", 6, "c6"), verdictDeliver, "c6"},
			{msg("A", "e1", 6, "c6"), verdictDuplicate, "c6"},
			{msg("A", "e1", 5, "c5"), verdictDuplicate, "c6"},
			{msg("A", "e1", 8, "c8"), verdictBroken, "c6"},
			{msg("A", "e1", 7, "c7"), verdictDeliver, "c7"},
		}},
		{"stored message without its own id", sseOpts("A"), []step{
			{connected("c0", "A@e1:0"), verdictConnected, "c0"},
			{msg("A", "e1", 1, ""), verdictDeliver, "c0"},
			{msg("A", "e1", 2, "c2"), verdictDeliver, "c2"},
		}},
		{"epoch change without reset", sseOpts("A"), []step{
			{connected("c0", "A@e1:3"), verdictConnected, "c0"},
			{msg("A", "e2", 4, "c4"), verdictBroken, "c0"},
		}},
		{"reset", sseOpts("A"), []step{
			{connected("c0", "A@e1:3"), verdictConnected, "c0"},
			{streamEvent{name: "herald.reset", data: []byte(`{"channel":"A","epoch":"e2","event":"herald.reset","data":{"reason":"epoch_changed","epoch":"e2","resume_after":0,"head":2}}`), id: "r", hasID: true}, verdictDeliver, "r"},
			{msg("A", "e2", 1, "c1"), verdictDeliver, "c1"},
		}},
		{"reset without resume_after", sseOpts("A"), []step{
			{streamEvent{name: "herald.reset", data: []byte(`{"channel":"A","event":"herald.reset","data":{}}`), id: "r", hasID: true}, verdictBroken, ""},
		}},
		{"position without epoch takes the connected epoch", SubscribeOptions{Channels: []string{"A"}, Positions: map[string]Position{"A": {Offset: 10}}}, []step{
			{connected("c10", "A@e1:20"), verdictConnected, "c10"},
			{msg("A", "e1", 10, "x"), verdictDuplicate, "c10"},
			{msg("A", "e1", 11, "c11"), verdictDeliver, "c11"},
		}},
		{"opaque cursor: first message sets the position", SubscribeOptions{Channels: []string{"A"}, Cursor: "k"}, []step{
			{connected("k2", "A@e1:20"), verdictConnected, "k2"},
			{msg("A", "e1", 7, "c7"), verdictDeliver, "c7"},
			{msg("A", "e1", 9, "c9"), verdictBroken, "c7"},
		}},
		{"malformed and foreign events", sseOpts("A"), []step{
			{streamEvent{name: "message_sent", data: []byte(`{"channel":"A","offs`), id: "x", hasID: true}, verdictBroken, ""},
			{streamEvent{name: "herald.connected", data: []byte(`nope`), id: "x", hasID: true}, verdictBroken, ""},
			{msg("B", "e1", 1, "b1"), verdictIgnore, ""},
			{streamEvent{}, verdictIgnore, ""},
		}},
		{"an id-only event: a message excluded for this session was passed over", sseOpts("A", "B"), []step{
			{connected("c0", "A@e1:1", "B@e1:4"), verdictConnected, "c0"},
			{streamEvent{id: "c1", hasID: true}, verdictIgnore, "c1"},
			{msg("A", "e1", 3, "c3"), verdictDeliver, "c3"},
			{msg("B", "e1", 6, "c6"), verdictDeliver, "c6"},
			{msg("A", "e1", 5, "c5"), verdictBroken, "c6"}, // one pass-over per channel
		}},
		{"a gap met again after a resume is the server's truth", sseOpts("A"), []step{
			{connected("c0", "A@e1:1"), verdictConnected, "c0"},
			{msg("A", "e1", 3, "c3"), verdictBroken, "c0"},
			{msg("A", "e1", 3, "c3"), verdictDeliver, "c3"},
			{msg("A", "e1", 5, "c5"), verdictBroken, "c3"},
			{msg("A", "e1", 4, "c4"), verdictDeliver, "c4"}, // the resume filled it
			{msg("A", "e1", 6, "c6"), verdictBroken, "c4"},
		}},
		{"ephemeral", sseOpts("A"), []step{
			{connected("c0", "A@e1:0"), verdictConnected, "c0"},
			{streamEvent{name: "typing", data: []byte(`{"channel":"A","event":"typing","data":null}`), id: "c0"}, verdictDeliver, "c0"},
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tr := newTracker(tc.opts)
			for i, st := range tc.steps {
				o := tr.handle(st.ev)
				if o.verdict != st.want {
					t.Fatalf("step %d: verdict %d (%v), want %d", i, o.verdict, o.err, st.want)
				}
				if tr.cursor != st.wantCursor {
					t.Fatalf("step %d: cursor %q, want %q", i, tr.cursor, st.wantCursor)
				}
				if o.verdict == verdictDeliver && string(o.event.Raw) != string(st.ev.data) {
					t.Fatalf("step %d: raw %q, want the data", i, o.event.Raw)
				}
			}
		})
	}
}

func TestOneLine(t *testing.T) {
	cases := map[string]string{
		`{"a":1}`:              `{"a":1}`,
		"{\"a\":\n1}":          `{"a":1}`,
		"{\"a\":\r\n [1,\n2]}": `{"a":[1,2]}`,
	}
	for in, want := range cases {
		if got := string(oneLine([]byte(in))); got != want {
			t.Errorf("oneLine(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestEventGuard(t *testing.T) {
	errCut := errors.New("connection reset")
	cases := []struct {
		name    string
		chunks  []string
		end     error
		want    string
		wantCut bool
	}{
		{"LF events", []string{"data: a\n\ndata: b\n\n"}, io.EOF, "data: a\n\ndata: b\n\n", false},
		{"tail dropped", []string{"data: a\n\ndata: b\nid: 2"}, io.EOF, "data: a\n\n", true},
		{"tail dropped on error", []string{"data: a\n\nevent: x\ndata: b\n"}, errCut, "data: a\n\n", true},
		{"CRLF", []string{"data: a\r\n\r\ndata: b\r\n"}, io.EOF, "data: a\r\n\r\n", true},
		{"CRLF split across reads", []string{"data: a\r", "\n\r", "\n", "data: b\r\n"}, io.EOF, "data: a\r\n\r\n", true},
		{"CR", []string{"data: a\r\rdata: b"}, io.EOF, "data: a\r\r", true},
		{"event end split across reads", []string{"data: a\n", "\nda", "ta: b\n", "\n"}, io.EOF, "data: a\n\ndata: b\n\n", false},
		{"comments and retry", []string{"retry: 2000\n\n:\n\n: hb\n\n"}, io.EOF, "retry: 2000\n\n:\n\n: hb\n\n", false},
		{"only a stray line end left", []string{"data: a\n\n\n"}, io.EOF, "data: a\n\n\n", false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			g := newEventGuard(io.NopCloser(&chunkReader{chunks: tc.chunks, end: tc.end}), 1<<10, nil)
			got, err := io.ReadAll(iotest.OneByteReader(g))
			if tc.end == io.EOF && err != nil || tc.end != io.EOF && !errors.Is(err, tc.end) {
				t.Errorf("err = %v, want %v", err, tc.end)
			}
			if string(got) != tc.want {
				t.Errorf("released %q, want %q", got, tc.want)
			}
			if g.cut != tc.wantCut {
				t.Errorf("cut = %t, want %t", g.cut, tc.wantCut)
			}
		})
	}
	t.Run("too large", func(t *testing.T) {
		g := newEventGuard(io.NopCloser(strings.NewReader("data: a\n\ndata: "+strings.Repeat("x", 100))), 16, nil)
		got, err := io.ReadAll(g)
		if !errors.Is(err, errEventTooLarge) {
			t.Errorf("err = %v, want errEventTooLarge", err)
		}
		if string(got) != "data: a\n\n" {
			t.Errorf("released %q, want the first event only", got)
		}
	})
}

// chunkReader returns its chunks one Read at a time, then end.
type chunkReader struct {
	chunks []string
	end    error
}

func (r *chunkReader) Read(p []byte) (int, error) {
	if len(r.chunks) == 0 {
		return 0, r.end
	}
	n := copy(p, r.chunks[0])
	r.chunks[0] = r.chunks[0][n:]
	if r.chunks[0] == "" {
		r.chunks = r.chunks[1:]
	}
	return n, nil
}

func TestBackoff(t *testing.T) {
	b := backoff{min: 100 * time.Millisecond, max: 2 * time.Second}
	want := []time.Duration{100, 200, 400, 800, 1600, 2000, 2000}
	for i, w := range want {
		if got := b.next(); got != w*time.Millisecond {
			t.Fatalf("delay %d = %s, want %s", i, got, w*time.Millisecond)
		}
	}
	b.reset()
	if got := b.next(); got != 100*time.Millisecond {
		t.Errorf("after reset: %s, want 100ms", got)
	}
	j := backoff{min: DefaultRetryMin, max: DefaultRetryMax, jitter: true}
	for i := 0; i < 20; i++ {
		d := j.next()
		if d < j.cur/2 || d > j.cur || d > 2*time.Second {
			t.Fatalf("jittered delay %s outside [%s, %s]", d, j.cur/2, j.cur)
		}
	}
}
