package client

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"
)

func pollOpts(channels ...string) SubscribeOptions {
	return SubscribeOptions{Transport: LongPoll, Channels: channels}
}

// ---- (a) cursor and session carried from answer to answer ----

func TestPollCarriesCursorAndSession(t *testing.T) {
	srv, sc := newPollServer(t,
		pollOK("c1", "s1", envelopeJSON("A", "e1", 1), envelopeJSON("B", "e2", 6)),
		pollOK("c2", "s1"), // the wait ran out: nothing new
		pollOK("c3", "s1", envelopeJSON("A", "e1", 2)),
	)
	run := runSub(t, srv.URL, pollOpts("A", "B"), 3)
	if run.err != nil {
		t.Fatalf("subscribe: %v\nlog: %s", run.err, run.log)
	}
	want := jsonLines(envelopeJSON("A", "e1", 1), envelopeJSON("B", "e2", 6), envelopeJSON("A", "e1", 2))
	if run.out != want {
		t.Errorf("output:\n%s\nwant:\n%s", run.out, want)
	}
	if run.cursor != "c3" || run.session != "s1" {
		t.Errorf("cursor %q session %q, want c3 s1", run.cursor, run.session)
	}
	reqs := sc.requests()
	if len(reqs) < 3 {
		t.Fatalf("%d polls, want 3 or more", len(reqs))
	}
	wantCS := [][2]string{{"", ""}, {"c1", "s1"}, {"c2", "s1"}}
	// The first poll places the subscription without waiting; the others
	// wait the poll timeout.
	wantTimeout := []string{"0", "25", "25"}
	for i, r := range reqs[:3] {
		if got := [2]string{r.cursor, r.session}; got != wantCS[i] {
			t.Errorf("poll %d cursor, session = %q, want %q", i, got, wantCS[i])
		}
		if r.method != http.MethodGet || join(r.channels) != "A,B" || r.timeout != wantTimeout[i] || r.auth != "Bearer tok" {
			t.Errorf("poll %d: %s channels %v timeout %q auth %q; want GET [A B] %s \"Bearer tok\"", i, r.method, r.channels, r.timeout, r.auth, wantTimeout[i])
		}
		if r.since != nil || r.epoch != nil {
			t.Errorf("poll %d sent since %v epoch %v, want none", i, r.since, r.epoch)
		}
	}
}

func TestPollPostsManyChannels(t *testing.T) {
	var chans []string
	for i := 1; i <= pollGETMaxChannels+1; i++ {
		chans = append(chans, fmt.Sprintf("room_%02d", i))
	}
	srv, sc := newPollServer(t,
		pollOK("c1", "s1", envelopeJSON("room_05", "e1", 1)),
		pollOK("c2", "s1", envelopeJSON("room_21", "e1", 9)),
	)
	opts := pollOpts(chans...)
	opts.PollTimeout = 7 * time.Second
	run := runSub(t, srv.URL, opts, 2)
	if run.err != nil {
		t.Fatalf("subscribe: %v\nlog: %s", run.err, run.log)
	}
	if want := jsonLines(envelopeJSON("room_05", "e1", 1), envelopeJSON("room_21", "e1", 9)); run.out != want {
		t.Errorf("output:\n%s\nwant:\n%s", run.out, want)
	}
	reqs := sc.requests()
	if len(reqs) < 2 {
		t.Fatalf("%d polls, want 2 or more", len(reqs))
	}
	for i, r := range reqs[:2] {
		want := []string{"0", "7"}[i]
		if r.method != http.MethodPost || r.contentType != "application/json" || join(r.channels) != join(chans) || r.timeout != want {
			t.Errorf("poll %d: %s %q channels %v timeout %q; want POST application/json, all 21 channels, %s", i, r.method, r.contentType, r.channels, r.timeout, want)
		}
	}
	if reqs[1].cursor != "c1" || reqs[1].session != "s1" {
		t.Errorf("second poll cursor %q session %q, want c1 s1", reqs[1].cursor, reqs[1].session)
	}
}

