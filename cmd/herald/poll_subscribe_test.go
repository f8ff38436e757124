package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
)

// ---- a scripted /poll server ----

// pollRequest is what the test server saw of one poll.
type pollRequest struct {
	method      string
	contentType string
	auth        string
	channels    []string
	cursor      string
	session     string
	timeout     string
	since       []string
	epoch       []string
}

// pollScript answers the i-th poll with answers[i]; polls past the script
// are held until the client goes.
type pollScript struct {
	t       *testing.T
	answers []http.HandlerFunc

	mu   sync.Mutex
	reqs []pollRequest
}

func newPollServer(t *testing.T, answers ...http.HandlerFunc) (*httptest.Server, *pollScript) {
	t.Helper()
	sc := &pollScript{t: t, answers: answers}
	srv := httptest.NewServer(sc)
	t.Cleanup(srv.Close)
	return srv, sc
}

func (sc *pollScript) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path != "/poll" {
		sc.t.Errorf("request %s %s, want /poll", r.Method, r.URL.Path)
		http.NotFound(w, r)
		return
	}
	req := pollRequest{method: r.Method, contentType: r.Header.Get("Content-Type"), auth: r.Header.Get("Authorization")}
	switch r.Method {
	case http.MethodGet:
		q := r.URL.Query()
		req.channels, req.cursor, req.session, req.timeout = q["channel"], q.Get("cursor"), q.Get("session"), q.Get("timeout")
		req.since, req.epoch = q["since"], q["epoch"]
	case http.MethodPost:
		var b struct {
			Channels []string `json:"channels"`
			Cursor   string   `json:"cursor"`
			Session  string   `json:"session"`
			Timeout  *int     `json:"timeout"`
			Since    []string `json:"since"`
			Epoch    []string `json:"epoch"`
		}
		dec := json.NewDecoder(r.Body)
		dec.DisallowUnknownFields() // as the server does
		if err := dec.Decode(&b); err != nil {
			sc.t.Errorf("POST /poll body: %v", err)
		}
		req.channels, req.cursor, req.session, req.since, req.epoch = b.Channels, b.Cursor, b.Session, b.Since, b.Epoch
		if b.Timeout != nil {
			req.timeout = fmt.Sprint(*b.Timeout)
		}
	default:
		sc.t.Errorf("request %s /poll, want GET or POST", r.Method)
	}
	sc.mu.Lock()
	i := len(sc.reqs)
	sc.reqs = append(sc.reqs, req)
	sc.mu.Unlock()
	if i < len(sc.answers) {
		sc.answers[i](w, r)
		return
	}
	<-r.Context().Done()
}

func (sc *pollScript) requests() []pollRequest {
	sc.mu.Lock()
	defer sc.mu.Unlock()
	return append([]pollRequest(nil), sc.reqs...)
}

// pollOK answers a poll with envelopes, a cursor and a session, as the
// server does.
func pollOK(cursor, session string, envelopes ...string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Cache-Control", "no-store")
		fmt.Fprintf(w, `{"messages":[%s],"cursor":%q,"session":%q}`+"\n", strings.Join(envelopes, ","), cursor, session)
	}
}

// abortPoll cuts the connection without an answer.
func abortPoll(t *testing.T) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) { abortConn(t, w) }
}

func resetEnvelope(channel, epoch, reason string, resumeAfter, head int) string {
	return fmt.Sprintf(`{"channel":%q,"offset":0,"epoch":%q,"event":"herald.reset","data":{"reason":%q,"epoch":%q,"resume_after":%d,"head":%d},"time":"2026-11-26T16:52:20.123Z"}`,
		channel, epoch, reason, epoch, resumeAfter, head)
}

func runPollSub(t *testing.T, url string, args ...string) (string, string, error) {
	t.Helper()
	return runSub(t, url, append([]string{"--transport", "poll"}, args...)...)
}

func join(l []string) string { return strings.Join(l, ",") }

