package e2e

// Clear errors on the binary's HTTP surface: every refusal is
// {"error":{"code","message"}} with its status, whatever route or method
// was asked, and its message says what was wrong in words a user reads.

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// errorAnswer is the body of every error answer.
type errorAnswer struct {
	Error struct {
		Code       int    `json:"code"`
		Message    string `json:"message"`
		Channel    string `json:"channel"`
		RetryAfter int    `json:"retry_after"`
	} `json:"error"`
}

// request sends one request with the given headers and returns the
// answer with its body read.
func request(t testing.TB, method, rawURL string, header http.Header, body string) (*http.Response, []byte) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, rawURL, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range header {
		req.Header[k] = v
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, rawURL, err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: reading the body: %v", method, rawURL, err)
	}
	return resp, raw
}

// checkError checks that an answer is exactly the JSON error of status
// code with message msg.
func checkError(t testing.TB, what string, resp *http.Response, raw []byte, code int, msg string) errorAnswer {
	t.Helper()
	var e errorAnswer
	if resp.StatusCode != code || json.Unmarshal(raw, &e) != nil || e.Error.Code != code || e.Error.Message != msg {
		t.Fatalf("%s: %d %s, want %d {\"error\":{\"code\":%d,\"message\":%q}}", what, resp.StatusCode, raw, code, code, msg)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("%s: Content-Type %q, want application/json", what, ct)
	}
	return e
}

// TestUnknownRoutesAndMethodsAnswerJSONErrors: a mistyped path is a JSON
// 404 naming it, a wrong method a JSON 405 naming the right ones with
// Allow, and CORS preflights still work.
func TestUnknownRoutesAndMethodsAnswerJSONErrors(t *testing.T) {
	const origin = "https://app.example.com"
	srv := startServer(t, "--allowed-origins", origin)
	key := http.Header{"Authorization": {"Bearer " + apiKey}}
	for _, tc := range []struct {
		method, path string
		code         int
		msg, allow   string
	}{
		{"GET", "/api/publsh", 404, "no route for GET /api/publsh", ""},
		{"POST", "/api/history", 405, "POST /api/history is not allowed; use GET", "GET, OPTIONS"},
		{"POST", "/sse", 405, "POST /sse is not allowed; use GET", "GET, OPTIONS"},
		{"PUT", "/poll", 405, "PUT /poll is not allowed; use GET or POST", "GET, OPTIONS, POST"},
		{"DELETE", "/ws", 405, "DELETE /ws is not allowed; use GET", "GET, OPTIONS"},
		// The path is quoted as the client sent it, with a literal <.
		{"GET", "/api/%3Cscript%3E", 404, "no route for GET /api/<script>", ""},
	} {
		what := tc.method + " " + tc.path
		resp, raw := request(t, tc.method, srv.url()+tc.path, key, "")
		checkError(t, what, resp, raw, tc.code, tc.msg)
		if got := resp.Header.Get("Allow"); got != tc.allow {
			t.Errorf("%s: Allow %q, want %q", what, got, tc.allow)
		}
		if strings.Contains(string(raw), `\u003c`) {
			t.Errorf("%s: body %s escapes <", what, raw)
		}
	}

	resp, raw := request(t, http.MethodOptions, srv.url()+"/api/publish",
		http.Header{"Origin": {origin}, "Access-Control-Request-Method": {"POST"}, "Access-Control-Request-Headers": {"authorization"}}, "")
	if resp.StatusCode != http.StatusNoContent || resp.Header.Get("Access-Control-Allow-Origin") != origin ||
		!strings.Contains(resp.Header.Get("Access-Control-Allow-Methods"), "POST") {
		t.Fatalf("preflight: %d %v %s", resp.StatusCode, resp.Header, raw)
	}
}