func TestPollSeeds(t *testing.T) {
	t.Run("cursor", func(t *testing.T) {
		srv, sc := newPollServer(t,
			// The cursor is opaque: the first message of a channel sets
			// its position, whatever its offset.
			pollOK("c42", "s1", envelopeJSON("A", "e1", 42)),
			pollOK("c43", "s1", envelopeJSON("A", "e1", 42), envelopeJSON("A", "e1", 43)),
		)
		opts := pollOpts("A")
		opts.Cursor = "c41"
		run := runSub(t, srv.URL, opts, 2)
		if run.err != nil {
			t.Fatalf("subscribe: %v\nlog: %s", run.err, run.log)
		}
		if want := jsonLines(envelopeJSON("A", "e1", 42), envelopeJSON("A", "e1", 43)); run.out != want {
			t.Errorf("output:\n%s\nwant:\n%s", run.out, want)
		}
		reqs := sc.requests()
		if reqs[0].cursor != "c41" || reqs[0].session != "" || reqs[0].since != nil {
			t.Errorf("first poll cursor %q session %q since %v, want c41, none, none", reqs[0].cursor, reqs[0].session, reqs[0].since)
		}
		if reqs[1].cursor != "c42" {
			t.Errorf("second poll cursor %q, want c42", reqs[1].cursor)
		}
	})
	t.Run("positions and session", func(t *testing.T) {
		srv, sc := newPollServer(t,
			pollOK("c42", "s1", envelopeJSON("A", "e1", 42)),
			pollOK("c43", "s1", envelopeJSON("A", "e1", 43)),
		)
		opts := pollOpts("A", "B")
		opts.Positions = map[string]Position{"A": {Offset: 41, Epoch: "e1"}}
		opts.Session = "s1"
		run := runSub(t, srv.URL, opts, 2)
		if run.err != nil {
			t.Fatalf("subscribe: %v\nlog: %s", run.err, run.log)
		}
		if want := jsonLines(envelopeJSON("A", "e1", 42), envelopeJSON("A", "e1", 43)); run.out != want {
			t.Errorf("output:\n%s\nwant:\n%s", run.out, want)
		}
		reqs := sc.requests()
		if join(reqs[0].since) != "41," || join(reqs[0].epoch) != "e1," || reqs[0].cursor != "" || reqs[0].session != "s1" {
			t.Errorf("first poll since %q epoch %q cursor %q session %q, want \"41,\" \"e1,\" none s1", join(reqs[0].since), join(reqs[0].epoch), reqs[0].cursor, reqs[0].session)
		}
		if reqs[1].since != nil || reqs[1].cursor != "c42" {
			t.Errorf("second poll since %v cursor %q, want none, c42", reqs[1].since, reqs[1].cursor)
		}
	})
}

// ---- (b) retried answers ----

func TestPollRetries(t *testing.T) {
	srv, sc := newPollServer(t,
		jsonError(503, "server shutting down"),
		jsonError(429, "too many requests"),
		func(w http.ResponseWriter, r *http.Request) { // a proxy's 502
			w.Header().Set("Content-Type", "text/html; charset=utf-8")
			w.WriteHeader(http.StatusBadGateway)
			fmt.Fprint(w, "<html><body><h1>502 Bad Gateway</h1></body></html>")
		},
		func(w http.ResponseWriter, r *http.Request) { // a 200 that is not an answer
			w.Header().Set("Content-Type", "text/html")
			fmt.Fprint(w, "<html>please log in to the hotel wifi</html>")
		},
		func(w http.ResponseWriter, r *http.Request) { // JSON, but not an answer
			w.Header().Set("Content-Type", "application/json")
			fmt.Fprint(w, `{"cursor":"c9"}`)
		},
		func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			fmt.Fprint(w, `{"error":"nope"}`)
		},
		// A cut connection. Two in a row: the HTTP transport itself
		// retries a GET once when a kept-alive connection fails.
		abortPoll(t),
		abortPoll(t),
		pollOK("c1", "s1", envelopeJSON("A", "e1", 1)),
	)
	opts := pollOpts("A")
	opts.Cursor = "c0"
	run := runSub(t, srv.URL, opts, 1)
	if run.err != nil {
		t.Fatalf("subscribe: %v\nlog: %s", run.err, run.log)
	}
	if want := jsonLines(envelopeJSON("A", "e1", 1)); run.out != want {
		t.Errorf("output %q, want %q", run.out, want)
	}
	reqs := sc.requests()
	if len(reqs) < 9 {
		t.Fatalf("%d polls, want 9 or more", len(reqs))
	}
	for i, r := range reqs[:9] {
		if r.cursor != "c0" {
			t.Errorf("poll %d cursor %q, want c0 (nothing was taken yet)", i, r.cursor)
		}
	}
	for _, s := range []string{
		"503 Service Unavailable: server shutting down",
		"429 Too Many Requests: too many requests",
		`502 Bad Gateway: not a Herald JSON error (Content-Type \"text/html\", a proxy's page?): <html><body><h1>502 Bad Gateway</h1></body></html>`,
		`the poll answer is not Herald JSON (not JSON; Content-Type \"text/html\": \"<html>please log in to the hotel wifi</html>\")`,
		`the poll answer is not Herald JSON (no \"messages\" or no \"cursor\"`,
		"EOF",
	} {
		if !strings.Contains(run.log, s) {
			t.Errorf("the log lacks %q:\n%s", s, run.log)
		}
	}
}