// ---- (a) cursor and session carried from answer to answer ----

func TestPollSubscribeCarriesCursorAndSession(t *testing.T) {
	srv, sc := newPollServer(t,
		pollOK("c1", "s1", envelopeJSON("A", "e1", 1), envelopeJSON("B", "e2", 6)),
		pollOK("c2", "s1"), // the wait ran out: nothing new
		pollOK("c3", "s1", envelopeJSON("A", "e1", 2)),
	)
	out, stderr, err := runPollSub(t, srv.URL, "--channel", "A", "--channel", "B", "--max", "3")
	if err != nil {
		t.Fatalf("subscribe: %v\nstderr: %s", err, stderr)
	}
	want := jsonLines(envelopeJSON("A", "e1", 1), envelopeJSON("B", "e2", 6), envelopeJSON("A", "e1", 2))
	if out != want {
		t.Errorf("output:\n%s\nwant:\n%s", out, want)
	}
	reqs := sc.requests()
	if len(reqs) != 3 {
		t.Fatalf("%d polls, want 3", len(reqs))
	}
	wantCS := [][2]string{{"", ""}, {"c1", "s1"}, {"c2", "s1"}}
	for i, r := range reqs {
		if got := [2]string{r.cursor, r.session}; got != wantCS[i] {
			t.Errorf("poll %d cursor, session = %q, want %q", i, got, wantCS[i])
		}
		if r.method != http.MethodGet || join(r.channels) != "A,B" || r.timeout != "25" || r.auth != "Bearer tok" {
			t.Errorf("poll %d: %s channels %v timeout %q auth %q; want GET [A B] 25 \"Bearer tok\"", i, r.method, r.channels, r.timeout, r.auth)
		}
		if r.since != nil || r.epoch != nil {
			t.Errorf("poll %d sent since %v epoch %v, want none", i, r.since, r.epoch)
		}
	}
}

func TestPollSubscribePostsManyChannels(t *testing.T) {
	var args []string
	var chans []string
	for i := 1; i <= pollGETMaxChannels+1; i++ {
		ch := fmt.Sprintf("room_%02d", i)
		chans = append(chans, ch)
		args = append(args, "--channel", ch)
	}
	srv, sc := newPollServer(t,
		pollOK("c1", "s1", envelopeJSON("room_05", "e1", 1)),
		pollOK("c2", "s1", envelopeJSON("room_21", "e1", 9)),
	)
	out, stderr, err := runPollSub(t, srv.URL, append(args, "--max", "2", "--poll-timeout", "7")...)
	if err != nil {
		t.Fatalf("subscribe: %v\nstderr: %s", err, stderr)
	}
	if want := jsonLines(envelopeJSON("room_05", "e1", 1), envelopeJSON("room_21", "e1", 9)); out != want {
		t.Errorf("output:\n%s\nwant:\n%s", out, want)
	}
	reqs := sc.requests()
	if len(reqs) != 2 {
		t.Fatalf("%d polls, want 2", len(reqs))
	}
	for i, r := range reqs {
		if r.method != http.MethodPost || r.contentType != "application/json" || join(r.channels) != join(chans) || r.timeout != "7" {
			t.Errorf("poll %d: %s %q channels %v timeout %q; want POST application/json, all 21 channels, 7", i, r.method, r.contentType, r.channels, r.timeout)
		}
	}
	if reqs[1].cursor != "c1" || reqs[1].session != "s1" {
		t.Errorf("second poll cursor %q session %q, want c1 s1", reqs[1].cursor, reqs[1].session)
	}
}

