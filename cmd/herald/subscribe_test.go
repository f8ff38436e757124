package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"testing/iotest"
	"time"
)

// ---- a scripted SSE server ----

// sseRequest is what the test server saw of one stream request.
type sseRequest struct {
	lastEventID string
	hasLEI      bool
	query       map[string][]string
	auth        string
}

// sseScript serves the i-th request with conns[i]; requests past the
// script hold the stream open until the client goes.
type sseScript struct {
	t     *testing.T
	conns []func(w http.ResponseWriter, r *http.Request)

	mu   sync.Mutex
	reqs []sseRequest
}

func newSSEServer(t *testing.T, conns ...func(w http.ResponseWriter, r *http.Request)) (*httptest.Server, *sseScript) {
	t.Helper()
	sc := &sseScript{t: t, conns: conns}
	srv := httptest.NewServer(sc)
	t.Cleanup(srv.Close)
	return srv, sc
}

func (sc *sseScript) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path != "/sse" || r.Method != http.MethodGet {
		sc.t.Errorf("request %s %s, want GET /sse", r.Method, r.URL.Path)
		http.NotFound(w, r)
		return
	}
	lei, has := r.Header["Last-Event-Id"]
	req := sseRequest{query: r.URL.Query(), auth: r.Header.Get("Authorization"), hasLEI: has}
	if has {
		req.lastEventID = lei[0]
	}
	sc.mu.Lock()
	i := len(sc.reqs)
	sc.reqs = append(sc.reqs, req)
	sc.mu.Unlock()
	if i < len(sc.conns) {
		sc.conns[i](w, r)
		return
	}
	startStream(w)
	<-r.Context().Done()
}

func (sc *sseScript) requests() []sseRequest {
	sc.mu.Lock()
	defer sc.mu.Unlock()
	return append([]sseRequest(nil), sc.reqs...)
}

func startStream(w http.ResponseWriter) {
	w.Header().Set("Content-Type", "text/event-stream; charset=utf-8")
	w.Header().Set("Cache-Control", "no-cache")
	w.WriteHeader(http.StatusOK)
	sendSSE(w, "retry: 2000\n\n")
}

func sendSSE(w http.ResponseWriter, s string) {
	_, _ = io.WriteString(w, s)
	w.(http.Flusher).Flush()
}

// abortConn cuts the connection without ending the chunked body: the client
// sees an unexpected EOF.
func abortConn(t *testing.T, w http.ResponseWriter) {
	conn, _, err := http.NewResponseController(w).Hijack()
	if err != nil {
		t.Errorf("hijack: %v", err)
		return
	}
	conn.Close()
}

func connectedEvent(cursor string, heads ...string) string {
	var chans []string
	for _, h := range heads { // "A@e1:0"
		ch, rest, _ := strings.Cut(h, "@")
		epoch, off, _ := strings.Cut(rest, ":")
		chans = append(chans, fmt.Sprintf(`{"channel":%q,"epoch":%q,"offset":%s}`, ch, epoch, off))
	}
	return fmt.Sprintf("event: herald.connected\ndata: {\"session\":\"s_test\",\"channels\":[%s]}\nid: %s\n\n", strings.Join(chans, ","), cursor)
}

func envelopeJSON(channel, epoch string, offset int) string {
	return fmt.Sprintf(`{"channel":%q,"offset":%d,"epoch":%q,"id":"m_%d","event":"message_sent","data":{"n":%d},"time":"2026-11-26T16:52:20.123Z"}`,
		channel, offset, epoch, offset, offset)
}

// messageEvent is a stored message framed like the server does: event:,
// data:, id: last.
func messageEvent(channel, epoch string, offset int, cursor string) string {
	return "event: message_sent\ndata: " + envelopeJSON(channel, epoch, offset) + "\nid: " + cursor + "\n\n"
}

func jsonLines(ls ...string) string {
	if len(ls) == 0 {
		return ""
	}
	return strings.Join(ls, "\n") + "\n"
}