func TestPollRetriesAfterGoodPolls(t *testing.T) {
	srv, sc := newPollServer(t,
		pollOK("c1", "s1", envelopeJSON("A", "e1", 1)),
		jsonError(503, "server shutting down"),
		abortPoll(t),
		pollOK("c2", "s1", envelopeJSON("A", "e1", 2)),
	)
	run := runSub(t, srv.URL, pollOpts("A"), 2)
	if run.err != nil {
		t.Fatalf("subscribe: %v\nlog: %s", run.err, run.log)
	}
	if want := jsonLines(envelopeJSON("A", "e1", 1), envelopeJSON("A", "e1", 2)); run.out != want {
		t.Errorf("output:\n%s\nwant:\n%s", run.out, want)
	}
	for i, r := range sc.requests()[1:4] {
		if r.cursor != "c1" || r.session != "s1" {
			t.Errorf("retry %d cursor %q session %q, want c1 s1", i+1, r.cursor, r.session)
		}
	}
	// A failed poll after good ones is a warning.
	if !strings.Contains(run.log, `level=WARN msg="poll failed" transport=poll err="server answered 503 Service Unavailable: server shutting down"`) {
		t.Errorf("the log does not warn of the failed poll:\n%s", run.log)
	}
}

func TestPollAttemptHonoursRetryAfter(t *testing.T) {
	srv, _ := newPollServer(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Retry-After", "7")
		jsonError(429, "slow down")(w, r)
	})
	c, err := New(srv.URL, Options{})
	if err != nil {
		t.Fatal(err)
	}
	opts := pollOpts("A").withDefaults()
	s := &Subscription{c: c, opts: opts, t: newTracker(opts), log: c.opts.Logger, ready: make(chan struct{})}
	r := newPoller(s).attempt(context.Background())
	if r.fatal || r.retryAfter != 7*time.Second || r.connected {
		t.Errorf("attempt = %+v, want retryable, retryAfter 7s, not connected", r)
	}
}

// ---- (c) refusals end the subscription ----

func TestPollStopsOnRefusal(t *testing.T) {
	cases := []struct {
		name    string
		answers []http.HandlerFunc
		wantErr string
	}{
		{"403", []http.HandlerFunc{jsonError(403, `not allowed to subscribe to channel "A"`)},
			`403 Forbidden: not allowed to subscribe to channel "A"`},
		{"400 timeout over the server's cap", []http.HandlerFunc{jsonError(400, "timeout 25: want 0 to 10 seconds")},
			"400 Bad Request: timeout 25: want 0 to 10 seconds"},
		{"401 after good polls", []http.HandlerFunc{pollOK("c1", "s1", envelopeJSON("A", "e1", 1)), jsonError(401, "token is expired")},
			"401 Unauthorized: token is expired"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			srv, sc := newPollServer(t, tc.answers...)
			run := runSub(t, srv.URL, pollOpts("A"), 0)
			if run.err == nil || !strings.Contains(run.err.Error(), tc.wantErr) {
				t.Fatalf("err = %v, want one containing %q", run.err, tc.wantErr)
			}
			if n := len(sc.requests()); n != len(tc.answers) {
				t.Errorf("%d polls, want %d (no retry)", n, len(tc.answers))
			}
		})
	}
}