func TestPollSubscribeSeeds(t *testing.T) {
	t.Run("cursor", func(t *testing.T) {
		srv, sc := newPollServer(t,
			// The cursor is opaque: the first message of a channel sets
			// its position, whatever its offset.
			pollOK("c42", "s1", envelopeJSON("A", "e1", 42)),
			pollOK("c43", "s1", envelopeJSON("A", "e1", 42), envelopeJSON("A", "e1", 43)),
		)
		out, stderr, err := runPollSub(t, srv.URL, "--channel", "A", "--cursor", "c41", "--max", "2")
		if err != nil {
			t.Fatalf("subscribe: %v\nstderr: %s", err, stderr)
		}
		if want := jsonLines(envelopeJSON("A", "e1", 42), envelopeJSON("A", "e1", 43)); out != want {
			t.Errorf("output:\n%s\nwant:\n%s", out, want)
		}
		reqs := sc.requests()
		if reqs[0].cursor != "c41" || reqs[0].session != "" || reqs[0].since != nil {
			t.Errorf("first poll cursor %q session %q since %v, want c41, none, none", reqs[0].cursor, reqs[0].session, reqs[0].since)
		}
		if reqs[1].cursor != "c42" {
			t.Errorf("second poll cursor %q, want c42", reqs[1].cursor)
		}
	})
	t.Run("since and epoch", func(t *testing.T) {
		srv, sc := newPollServer(t,
			pollOK("c42", "s1", envelopeJSON("A", "e1", 42)),
			pollOK("c43", "s1", envelopeJSON("A", "e1", 43)),
		)
		out, stderr, err := runPollSub(t, srv.URL, "--channel", "A", "--channel", "B", "--since", "41", "--since", "", "--epoch", "e1", "--epoch", "", "--max", "2")
		if err != nil {
			t.Fatalf("subscribe: %v\nstderr: %s", err, stderr)
		}
		if want := jsonLines(envelopeJSON("A", "e1", 42), envelopeJSON("A", "e1", 43)); out != want {
			t.Errorf("output:\n%s\nwant:\n%s", out, want)
		}
		reqs := sc.requests()
		if join(reqs[0].since) != "41," || join(reqs[0].epoch) != "e1," || reqs[0].cursor != "" {
			t.Errorf("first poll since %q epoch %q cursor %q, want \"41,\" \"e1,\" none", join(reqs[0].since), join(reqs[0].epoch), reqs[0].cursor)
		}
		if reqs[1].since != nil || reqs[1].cursor != "c42" {
			t.Errorf("second poll since %v cursor %q, want none, c42", reqs[1].since, reqs[1].cursor)
		}
	})
}

// ---- (b) retried answers ----

func TestPollSubscribeRetries(t *testing.T) {
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
	out, stderr, err := runPollSub(t, srv.URL, "--channel", "A", "--cursor", "c0", "--max", "1")
	if err != nil {
		t.Fatalf("subscribe: %v\nstderr: %s", err, stderr)
	}
	if want := jsonLines(envelopeJSON("A", "e1", 1)); out != want {
		t.Errorf("output %q, want %q", out, want)
	}
	reqs := sc.requests()
	if len(reqs) != 9 {
		t.Fatalf("%d polls, want 9", len(reqs))
	}
	for i, r := range reqs {
		if r.cursor != "c0" {
			t.Errorf("poll %d cursor %q, want c0 (nothing was taken yet)", i, r.cursor)
		}
	}
	for _, s := range []string{
		"503 Service Unavailable: server shutting down",
		"429 Too Many Requests: too many requests",
		`502 Bad Gateway: not a Herald JSON error (Content-Type "text/html", a proxy's page?): <html><body><h1>502 Bad Gateway</h1></body></html>`,
		`the poll answer is not Herald JSON (not JSON; Content-Type "text/html": "<html>please log in to the hotel wifi</html>")`,
		`the poll answer is not Herald JSON (no "messages" or no "cursor"`,
		"EOF",
	} {
		if !strings.Contains(stderr, s) {
			t.Errorf("stderr lacks %q:\n%s", s, stderr)
		}
	}
}