// runSub runs the subscriber against url with a tiny backoff.
func runSub(t *testing.T, url string, args ...string) (string, string, error) {
	t.Helper()
	env := map[string]string{envURL: url, envToken: "tok"}
	var stdout, stderr bytes.Buffer
	opts, err := parseSubscribeFlags(args, func(k string) string { return env[k] }, &stderr)
	if err != nil {
		return "", stderr.String(), err
	}
	opts.backoff = backoffPolicy{base: time.Millisecond, max: 5 * time.Millisecond}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err = runSubscribe(ctx, opts, &stdout, &stderr)
	if ctx.Err() == context.DeadlineExceeded {
		t.Fatalf("subscriber still running after the test deadline; stdout:\n%s\nstderr:\n%s", stdout.String(), stderr.String())
	}
	return stdout.String(), stderr.String(), err
}

// ---- (a) clean end of stream, then a second connection ----

func TestSubscribeResumesAfterCleanEnd(t *testing.T) {
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
	out, stderr, err := runSub(t, srv.URL, "--channel", "A", "--channel", "B", "--max", "3")
	if err != nil {
		t.Fatalf("subscribe: %v\nstderr: %s", err, stderr)
	}
	want := jsonLines(envelopeJSON("A", "e1", 1), envelopeJSON("B", "e2", 6), envelopeJSON("A", "e1", 2))
	if out != want {
		t.Errorf("output:\n%s\nwant:\n%s", out, want)
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
	}
}

// ---- (b) a stream cut in the middle of an event ----

func TestSubscribeDropsHalfEvent(t *testing.T) {
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
			out, stderr, err := runSub(t, srv.URL, "--channel", "A", "--max", "3")
			if err != nil {
				t.Fatalf("subscribe: %v\nstderr: %s", err, stderr)
			}
			want := jsonLines(envelopeJSON("A", "e1", 1), env2, envelopeJSON("A", "e1", 3))
			if out != want {
				t.Errorf("output:\n%s\nwant:\n%s", out, want)
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

func TestSubscribeDropsReplayedDuplicate(t *testing.T) {
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
	out, stderr, err := runSub(t, srv.URL, "--channel", "A", "--max", "3", "--verbose")
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
	if got := sc.requests()[1].lastEventID; got != "c2" {
		t.Errorf("reconnect Last-Event-ID = %q, want c2", got)
	}
}

func TestSubscribeGapResumesFromLastGoodCursor(t *testing.T) {
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
	out, stderr, err := runSub(t, srv.URL, "--channel", "A", "--max", "3")
	if err != nil {
		t.Fatalf("subscribe: %v\nstderr: %s", err, stderr)
	}
	want := jsonLines(envelopeJSON("A", "e1", 1), envelopeJSON("A", "e1", 2), envelopeJSON("A", "e1", 3))
	if out != want {
		t.Errorf("output:\n%s\nwant:\n%s", out, want)
	}
	if got := sc.requests()[1].lastEventID; got != "c1" {
		t.Errorf("reconnect Last-Event-ID = %q, want c1", got)
	}
	if !strings.Contains(stderr, "gap, expected offset 2, got 3") {
		t.Errorf("stderr does not explain the gap:\n%s", stderr)
	}
}

func TestSubscribeResetAndEphemeral(t *testing.T) {
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
	out, stderr, err := runSub(t, srv.URL, "--channel", "A", "--max", "3")
	if err != nil {
		t.Fatalf("subscribe: %v\nstderr: %s", err, stderr)
	}
	want := jsonLines(ephemeral, reset, envelopeJSON("A", "e2", 1))
	if out != want {
		t.Errorf("output:\n%s\nwant:\n%s", out, want)
	}
	if got := sc.requests()[1].lastEventID; got != "c0" {
		t.Errorf("reconnect Last-Event-ID = %q, want c0 (an ephemeral message moves no cursor)", got)
	}
}

func TestSubscribeServerDisconnect(t *testing.T) {
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
		out, stderr, err := runSub(t, srv.URL, "--channel", "A", "--max", "2", "-v")
		if err != nil {
			t.Fatalf("subscribe: %v\nstderr: %s", err, stderr)
		}
		if want := jsonLines(envelopeJSON("A", "e1", 1), envelopeJSON("A", "e1", 2)); out != want {
			t.Errorf("output:\n%s\nwant:\n%s", out, want)
		}
		if got := sc.requests()[1].lastEventID; got != "c1" {
			t.Errorf("reconnect Last-Event-ID = %q, want c1", got)
		}
		for _, s := range []string{"connected: session s_test", "disconnected by the server: shutdown", "resume with --cursor c2"} {
			if !strings.Contains(stderr, s) {
				t.Errorf("verbose stderr lacks %q:\n%s", s, stderr)
			}
		}
	})
	t.Run("quiet without verbose", func(t *testing.T) {
		srv, _ := newSSEServer(t,
			func(w http.ResponseWriter, r *http.Request) {
				startStream(w)
				sendSSE(w, connectedEvent("c0", "A@e1:0"))
				sendSSE(w, "event: herald.disconnect\ndata: {\"reason\":\"shutdown\",\"reconnect\":true}\n\n")
			},
			func(w http.ResponseWriter, r *http.Request) {
				startStream(w)
				sendSSE(w, connectedEvent("c0", "A@e1:0"))
				sendSSE(w, messageEvent("A", "e1", 1, "c1"))
			},
		)
		out, stderr, err := runSub(t, srv.URL, "--channel", "A", "--max", "1")
		if err != nil {
			t.Fatalf("subscribe: %v", err)
		}
		if strings.Contains(out, "herald.") || stderr != "" {
			t.Errorf("connected/disconnect leaked: stdout %q, stderr %q", out, stderr)
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
		_, _, err := runSub(t, srv.URL, "--channel", "A")
		if err == nil || !strings.Contains(err.Error(), "revoked") {
			t.Fatalf("err = %v, want the revoked disconnect", err)
		}
		if n := len(sc.requests()); n != 1 {
			t.Errorf("%d requests, want 1 (no reconnect)", n)
		}
	})
}

// ---- (d) error answers ----

func jsonError(code int, msg string) func(w http.ResponseWriter, r *http.Request) {
	return func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(code)
		fmt.Fprintf(w, `{"error":{"code":%d,"message":%q}}`+"\n", code, msg)
	}
}