// ---- (d) a reset among the messages ----

func TestPollReset(t *testing.T) {
	ephemeral := `{"channel":"A","event":"typing","data":{"who":"ana"},"time":"2026-11-26T16:52:20.123Z"}`
	srv, _ := newPollServer(t,
		pollOK("c1", "s1", envelopeJSON("A", "e1", 1)),
		pollOK("c2", "s1", resetEnvelope("A", "e2", "epoch_changed", 0, 1), envelopeJSON("A", "e2", 1), ephemeral),
	)
	run := runSub(t, srv.URL, pollOpts("A"), 4)
	if run.err != nil {
		t.Fatalf("subscribe: %v\nlog: %s", run.err, run.log)
	}
	want := jsonLines(envelopeJSON("A", "e1", 1), resetEnvelope("A", "e2", "epoch_changed", 0, 1), envelopeJSON("A", "e2", 1), ephemeral)
	if run.out != want {
		t.Errorf("output:\n%s\nwant:\n%s", run.out, want)
	}
	if run.positions["A"] != (Position{1, "e2"}) {
		t.Errorf("positions %v, want A e2:1", run.positions)
	}
}

// ---- (e) replays are dropped; a gap resumes from the previous cursor ----

func TestPollDropsReplays(t *testing.T) {
	srv, _ := newPollServer(t,
		pollOK("c2", "s1", envelopeJSON("A", "e1", 1), envelopeJSON("A", "e1", 2)),
		pollOK("c3", "s1", envelopeJSON("A", "e1", 2), envelopeJSON("A", "e1", 3)),
	)
	run := runSub(t, srv.URL, pollOpts("A"), 3)
	if run.err != nil {
		t.Fatalf("subscribe: %v\nlog: %s", run.err, run.log)
	}
	if want := jsonLines(envelopeJSON("A", "e1", 1), envelopeJSON("A", "e1", 2), envelopeJSON("A", "e1", 3)); run.out != want {
		t.Errorf("output:\n%s\nwant:\n%s", run.out, want)
	}
	if !strings.Contains(run.log, `msg="dropped a replayed message" transport=poll channel=A position=e1:2`) {
		t.Errorf("the log does not give the dropped replay:\n%s", run.log)
	}
}

func TestPollGapResumesFromPreviousCursor(t *testing.T) {
	srv, sc := newPollServer(t,
		pollOK("c1", "s1", envelopeJSON("A", "e1", 1)),
		pollOK("c4", "s1", envelopeJSON("A", "e1", 2), envelopeJSON("A", "e1", 4)), // 3 is missing
		pollOK("c4", "s1", envelopeJSON("A", "e1", 2), envelopeJSON("A", "e1", 3), envelopeJSON("A", "e1", 4)),
	)
	run := runSub(t, srv.URL, pollOpts("A"), 4)
	if run.err != nil {
		t.Fatalf("subscribe: %v\nlog: %s", run.err, run.log)
	}
	want := jsonLines(envelopeJSON("A", "e1", 1), envelopeJSON("A", "e1", 2), envelopeJSON("A", "e1", 3), envelopeJSON("A", "e1", 4))
	if run.out != want {
		t.Errorf("output:\n%s\nwant:\n%s", run.out, want)
	}
	reqs := sc.requests()
	if len(reqs) < 3 {
		t.Fatalf("%d polls, want 3 or more", len(reqs))
	}
	if reqs[2].cursor != "c1" || reqs[2].session != "s1" {
		t.Errorf("poll after the gap: cursor %q session %q, want c1 s1 (the answer with the gap is not taken)", reqs[2].cursor, reqs[2].session)
	}
	if !strings.Contains(run.log, "gap, expected offset 3, got 4") {
		t.Errorf("the log does not give the gap:\n%s", run.log)
	}
}