func TestPollSubscribeRetriesAfterGoodPolls(t *testing.T) {
	srv, sc := newPollServer(t,
		pollOK("c1", "s1", envelopeJSON("A", "e1", 1)),
		jsonError(503, "server shutting down"),
		abortPoll(t),
		pollOK("c2", "s1", envelopeJSON("A", "e1", 2)),
	)
	out, stderr, err := runPollSub(t, srv.URL, "--channel", "A", "--max", "2")
	if err != nil {
		t.Fatalf("subscribe: %v\nstderr: %s", err, stderr)
	}
	if want := jsonLines(envelopeJSON("A", "e1", 1), envelopeJSON("A", "e1", 2)); out != want {
		t.Errorf("output:\n%s\nwant:\n%s", out, want)
	}
	for i, r := range sc.requests()[1:] {
		if r.cursor != "c1" || r.session != "s1" {
			t.Errorf("retry %d cursor %q session %q, want c1 s1", i+1, r.cursor, r.session)
		}
	}
	// Without --verbose a failed poll after good ones is still logged.
	if !strings.Contains(stderr, "poll failed: server answered 503 Service Unavailable: server shutting down") {
		t.Errorf("stderr does not log the failed poll:\n%s", stderr)
	}
}

func TestPollAttemptHonoursRetryAfter(t *testing.T) {
	srv, _ := newPollServer(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Retry-After", "7")
		jsonError(429, "slow down")(w, r)
	})
	opts, err := parseSubscribeFlags([]string{"--server", srv.URL, "--channel", "A", "--transport", "poll"}, func(string) string { return "" }, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	s := &subscriber{opts: opts, t: newTracker(opts), stdout: io.Discard, stderr: io.Discard}
	r := newPoller(s).attempt(context.Background())
	if r.fatal || r.retryAfter != 7*time.Second || r.connected {
		t.Errorf("attempt = %+v, want retryable, retryAfter 7s, not connected", r)
	}
}

// ---- (c) refusals stop the command ----

func TestPollSubscribeStopsOnRefusal(t *testing.T) {
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
			_, _, err := runPollSub(t, srv.URL, "--channel", "A")
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("err = %v, want one containing %q", err, tc.wantErr)
			}
			if n := len(sc.requests()); n != len(tc.answers) {
				t.Errorf("%d polls, want %d (no retry)", n, len(tc.answers))
			}
		})
	}
}

// ---- (d) a reset among the messages ----

func TestPollSubscribeReset(t *testing.T) {
	ephemeral := `{"channel":"A","event":"typing","data":{"who":"ana"},"time":"2026-11-26T16:52:20.123Z"}`
	srv, _ := newPollServer(t,
		pollOK("c1", "s1", envelopeJSON("A", "e1", 1)),
		pollOK("c2", "s1", resetEnvelope("A", "e2", "epoch_changed", 0, 1), envelopeJSON("A", "e2", 1), ephemeral),
	)
	out, stderr, err := runPollSub(t, srv.URL, "--channel", "A", "--max", "4")
	if err != nil {
		t.Fatalf("subscribe: %v\nstderr: %s", err, stderr)
	}
	want := jsonLines(envelopeJSON("A", "e1", 1), resetEnvelope("A", "e2", "epoch_changed", 0, 1), envelopeJSON("A", "e2", 1), ephemeral)
	if out != want {
		t.Errorf("output:\n%s\nwant:\n%s", out, want)
	}
}

// ---- (e) replays are dropped; a gap resumes from the previous cursor ----

func TestPollSubscribeDropsReplays(t *testing.T) {
	srv, _ := newPollServer(t,
		pollOK("c2", "s1", envelopeJSON("A", "e1", 1), envelopeJSON("A", "e1", 2)),
		pollOK("c3", "s1", envelopeJSON("A", "e1", 2), envelopeJSON("A", "e1", 3)),
	)
	out, stderr, err := runPollSub(t, srv.URL, "--channel", "A", "--max", "3", "-v")
	if err != nil {
		t.Fatalf("subscribe: %v\nstderr: %s", err, stderr)
	}
	if want := jsonLines(envelopeJSON("A", "e1", 1), envelopeJSON("A", "e1", 2), envelopeJSON("A", "e1", 3)); out != want {
		t.Errorf("output:\n%s\nwant:\n%s", out, want)
	}
	if !strings.Contains(stderr, "dropped a replayed message e1:2 on A") {
		t.Errorf("stderr does not log the dropped replay:\n%s", stderr)
	}
}