func TestSubscribeErrorAnswers(t *testing.T) {
	cases := []struct {
		name     string
		answer   func(w http.ResponseWriter, r *http.Request)
		args     []string
		wantErr  string
		wantReqs int
	}{
		{"403 stops", jsonError(403, `not allowed to subscribe to channel "A"`), nil, `403 Forbidden: not allowed to subscribe to channel "A"`, 1},
		{"401 stops", jsonError(401, "token is expired"), nil, "401 Unauthorized: token is expired", 1},
		{"400 bad cursor stops", jsonError(400, "cursor is not valid: checksum mismatch"), []string{"--cursor", "bogus"}, "cursor is not valid: checksum mismatch", 1},
		{"200 but not a stream", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "text/html")
			fmt.Fprint(w, "<html>hello</html>")
		}, nil, "not an event stream", 1},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			srv, sc := newSSEServer(t, tc.answer)
			_, _, err := runSub(t, srv.URL, append([]string{"--channel", "A"}, tc.args...)...)
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("err = %v, want one containing %q", err, tc.wantErr)
			}
			reqs := sc.requests()
			if len(reqs) != tc.wantReqs {
				t.Errorf("%d requests, want %d", len(reqs), tc.wantReqs)
			}
			if tc.args != nil && reqs[0].lastEventID != "bogus" {
				t.Errorf("--cursor sent as Last-Event-ID %q, want bogus", reqs[0].lastEventID)
			}
		})
	}
}