func TestPollPassedOver(t *testing.T) {
	srv, sc := newPollServer(t,
		pollOK("c1", "s1", envelopeJSON("A", "e1", 1)),
		pollOK("c2", "s1"), // message 2 was excluded for this session
		pollOK("c3", "s1", envelopeJSON("A", "e1", 3)),
	)
	run := runSub(t, srv.URL, pollOpts("A"), 2)
	if run.err != nil {
		t.Fatalf("subscribe: %v\nlog: %s", run.err, run.log)
	}
	if want := jsonLines(envelopeJSON("A", "e1", 1), envelopeJSON("A", "e1", 3)); run.out != want {
		t.Errorf("output:\n%s\nwant:\n%s", run.out, want)
	}
	if n := len(sc.requests()); n < 3 {
		t.Errorf("%d polls, want 3 or more", n)
	}
	if strings.Contains(run.log, "gap") {
		t.Errorf("a passed-over message counted as a gap:\n%s", run.log)
	}
}

// ---- (f) where a stop inside an answer leaves the resume state ----

func TestPollStopInsideAnAnswer(t *testing.T) {
	t.Run("inside", func(t *testing.T) {
		srv, sc := newPollServer(t, pollOK("c3", "s1", envelopeJSON("A", "e1", 1), envelopeJSON("A", "e1", 2), envelopeJSON("A", "e1", 3)))
		run := runSub(t, srv.URL, pollOpts("A"), 2)
		if run.err != nil {
			t.Fatalf("subscribe: %v", run.err)
		}
		if want := jsonLines(envelopeJSON("A", "e1", 1), envelopeJSON("A", "e1", 2)); run.out != want {
			t.Errorf("output:\n%s\nwant:\n%s", run.out, want)
		}
		if n := len(sc.requests()); n != 1 {
			t.Errorf("%d polls, want 1", n)
		}
		// The answer's cursor is past message 3, which was not taken: no
		// cursor resumes exactly here, the position does.
		if run.cursor != "" || run.positions["A"] != (Position{2, "e1"}) {
			t.Errorf("cursor %q positions %v, want none and A e1:2", run.cursor, run.positions)
		}
	})
	t.Run("at the end", func(t *testing.T) {
		srv, _ := newPollServer(t, pollOK("c2", "s1", envelopeJSON("A", "e1", 1), envelopeJSON("A", "e1", 2)))
		run := runSub(t, srv.URL, pollOpts("A"), 2)
		if run.err != nil {
			t.Fatalf("subscribe: %v", run.err)
		}
		if run.cursor != "c2" {
			t.Errorf("cursor %q, want the answer's c2", run.cursor)
		}
	})
}

// ---- pieces ----

func TestPollHTTPTimeout(t *testing.T) {
	c, err := New("http://127.0.0.1:1", Options{})
	if err != nil {
		t.Fatal(err)
	}
	opts := pollOpts("A")
	opts.PollTimeout = 10 * time.Second
	opts = opts.withDefaults()
	s := &Subscription{c: c, opts: opts, t: newTracker(opts)}
	if got := newPoller(s).client.Timeout; got != 25*time.Second {
		t.Errorf("HTTP client timeout for a 10s poll = %s, want 25s", got)
	}
}

func TestTrackerPositionLists(t *testing.T) {
	tr := newTracker(SubscribeOptions{Channels: []string{"A", "B"}, Positions: map[string]Position{"A": {Offset: 4}}})
	if since, epochs := tr.positionLists(); join(since) != "4," || epochs != nil {
		t.Errorf("since %q epochs %v, want \"4,\" and none", since, epochs)
	}
	tr.message([]byte(envelopeJSON("A", "e1", 5)), false)
	tr.message([]byte(envelopeJSON("B", "e2", 9)), false)
	if since, epochs := tr.positionLists(); join(since) != "5,9" || join(epochs) != "e1,e2" {
		t.Errorf("since %q epochs %q, want 5,9 and e1,e2", since, epochs)
	}
	if since, epochs := newTracker(SubscribeOptions{Channels: []string{"A"}}).positionLists(); since != nil || epochs != nil {
		t.Errorf("no position: since %v epochs %v, want none", since, epochs)
	}
}