func TestPollSubscribeGapResumesFromPreviousCursor(t *testing.T) {
	srv, sc := newPollServer(t,
		pollOK("c1", "s1", envelopeJSON("A", "e1", 1)),
		pollOK("c4", "s1", envelopeJSON("A", "e1", 2), envelopeJSON("A", "e1", 4)), // 3 is missing
		pollOK("c4", "s1", envelopeJSON("A", "e1", 2), envelopeJSON("A", "e1", 3), envelopeJSON("A", "e1", 4)),
	)
	out, stderr, err := runPollSub(t, srv.URL, "--channel", "A", "--max", "4")
	if err != nil {
		t.Fatalf("subscribe: %v\nstderr: %s", err, stderr)
	}
	want := jsonLines(envelopeJSON("A", "e1", 1), envelopeJSON("A", "e1", 2), envelopeJSON("A", "e1", 3), envelopeJSON("A", "e1", 4))
	if out != want {
		t.Errorf("output:\n%s\nwant:\n%s", out, want)
	}
	reqs := sc.requests()
	if len(reqs) != 3 {
		t.Fatalf("%d polls, want 3", len(reqs))
	}
	if reqs[2].cursor != "c1" || reqs[2].session != "s1" {
		t.Errorf("poll after the gap: cursor %q session %q, want c1 s1 (the answer with the gap is not taken)", reqs[2].cursor, reqs[2].session)
	}
	if !strings.Contains(stderr, "gap, expected offset 3, got 4") {
		t.Errorf("stderr does not log the gap:\n%s", stderr)
	}
}

// ---- (f) --max, --timeout ----

func TestPollSubscribeMax(t *testing.T) {
	t.Run("inside an answer", func(t *testing.T) {
		srv, sc := newPollServer(t, pollOK("c3", "s1", envelopeJSON("A", "e1", 1), envelopeJSON("A", "e1", 2), envelopeJSON("A", "e1", 3)))
		out, stderr, err := runPollSub(t, srv.URL, "--channel", "A", "--max", "2", "-v")
		if err != nil {
			t.Fatalf("subscribe: %v", err)
		}
		if want := jsonLines(envelopeJSON("A", "e1", 1), envelopeJSON("A", "e1", 2)); out != want {
			t.Errorf("output:\n%s\nwant:\n%s", out, want)
		}
		if n := len(sc.requests()); n != 1 {
			t.Errorf("%d polls, want 1", n)
		}
		// The answer's cursor is past message 3, which was not printed.
		if !strings.Contains(stderr, `resume with --since "2" --epoch "e1"`) {
			t.Errorf("stderr does not give the exact resume position:\n%s", stderr)
		}
	})
	t.Run("at the end of an answer", func(t *testing.T) {
		srv, _ := newPollServer(t, pollOK("c2", "s1", envelopeJSON("A", "e1", 1), envelopeJSON("A", "e1", 2)))
		out, stderr, err := runPollSub(t, srv.URL, "--channel", "A", "--max", "2", "-v")
		if err != nil {
			t.Fatalf("subscribe: %v", err)
		}
		if want := jsonLines(envelopeJSON("A", "e1", 1), envelopeJSON("A", "e1", 2)); out != want {
			t.Errorf("output:\n%s\nwant:\n%s", out, want)
		}
		if !strings.Contains(stderr, "resume with --cursor c2") {
			t.Errorf("stderr does not give the answer's cursor:\n%s", stderr)
		}
	})
}

