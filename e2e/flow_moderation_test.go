package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/heraldrt/herald/protocol"
)

// --- 6. moderation ---

// checkRefusedAsBanned opens SSE, a long poll, a WebSocket and a publish as
// tok and checks each is refused naming the ban. It returns how the
// WebSocket refusal looked, for the log.
func checkRefusedAsBanned(t *testing.T, base, tok, user, channel string) string {
	t.Helper()
	names := func(msg string) bool {
		return strings.Contains(msg, "banned") && strings.Contains(msg, fmt.Sprintf("%q", user))
	}
	s := dialSSE(t, base, "channel="+channel, tok, "", 0)
	if e := errorOf(t, s.body); s.status != 403 || e.Code != 403 || !names(e.Message) {
		t.Errorf("banned %s: GET /sse: %d %s, want 403 naming the ban", user, s.status, s.body)
	}
	code, _, raw := flowPoll(t, base, tok, url.Values{"channel": {channel}, "timeout": {"0"}})
	if e := errorOf(t, raw); code != 403 || e.Code != 403 || !names(e.Message) {
		t.Errorf("banned %s: GET /poll: %d %s, want 403 naming the ban", user, code, raw)
	}
	code, raw = apiCall(t, http.MethodPost, base+"/api/publish", tok, map[string]any{"channel": channel, "data": 1}, nil)
	if e := errorOf(t, raw); code != 403 || !names(e.Message) {
		t.Errorf("banned %s: POST /api/publish: %d %s, want 403 naming the ban", user, code, raw)
	}
	ws, resp, raw, err := dialWSRaw(t, base, tok, 0)
	if err != nil {
		if resp == nil || resp.StatusCode != 403 || !names(string(raw)) {
			t.Errorf("banned %s: GET /ws: %v (%v %s), want a refusal naming the ban", user, err, resp, raw)
		}
		return fmt.Sprintf("%d %s", resp.StatusCode, raw)
	}
	// Upgraded: the refusal is a close frame (credentials are checked
	// after the upgrade, PROTOCOL.md "Identity").
	_ = ws.SetReadDeadline(time.Now().Add(20 * time.Second))
	_, frame, err := ws.ReadMessage()
	var ce *websocket.CloseError
	if !errors.As(err, &ce) || (ce.Code != protocol.CloseUnauthorized && ce.Code != protocol.ClosePolicy) || !names(ce.Text) {
		t.Errorf("banned %s: GET /ws upgraded, then %q / %v; want a close 4001 or 4008 naming the ban", user, frame, err)
		return fmt.Sprint(err)
	}
	return fmt.Sprintf("upgrade, then close %d %q", ce.Code, ce.Text)
}