// TestFullChannelSaysWhenToRetryOnEveryTransport: a subscription past a
// rule's max_subscribers is a 429 with Retry-After and retry_after on SSE
// and long polling, and an error reply with retry_after on WebSocket.
func TestFullChannelSaysWhenToRetryOnEveryTransport(t *testing.T) {
	srv := startServer(t, "--config", writeConfig(t, `channels:
  - pattern: "capped"
    subscribe: ["authenticated"]
    max_subscribers: 1
`))
	base := srv.url()
	if resp, raw := sseOpen(t, base, apiKey, false, "capped"); resp.StatusCode != 200 {
		t.Fatalf("first subscriber: %d %s", resp.StatusCode, raw)
	}
	waitSubscribers(t, base, "capped", 1)
	const msg = `channel "capped" has 1 subscribers, the limit is 1`

	check := func(what string, resp *http.Response, raw []byte) {
		t.Helper()
		e := checkError(t, what, resp, raw, http.StatusTooManyRequests, msg)
		if e.Error.RetryAfter != 5 || resp.Header.Get("Retry-After") != "5" || e.Error.Channel != "capped" {
			t.Errorf("%s: Retry-After %q, body %s; want 5 s in both, naming the channel", what, resp.Header.Get("Retry-After"), raw)
		}
	}
	resp, raw := sseOpen(t, base, apiKey, false, "capped")
	check("SSE", resp, raw)
	resp, raw = request(t, http.MethodGet, base+"/poll?channel=capped&timeout=0", http.Header{"Authorization": {"Bearer " + apiKey}}, "")
	check("poll", resp, raw)

	c, err := wsDriver{}.open(t, base, apiKey, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	r, err := c.(*wsConn).call(map[string]any{"op": "subscribe", "channel": "capped"})
	if err != nil {
		t.Fatal(err)
	}
	var reply struct {
		OK    bool `json:"ok"`
		Error struct {
			Code       int    `json:"code"`
			Message    string `json:"message"`
			RetryAfter int    `json:"retry_after"`
		} `json:"error"`
	}
	if json.Unmarshal(r.raw, &reply) != nil || reply.OK || reply.Error.Code != 429 || reply.Error.Message != msg || reply.Error.RetryAfter != 5 {
		t.Fatalf("WebSocket subscribe: reply %s, want a 429 with retry_after 5", r.raw)
	}
}

// TestSignalsSayWhenPresenceIsOffAndClearingIsAlwaysAccepted: a signal on
// a channel without presence says so, as GET /api/presence does; past the
// signal rate a set is a 429, but a clear is always accepted.
func TestSignalsSayWhenPresenceIsOffAndClearingIsAlwaysAccepted(t *testing.T) {
	srv := startServer(t, "--config", writeConfig(t, `channels:
  - pattern: "room_{id}"
    subscribe: ["authenticated"]
    presence: true
  - pattern: "quiet_{id}"
    subscribe: ["authenticated"]
presence:
  signal_rate: 0.1
  signal_burst: 5
`))
	base := srv.url()
	tok, err := permMint("--sub", "17", "--ttl", "1h")
	if err != nil {
		t.Fatal(err)
	}
	for _, ch := range []string{"room_1", "quiet_1"} {
		if resp, raw := sseOpen(t, base, tok, false, ch); resp.StatusCode != 200 {
			t.Fatalf("subscribe %s: %d %s", ch, resp.StatusCode, raw)
		}
	}
	waitSubscribers(t, base, "room_1", 1)
	waitSubscribers(t, base, "quiet_1", 1)
	user := http.Header{"Authorization": {"Bearer " + tok}}
	signal := func(body string) (*http.Response, []byte) {
		return request(t, http.MethodPost, base+"/api/signal", user, body)
	}

	const off = `presence is not enabled on channel "quiet_1" (its rule needs presence: true)`
	resp, raw := signal(`{"channel":"quiet_1","state":{"typing":true}}`)
	checkError(t, "signal on quiet_1", resp, raw, http.StatusBadRequest, off)
	resp, raw = request(t, http.MethodGet, base+"/api/presence?channel=quiet_1", user, "")
	checkError(t, "presence of quiet_1", resp, raw, http.StatusBadRequest, off)

	// The burst of 5 sets is spent (a token comes back every 10 s); the
	// next set is refused.
	limited := false
	for i := 0; i < 10 && !limited; i++ {
		resp, raw = signal(`{"channel":"room_1","state":{"typing":true}}`)
		switch resp.StatusCode {
		case http.StatusOK:
		case http.StatusTooManyRequests:
			limited = true
		default:
			t.Fatalf("set #%d: %d %s", i+1, resp.StatusCode, raw)
		}
	}
	if !limited {
		t.Fatal("10 sets in a row were never limited")
	}
	for i, body := range []string{`{"channel":"room_1","state":null}`, `{"channel":"room_1"}`, `{"channel":"room_1","state":null}`} {
		if resp, raw := signal(body); resp.StatusCode != http.StatusOK {
			t.Fatalf("clear #%d %s past the limit: %d %s", i+1, body, resp.StatusCode, raw)
		}
	}
}

// TestDenialsNameTheActionInWords: a denied history read says what was
// denied in a sentence.
func TestDenialsNameTheActionInWords(t *testing.T) {
	srv := startServer(t, "--config", writeConfig(t, seedRulesYAML))
	tok, err := permMint("--sub", "18", "--ttl", "1h")
	if err != nil {
		t.Fatal(err)
	}
	resp, raw := request(t, http.MethodGet, srv.url()+"/api/history?channel=user_17_notifications",
		http.Header{"Authorization": {"Bearer " + tok}}, "")
	checkError(t, "history of another user's channel", resp, raw, http.StatusForbidden,
		`not allowed to read the history of channel "user_17_notifications"`)
	resp, raw = request(t, http.MethodGet, srv.url()+"/sse?channel=user_17_notifications", nil, "")
	checkError(t, "anonymous subscribe", resp, raw, http.StatusUnauthorized,
		`credentials are required to subscribe to channel "user_17_notifications"`)
}

// TestSinceZeroReadsFromTheOldestKept: on a channel whose rule keeps 5
// messages, since=0 reads from the oldest kept one without a reset — on
// GET /api/history, SSE, long polling and a WebSocket subscribe — while
// since=1, older than what is kept, gets the reset.
func TestSinceZeroReadsFromTheOldestKept(t *testing.T) {
	srv := startServer(t, "--config", writeConfig(t, `history:
  trim_interval: 50ms
channels:
  - pattern: "ticker_{id}"
    subscribe: ["authenticated"]
    history: {size: 5}
`))
	base := srv.url()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for i := 1; i <= 12; i++ {
		if _, _, err := publish(ctx, base, "ticker_1", fmt.Sprint(i), ""); err != nil {
			t.Fatal(err)
		}
	}
	key := http.Header{"Authorization": {"Bearer " + apiKey}}
	historyPage := func(since int) (historyPage, []envelope) {
		resp, raw := request(t, http.MethodGet, fmt.Sprintf("%s/api/history?channel=ticker_1&since=%d", base, since), key, "")
		var page historyPage
		if resp.StatusCode != 200 || json.Unmarshal(raw, &page) != nil {
			t.Fatalf("history since %d: %d %s", since, resp.StatusCode, raw)
		}
		var envs []envelope
		for _, m := range page.Messages {
			var e envelope
			if err := json.Unmarshal(m, &e); err != nil {
				t.Fatal(err)
			}
			envs = append(envs, e)
		}
		return page, envs
	}
	// Trimming runs in the background.
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if _, envs := historyPage(0); len(envs) == 5 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("history never trimmed to 5")
		}
	}
	if page, envs := historyPage(0); page.Reset || envs[0].Offset != 8 {
		t.Fatalf("history since=0: reset %v, first offset %d; want no reset, from 8", page.Reset, envs[0].Offset)
	}
	if page, envs := historyPage(1); !page.Reset || envs[0].Offset != 8 {
		t.Fatalf("history since=1: reset %v, first offset %d; want a reset, then 8", page.Reset, envs[0].Offset)
	}

	for _, tc := range []struct {
		since string
		first string // the first event after herald.connected
	}{{"0", "message"}, {"1", "herald.reset"}} {
		events, _ := openSSE(t, ctx, base+"/sse?channel=ticker_1&since="+tc.since, nil)
		if ev := nextEvent(t, events); ev.name != "herald.connected" {
			t.Fatalf("SSE since=%s: first event %+v", tc.since, ev)
		}
		ev := nextEvent(t, events)
		var e envelope
		if ev.name != tc.first || (tc.first == "message" && (json.Unmarshal([]byte(ev.data), &e) != nil || e.Offset != 8)) {
			t.Fatalf("SSE since=%s: event %+v, want %s first (offset 8 for a message)", tc.since, ev, tc.first)
		}
	}

	resp, raw := request(t, http.MethodGet, base+"/poll?channel=ticker_1&since=0&timeout=0", key, "")
	var ans pollAnswer
	if resp.StatusCode != 200 || json.Unmarshal(raw, &ans) != nil || len(ans.Messages) != 5 {
		t.Fatalf("poll since=0: %d %s, want the 5 kept messages", resp.StatusCode, raw)
	}
	var first envelope
	if json.Unmarshal(ans.Messages[0], &first) != nil || first.Event == "herald.reset" || first.Offset != 8 {
		t.Fatalf("poll since=0: first message %s, want offset 8 and no reset", ans.Messages[0])
	}

	ws, _, err := websocket.DefaultDialer.Dial("ws"+strings.TrimPrefix(base, "http")+"/ws", key)
	if err != nil {
		t.Fatal(err)
	}
	defer ws.Close()
	if err := ws.WriteJSON(map[string]any{"id": 1, "op": "subscribe", "channel": "ticker_1", "since": 0}); err != nil {
		t.Fatal(err)
	}
	_ = ws.SetReadDeadline(time.Now().Add(20 * time.Second))
	for {
		var f struct {
			ID       *int              `json:"id"`
			Type     string            `json:"type"`
			Message  json.RawMessage   `json:"message"`
			Messages []json.RawMessage `json:"messages"`
		}
		if err := ws.ReadJSON(&f); err != nil {
			t.Fatal(err)
		}
		if f.ID != nil || f.Type == "connected" {
			continue
		}
		if f.Type == "batch" {
			f.Message = f.Messages[0]
		}
		var e envelope
		if (f.Type != "message" && f.Type != "batch") || json.Unmarshal(f.Message, &e) != nil || e.Offset != 8 {
			t.Fatalf("WebSocket subscribe since 0: first push %s %s, want message 8 and no reset", f.Type, f.Message)
		}
		break
	}
}