func TestPollSubscribeTimeout(t *testing.T) {
	srv, sc := newPollServer(t, pollOK("c1", "s1", envelopeJSON("A", "e1", 1)))
	// The second poll is held by the server until the client gives up.
	out, _, err := runPollSub(t, srv.URL, "--channel", "A", "--timeout", "2s")
	var idle *idleTimeout
	if !errors.As(err, &idle) {
		t.Fatalf("err = %v, want the --timeout error", err)
	}
	if want := jsonLines(envelopeJSON("A", "e1", 1)); out != want {
		t.Errorf("output %q, want %q", out, want)
	}
	if reqs := sc.requests(); len(reqs) != 2 || reqs[1].cursor != "c1" {
		t.Errorf("polls %+v, want 2, the second with cursor c1", reqs)
	}
}

// ---- flags and pieces ----

func TestPollSubscribeFlags(t *testing.T) {
	cases := []struct {
		args    []string
		wantErr string
	}{
		{[]string{"--channel", "A", "--transport", "poll"}, ""},
		{[]string{"--channel", "A", "--transport", "poll", "--cursor", "x"}, ""},
		{[]string{"--channel", "A", "--transport", "poll", "--since", "3", "--epoch", "e1"}, ""},
		{[]string{"--channel", "A", "--transport", "poll", "--stall-timeout", "1s"}, ""}, // accepted, unused
		{[]string{"--channel", "A", "--transport", "poll", "--poll-timeout", "0"}, "--poll-timeout 0: want 1 second or more"},
		{[]string{"--channel", "A", "--transport", "poll", "--poll-timeout", "2s"}, "invalid value"},
	}
	for _, tc := range cases {
		opts, err := parseSubscribeFlags(tc.args, func(string) string { return "" }, io.Discard)
		switch {
		case tc.wantErr == "" && err != nil:
			t.Errorf("%q: %v", tc.args, err)
		case tc.wantErr == "" && (opts.via != "poll" || opts.pollWait != defaultPollWait):
			t.Errorf("%q: via %q pollWait %d, want poll %d", tc.args, opts.via, opts.pollWait, defaultPollWait)
		case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
			t.Errorf("%q: err = %v, want %q", tc.args, err, tc.wantErr)
		}
	}
	opts, err := parseSubscribeFlags([]string{"--channel", "A", "--transport", "poll", "--poll-timeout", "10"}, func(string) string { return "" }, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	s := &subscriber{opts: opts, t: newTracker(opts)}
	if got := newPoller(s).client.Timeout; got != 25*time.Second {
		t.Errorf("HTTP client timeout for --poll-timeout 10 = %s, want 25s", got)
	}
	var help bytes.Buffer
	_, _ = parseSubscribeFlags([]string{"-h"}, func(string) string { return "" }, &help)
	for _, s := range []string{"poll (long polling", "-poll-timeout", "sse and ws only"} {
		if !strings.Contains(help.String(), s) {
			t.Errorf("help lacks %q:\n%s", s, help.String())
		}
	}
}

func TestTrackerPollPositions(t *testing.T) {
	opts := subscribeOptions{channels: []string{"A", "B"}, since: []string{"4", ""}}
	tr := newTracker(opts)
	if since, epochs := tr.pollPositions(); join(since) != "4," || epochs != nil {
		t.Errorf("since %q epochs %v, want \"4,\" and none", since, epochs)
	}
	tr.message([]byte(envelopeJSON("A", "e1", 5)), false)
	tr.message([]byte(envelopeJSON("B", "e2", 9)), false)
	if since, epochs := tr.pollPositions(); join(since) != "5,9" || join(epochs) != "e1,e2" {
		t.Errorf("since %q epochs %q, want 5,9 and e1,e2", since, epochs)
	}
	if since, epochs := newTracker(subscribeOptions{channels: []string{"A"}}).pollPositions(); since != nil || epochs != nil {
		t.Errorf("no position: since %v epochs %v, want none", since, epochs)
	}
}