func TestSubscribeRetries503And429(t *testing.T) {
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
	out, stderr, err := runSub(t, srv.URL, "--channel", "A", "--max", "1")
	if err != nil {
		t.Fatalf("subscribe: %v", err)
	}
	if want := jsonLines(envelopeJSON("A", "e1", 1)); out != want {
		t.Errorf("output %q, want %q", out, want)
	}
	if n := len(sc.requests()); n != 4 {
		t.Errorf("%d requests, want 4", n)
	}
	if !strings.Contains(stderr, "503 Service Unavailable: server shutting down") {
		t.Errorf("stderr does not log the 503:\n%s", stderr)
	}
}

// ---- (e) stop conditions ----

func TestSubscribeStops(t *testing.T) {
	t.Run("max", func(t *testing.T) {
		srv, sc := newSSEServer(t, func(w http.ResponseWriter, r *http.Request) {
			startStream(w)
			sendSSE(w, connectedEvent("c0", "A@e1:0"))
			for i := 1; i <= 4; i++ {
				sendSSE(w, messageEvent("A", "e1", i, fmt.Sprint("c", i)))
			}
			<-r.Context().Done()
		})
		out, _, err := runSub(t, srv.URL, "--channel", "A", "--max", "2")
		if err != nil {
			t.Fatalf("subscribe: %v", err)
		}
		if want := jsonLines(envelopeJSON("A", "e1", 1), envelopeJSON("A", "e1", 2)); out != want {
			t.Errorf("output:\n%s\nwant:\n%s", out, want)
		}
		if n := len(sc.requests()); n != 1 {
			t.Errorf("%d requests, want 1", n)
		}
	})
	t.Run("timeout", func(t *testing.T) {
		srv, _ := newSSEServer(t, func(w http.ResponseWriter, r *http.Request) {
			startStream(w)
			sendSSE(w, connectedEvent("c0", "A@e1:0"))
			sendSSE(w, messageEvent("A", "e1", 1, "c1"))
			<-r.Context().Done()
		})
		// The timeout is what the first message must beat: long next to a
		// loopback exchange on a busy machine.
		out, _, err := runSub(t, srv.URL, "--channel", "A", "--timeout", "2s")
		var idle *idleTimeout
		if !errors.As(err, &idle) || !strings.Contains(err.Error(), "no message for 2s") {
			t.Fatalf("err = %v, want the --timeout error", err)
		}
		if want := jsonLines(envelopeJSON("A", "e1", 1)); out != want {
			t.Errorf("output %q, want %q", out, want)
		}
	})
	t.Run("cancel", func(t *testing.T) {
		srv, _ := newSSEServer(t, func(w http.ResponseWriter, r *http.Request) {
			startStream(w)
			sendSSE(w, connectedEvent("c0", "A@e1:0"))
			sendSSE(w, messageEvent("A", "e1", 1, "c1"))
			<-r.Context().Done()
		})
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		opts, err := parseSubscribeFlags([]string{"--server", srv.URL, "--channel", "A"}, func(string) string { return "" }, io.Discard)
		if err != nil {
			t.Fatal(err)
		}
		out := &cancelOnWrite{cancel: cancel}
		done := make(chan error, 1)
		go func() { done <- runSubscribe(ctx, opts, out, io.Discard) }()
		select {
		case err := <-done:
			if err != nil {
				t.Fatalf("subscribe after cancel: %v, want nil", err)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("subscribe did not return after cancel")
		}
		if want := jsonLines(envelopeJSON("A", "e1", 1)); out.String() != want {
			t.Errorf("output %q, want %q", out.String(), want)
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
		out, _, err := runSub(t, srv.URL, "--channel", "A", "--max", "1", "--stall-timeout", "2s")
		if err != nil {
			t.Fatalf("subscribe: %v", err)
		}
		if want := jsonLines(envelopeJSON("A", "e1", 1)); out != want {
			t.Errorf("output %q, want %q", out, want)
		}
		if got := sc.requests()[1].lastEventID; got != "c0" {
			t.Errorf("reconnect Last-Event-ID = %q, want c0", got)
		}
	})
}

// cancelOnWrite records output and cancels once something is written.
type cancelOnWrite struct {
	mu     sync.Mutex
	buf    bytes.Buffer
	cancel context.CancelFunc
}

func (c *cancelOnWrite) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.cancel()
	return c.buf.Write(p)
}

func (c *cancelOnWrite) String() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.buf.String()
}