// TestDisconnectAndBanOverEveryTransport: POST /api/disconnect ends every
// session of a user, on every transport, with the reason; POST /api/ban
// does too and refuses the user's new connections everywhere, across a
// SIGKILL and restart, until DELETE /api/ban. Another user is untouched.
func TestDisconnectAndBanOverEveryTransport(t *testing.T) {
	const room = "room"
	srv := startFlowServer(t, `channels:
  - pattern: "room"
    subscribe: ["authenticated"]
    publish: ["authenticated"]
`)
	base := srv.url()
	toks := permTokens(t, map[string][]string{"troll": {"--sub", "troll"}, "nice": {"--sub", "nice"}})
	nice := mustOpen(t, sseDriver{}, base, toks["nice"], []string{room}, nil)

	// The troll on every transport.
	sse, _, _ := openSSEStream(t, base, "channel="+room, toks["troll"], "", 0)
	ws := openWS(t, base, toks["troll"], 0)
	ws.subscribe(room, nil)
	code, first, raw := flowPoll(t, base, toks["troll"], url.Values{"channel": {room}, "timeout": {"0"}})
	if code != 200 {
		t.Fatalf("troll's first poll: %d %s", code, raw)
	}

	// Disconnect: all three end, told why; the poll session is closed.
	var dis struct {
		User           string `json:"user"`
		SessionsClosed int    `json:"sessions_closed"`
	}
	if code, raw := apiCall(t, http.MethodPost, base+"/api/disconnect", apiKey, map[string]any{"user": "troll"}, &dis); code != 200 || dis.User != "troll" || dis.SessionsClosed != 3 {
		t.Fatalf("POST /api/disconnect: %d %s, want the troll's 3 sessions closed", code, raw)
	}
	expectSSEDisconnect(t, sse, "troll's SSE stream", "disconnected", false)
	expectWSDisconnect(t, ws, "troll's WebSocket", protocol.ClosePolicy, protocol.ReasonDisconnected, false)
	// A disconnect is not a ban: the client may come back, and its next
	// poll continues its session (any reconnect does) on a new one.
	code, next, raw := flowPoll(t, base, toks["troll"], url.Values{"channel": {room}, "cursor": {first.Cursor}, "session": {first.Session}, "timeout": {"0"}})
	if code != 200 || next.Session != first.Session {
		t.Fatalf("troll's poll after the disconnect: %d %s; want it served, continuing session %s", code, raw, first.Session)
	}
	var status struct {
		Online   bool `json:"online"`
		Sessions int  `json:"sessions"`
	}
	if code, raw := apiCall(t, http.MethodGet, base+"/api/users/troll", apiKey, nil, &status); code != 200 || status.Sessions != 1 {
		t.Fatalf("GET /api/users/troll after the disconnect and one poll: %d %s, want 1 session", code, raw)
	}
	mustPublish(t, base, room, `{"i":1}`)
	expectMessage(t, nice, room, 1)

	// Ban: the open sessions end with reason banned, and every new
	// connection is refused naming the ban.
	sse, _, _ = openSSEStream(t, base, "channel="+room, toks["troll"], "", 0)
	ws = openWS(t, base, toks["troll"], 0)
	ws.subscribe(room, nil)
	var ban struct {
		User  string `json:"user"`
		Until string `json:"until"`
	}
	code, raw = apiCall(t, http.MethodPost, base+"/api/ban", apiKey, map[string]any{"user": "troll", "duration": "1h"}, &ban)
	until, err := time.Parse(time.RFC3339Nano, ban.Until)
	if code != 200 || ban.User != "troll" || err != nil || until.Before(time.Now().Add(59*time.Minute)) || until.After(time.Now().Add(61*time.Minute)) {
		t.Fatalf("POST /api/ban: %d %s, want the troll banned for an hour", code, raw)
	}
	expectSSEDisconnect(t, sse, "troll's SSE stream", "banned", false)
	expectWSDisconnect(t, ws, "troll's WebSocket", protocol.ClosePolicy, protocol.ReasonBanned, false)
	wsRefusal := checkRefusedAsBanned(t, base, toks["troll"], "troll", room)
	t.Logf("a banned user's WebSocket: %s", wsRefusal)
	mustPublish(t, base, room, `{"i":2}`)
	expectMessage(t, nice, room, 2)
	s := scrapeMetrics(t, base, "")
	for action, want := range map[string]float64{"disconnect": 1, "ban": 1} {
		if got := metricSum(s, "herald_moderation_total", map[string]string{"action": action}); got != want {
			t.Errorf(`herald_moderation_total{action=%q} is %g, want %g`, action, got, want)
		}
	}
	for _, line := range []string{`msg="user disconnected" user=troll`, `msg="user banned" user=troll`} {
		if !strings.Contains(srv.log.String(), line) {
			t.Errorf("the server log has no %s", line)
		}
	}

	// The ban is durable: still refused after SIGKILL and a restart.
	srv.kill()
	srv.restart()
	checkRefusedAsBanned(t, base, toks["troll"], "troll", room)
	mustOpen(t, sseDriver{}, base, toks["nice"], []string{room}, nil)

	// Lifted: allowed again everywhere.
	var unban struct {
		User   string `json:"user"`
		Banned bool   `json:"banned"`
	}
	if code, raw := apiCall(t, http.MethodDelete, base+"/api/ban", apiKey, map[string]any{"user": "troll"}, &unban); code != 200 || unban.User != "troll" || unban.Banned {
		t.Fatalf("DELETE /api/ban: %d %s", code, raw)
	}
	var back []conn
	for _, d := range drivers {
		back = append(back, mustOpen(t, d, base, toks["troll"], []string{room}, nil))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	res, _, err := apiPublish(ctx, base, toks["troll"], map[string]any{"channel": room, "data": map[string]int{"i": 3}})
	if err != nil || res.Offset != 3 {
		t.Fatalf("the troll publishing after the ban is lifted: %+v %v", res, err)
	}
	for _, c := range back {
		expectMessage(t, c, room, 3)
	}
}

// --- 7. connections per user ---

// TestConnectionLimitCloseOldest: with limits.max_connections_per_user 2,
// close_oldest makes a user's third session (any transport) close the
// oldest with herald.disconnect replaced; reject refuses the third with
// 429 (a WebSocket with close 4008) and leaves the two alone.
func TestConnectionLimitCloseOldest(t *testing.T) {
	config := func(mode string) string {
		return `channels:
  - pattern: "room"
    subscribe: ["authenticated"]
    publish: ["system"]
limits:
  max_connections_per_user: 2
  on_connection_limit: ` + mode + "\n"
	}
	toks := permTokens(t, map[string][]string{"multi": {"--sub", "multi"}})
	tok := toks["multi"]
	expectData := func(who string, s *rawSSE, data string) {
		t.Helper()
		ev := s.mustNext(who)
		var e envelope
		if err := json.Unmarshal([]byte(ev.data), &e); err != nil || string(e.Data) != data {
			t.Fatalf("%s: got %+v, want the message %s", who, ev, data)
		}
	}

	t.Run("close_oldest", func(t *testing.T) {
		srv := startFlowServer(t, config("close_oldest"))
		base := srv.url()
		first, _, _ := openSSEStream(t, base, "channel=room", tok, "", 0)
		second, _, _ := openSSEStream(t, base, "channel=room", tok, "", 0)
		third, _, _ := openSSEStream(t, base, "channel=room", tok, "", 0)
		expectSSEDisconnect(t, first, "the first stream", "replaced", false)
		mustPublish(t, base, "room", `{"i":1}`)
		expectData("the second stream", second, `{"i":1}`)
		expectData("the third stream", third, `{"i":1}`)

		// A WebSocket counts the same: it replaces the (now) oldest.
		ws := openWS(t, base, tok, 0)
		ws.subscribe("room", nil)
		expectSSEDisconnect(t, second, "the second stream", "replaced", false)
		mustPublish(t, base, "room", `{"i":2}`)
		expectData("the third stream", third, `{"i":2}`)
		if f, err := ws.read(20 * time.Second); err != nil || f.Type != "message" {
			t.Fatalf("the WebSocket: %s %v, want the message", f.raw, err)
		}
		if got := metric(t, base, "", "herald_sessions_closed_total", map[string]string{"reason": "replaced"}); got != 2 {
			t.Errorf(`herald_sessions_closed_total{reason="replaced"} is %g, want 2`, got)
		}
	})

	t.Run("reject", func(t *testing.T) {
		srv := startFlowServer(t, config("reject"))
		base := srv.url()
		first, _, _ := openSSEStream(t, base, "channel=room", tok, "", 0)
		second, _, _ := openSSEStream(t, base, "channel=room", tok, "", 0)

		limited := func(what string, code int, raw []byte) {
			t.Helper()
			e := errorOf(t, raw)
			if code != 429 || e.Code != 429 || e.RetryAfter < 1 || !strings.Contains(e.Message, "the limit is 2") {
				t.Errorf("a third session over %s: %d %s, want 429 with retry_after naming the limit", what, code, raw)
			}
		}
		third := dialSSE(t, base, "channel=room", tok, "", 0)
		limited("SSE", third.status, third.body)
		if third.header.Get("Retry-After") == "" {
			t.Errorf("the 429 of a third SSE stream has no Retry-After header")
		}
		code, _, raw := flowPoll(t, base, tok, url.Values{"channel": {"room"}, "timeout": {"0"}})
		limited("long polling", code, raw)
		ws, resp, raw, err := dialWSRaw(t, base, tok, 0)
		if err != nil {
			t.Fatalf("a third session over WebSocket: %v (%v %s)", err, resp, raw)
		}
		_ = ws.SetReadDeadline(time.Now().Add(20 * time.Second))
		_, frame, err := ws.ReadMessage()
		var ce *websocket.CloseError
		if !errors.As(err, &ce) || ce.Code != protocol.ClosePolicy || !strings.Contains(ce.Text, "the limit is 2") {
			t.Errorf("a third session over WebSocket: %q / %v, want close 4008 naming the limit", frame, err)
		}

		// The two are untouched.
		mustPublish(t, base, "room", `{"i":1}`)
		expectData("the first stream", first, `{"i":1}`)
		expectData("the second stream", second, `{"i":1}`)
		if got := metric(t, base, "", "herald_sessions_closed_total", map[string]string{"reason": "replaced"}); got != 0 {
			t.Errorf(`herald_sessions_closed_total{reason="replaced"} is %g, want 0`, got)
		}
	})
}