func TestSubscribeSinceThenCursor(t *testing.T) {
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
	out, stderr, err := runSub(t, srv.URL, "--channel", "A", "--channel", "B", "--since", "41", "--since", "", "--epoch", "e1", "--epoch", "", "--max", "2")
	if err != nil {
		t.Fatalf("subscribe: %v\n%s", err, stderr)
	}
	if want := jsonLines(envelopeJSON("A", "e1", 42), envelopeJSON("A", "e1", 43)); out != want {
		t.Errorf("output:\n%s\nwant:\n%s", out, want)
	}
	reqs := sc.requests()
	if got := strings.Join(reqs[0].query["since"], ","); got != "41," {
		t.Errorf("first request since = %q, want \"41,\"", got)
	}
	if got := strings.Join(reqs[0].query["epoch"], ","); got != "e1," {
		t.Errorf("first request epoch = %q, want \"e1,\"", got)
	}
	if reqs[1].query["since"] != nil || reqs[1].lastEventID != "c42" {
		t.Errorf("reconnect: since %v, Last-Event-ID %q; want no since, c42", reqs[1].query["since"], reqs[1].lastEventID)
	}
}

// ---- unit tests of the pieces ----

func TestSubscribeFlags(t *testing.T) {
	cases := []struct {
		args    []string
		wantErr string
	}{
		{[]string{}, "--channel is required"},
		{[]string{"--channel", "A", "--transport", "poll"}, ""},
		{[]string{"--channel", "A", "--transport", "ws", "--cursor", "x"}, "--cursor is for --transport sse and poll"},
		{[]string{"--channel", "A", "--transport", "ws", "--since", "4", "--epoch", "e1"}, ""},
		{[]string{"--channel", "A", "--transport", "carrier-pigeon"}, "unknown"},
		{[]string{"--channel", "bad room"}, "character"},
		{[]string{"--channel", "A", "--channel", "A"}, "given twice"},
		{[]string{"--channel", "A", "--cursor", "x", "--since", "1"}, "not both"},
		{[]string{"--channel", "A", "--channel", "B", "--since", "1"}, "1 since values for 2 channels"},
		{[]string{"--channel", "A", "--since", "x"}, "not a non-negative integer"},
		{[]string{"--channel", "A", "--epoch", "e1"}, "--epoch needs --since"},
		{[]string{"--channel", "A", "--max", "-1"}, "--max"},
		{[]string{"--channel", "A", "extra"}, "unexpected argument"},
		{[]string{"--channel", "A", "--server", "ftp://x"}, "http:// or https://"},
		{[]string{"--channel", "A", "--transport", "sse", "--max", "2"}, ""},
	}
	for _, tc := range cases {
		_, err := parseSubscribeFlags(tc.args, func(string) string { return "" }, io.Discard)
		switch {
		case tc.wantErr == "" && err != nil:
			t.Errorf("%q: %v", tc.args, err)
		case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
			t.Errorf("%q: err = %v, want %q", tc.args, err, tc.wantErr)
		}
	}
	if _, err := parseSubscribeFlags([]string{"-h"}, func(string) string { return "" }, io.Discard); err == nil || !errors.Is(err, flag.ErrHelp) {
		t.Errorf("-h: err = %v, want flag.ErrHelp", err)
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
		opts  subscribeOptions
		steps []step
	}{
		{"in order, duplicate, gap", subscribeOptions{channels: []string{"A"}}, []step{
			{connected("c0", "A@e1:5"), verdictConnected, "c0"},
			{msg("A", "e1", 6, "c6"), verdictPrint, "c6"},
			{msg("A", "e1", 6, "c6"), verdictDuplicate, "c6"},
			{msg("A", "e1", 5, "c5"), verdictDuplicate, "c6"},
			{msg("A", "e1", 8, "c8"), verdictBroken, "c6"},
			{msg("A", "e1", 7, "c7"), verdictPrint, "c7"},
		}},
		{"stored message without its own id", subscribeOptions{channels: []string{"A"}}, []step{
			{connected("c0", "A@e1:0"), verdictConnected, "c0"},
			{msg("A", "e1", 1, ""), verdictPrint, "c0"},
			{msg("A", "e1", 2, "c2"), verdictPrint, "c2"},
		}},
		{"epoch change without reset", subscribeOptions{channels: []string{"A"}}, []step{
			{connected("c0", "A@e1:3"), verdictConnected, "c0"},
			{msg("A", "e2", 4, "c4"), verdictBroken, "c0"},
		}},
		{"reset", subscribeOptions{channels: []string{"A"}}, []step{
			{connected("c0", "A@e1:3"), verdictConnected, "c0"},
			{streamEvent{name: "herald.reset", data: []byte(`{"channel":"A","epoch":"e2","event":"herald.reset","data":{"reason":"epoch_changed","epoch":"e2","resume_after":0,"head":2}}`), id: "r", hasID: true}, verdictPrint, "r"},
			{msg("A", "e2", 1, "c1"), verdictPrint, "c1"},
		}},
		{"reset without resume_after", subscribeOptions{channels: []string{"A"}}, []step{
			{streamEvent{name: "herald.reset", data: []byte(`{"channel":"A","event":"herald.reset","data":{}}`), id: "r", hasID: true}, verdictBroken, ""},
		}},
		{"since without epoch takes the connected epoch", subscribeOptions{channels: []string{"A"}, since: []string{"10"}}, []step{
			{connected("c10", "A@e1:20"), verdictConnected, "c10"},
			{msg("A", "e1", 10, "x"), verdictDuplicate, "c10"},
			{msg("A", "e1", 11, "c11"), verdictPrint, "c11"},
		}},
		{"opaque cursor: first message sets the position", subscribeOptions{channels: []string{"A"}, cursor: "k"}, []step{
			{connected("k2", "A@e1:20"), verdictConnected, "k2"},
			{msg("A", "e1", 7, "c7"), verdictPrint, "c7"},
			{msg("A", "e1", 9, "c9"), verdictBroken, "c7"},
		}},
		{"malformed and foreign events", subscribeOptions{channels: []string{"A"}}, []step{
			{streamEvent{name: "message_sent", data: []byte(`{"channel":"A","offs`), id: "x", hasID: true}, verdictBroken, ""},
			{streamEvent{name: "herald.connected", data: []byte(`nope`), id: "x", hasID: true}, verdictBroken, ""},
			{msg("B", "e1", 1, "b1"), verdictIgnore, ""},
			{streamEvent{}, verdictIgnore, ""},
		}},
		{"ephemeral", subscribeOptions{channels: []string{"A"}}, []step{
			{connected("c0", "A@e1:0"), verdictConnected, "c0"},
			{streamEvent{name: "typing", data: []byte(`{"channel":"A","event":"typing","data":null}`), id: "c0"}, verdictPrint, "c0"},
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
				if o.verdict == verdictPrint && !bytes.Equal(o.line, st.ev.data) {
					t.Fatalf("step %d: line %q, want the data", i, o.line)
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

func TestReconnectBackoff(t *testing.T) {
	b := reconnectBackoff{policy: backoffPolicy{base: 100 * time.Millisecond, max: 2 * time.Second}}
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
	j := reconnectBackoff{policy: defaultBackoff}
	for i := 0; i < 20; i++ {
		d := j.next()
		if d < j.cur/2 || d > j.cur || d > 2*time.Second {
			t.Fatalf("jittered delay %s outside [%s, %s]", d, j.cur/2, j.cur)
		}
	}
}
