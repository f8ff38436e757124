package client_test

import (
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

	"github.com/golang-jwt/jwt/v5"

	"github.com/heraldrt/herald/client"
	"github.com/heraldrt/herald/protocol"
	"github.com/heraldrt/herald/server"
)

// publishServer records every publish request, checks its framing, and
// answers with answer(n, req) for the n-th request (1-based).
type publishServer struct {
	t      *testing.T
	path   string
	answer func(n int, req protocol.PublishRequest) (int, string)

	mu   sync.Mutex
	reqs []protocol.PublishRequest
	auth []string
}

func (ps *publishServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost || r.URL.Path != ps.path {
		ps.t.Errorf("request %s %s, want POST %s", r.Method, r.URL.Path, ps.path)
	}
	if ct := r.Header.Get("Content-Type"); ct != "application/json" {
		ps.t.Errorf("Content-Type %q, want application/json", ct)
	}
	dec := json.NewDecoder(r.Body)
	dec.DisallowUnknownFields() // as the server does
	var req protocol.PublishRequest
	if err := dec.Decode(&req); err != nil {
		ps.t.Errorf("request body: %v", err)
	}
	ps.mu.Lock()
	ps.reqs = append(ps.reqs, req)
	ps.auth = append(ps.auth, r.Header.Get("Authorization"))
	n := len(ps.reqs)
	ps.mu.Unlock()
	code, body := ps.answer(n, req)
	w.Header().Set("Content-Type", "application/json")
	if code == 429 {
		w.Header().Set("Retry-After", "3")
	}
	w.WriteHeader(code)
	io.WriteString(w, body)
}

func okAnswer(n int, req protocol.PublishRequest) (int, string) {
	return 200, fmt.Sprintf("{\"channel\": %q, \"offset\": %d, \"epoch\": \"e1\", \"id\": \"m_%d\"}\n", req.Channel, n, n)
}

func TestPublish(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name    string
		req     protocol.PublishRequest
		token   string
		prefix  string // server URL path prefix
		answer  func(int, protocol.PublishRequest) (int, string)
		wantReq string
		wantRes protocol.PublishResult
		wantErr string
		wantAPI *client.APIError
	}{
		{
			name:    "basic",
			req:     protocol.PublishRequest{Channel: "chat_room_7", Event: "message_sent", Data: json.RawMessage(`{"text":"hi"}`)},
			token:   "key",
			wantReq: `{"channel":"chat_room_7","event":"message_sent","data":{"text":"hi"}}`,
			wantRes: protocol.PublishResult{Channel: "chat_room_7", Offset: 1, Epoch: "e1", ID: "m_1"},
		},
		{
			name:    "every field, server under a path",
			req:     protocol.PublishRequest{Channel: "c", Data: json.RawMessage(`42`), IdempotencyKey: "k1", ExcludeSession: "s_1", Session: "s_2", Ephemeral: true},
			prefix:  "/herald/",
			wantReq: `{"channel":"c","data":42,"idempotency_key":"k1","exclude_session":"s_1","ephemeral":true,"session":"s_2"}`,
			wantRes: protocol.PublishResult{Channel: "c", Offset: 1, Epoch: "e1", ID: "m_1"},
		},
		{
			name: "403 answer",
			req:  protocol.PublishRequest{Channel: "team_3_x", Data: json.RawMessage(`"hi"`)},
			answer: func(int, protocol.PublishRequest) (int, string) {
				return 403, `{"error":{"code":403,"message":"not allowed to publish to channel \"team_3_x\"","channel":"team_3_x"}}`
			},
			wantReq: `{"channel":"team_3_x","data":"hi"}`,
			wantErr: `server answered 403 Forbidden: not allowed to publish to channel "team_3_x"`,
			wantAPI: &client.APIError{Status: 403, Code: 403, Message: `not allowed to publish to channel "team_3_x"`, Channel: "team_3_x"},
		},
		{
			name: "429 with retry_after",
			req:  protocol.PublishRequest{Channel: "c", Data: json.RawMessage(`null`)},
			answer: func(int, protocol.PublishRequest) (int, string) {
				return 429, `{"error":{"code":429,"message":"rate limit: 60 per 1m","retry_after":3}}`
			},
			wantReq: `{"channel":"c","data":null}`,
			wantErr: "server answered 429 Too Many Requests: rate limit: 60 per 1m",
			wantAPI: &client.APIError{Status: 429, Code: 429, Message: "rate limit: 60 per 1m", RetryAfter: 3 * time.Second},
		},
		{
			name: "non-JSON error page",
			req:  protocol.PublishRequest{Channel: "c", Data: json.RawMessage(`null`)},
			answer: func(int, protocol.PublishRequest) (int, string) {
				return 502, "<html>\n<body>Bad Gateway</body>\n</html>"
			},
			wantReq: `{"channel":"c","data":null}`,
			wantErr: "server answered 502 Bad Gateway: <html> <body>Bad Gateway</body> </html>",
			wantAPI: &client.APIError{Status: 502, Code: 502, Message: "<html> <body>Bad Gateway</body> </html>"},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			prefix := tc.prefix
			if prefix == "" {
				prefix = "/"
			}
			ps := &publishServer{t: t, path: prefix + "api/publish", answer: tc.answer}
			if ps.answer == nil {
				ps.answer = okAnswer
			}
			srv := httptest.NewServer(ps)
			defer srv.Close()
			c, err := client.New(srv.URL+strings.TrimSuffix(prefix, "/"), client.Options{Token: tc.token, HTTPClient: srv.Client()})
			if err != nil {
				t.Fatal(err)
			}
			res, err := c.Publish(context.Background(), tc.req)
			if tc.wantErr == "" && err != nil {
				t.Fatalf("publish: %v", err)
			}
			if tc.wantErr != "" && (err == nil || err.Error() != tc.wantErr) {
				t.Fatalf("err = %v, want %q", err, tc.wantErr)
			}
			var ae *client.APIError
			if tc.wantAPI != nil && (!errors.As(err, &ae) || *ae != *tc.wantAPI) {
				t.Errorf("err = %#v, want %#v", err, tc.wantAPI)
			}
			if res != tc.wantRes {
				t.Errorf("result %+v, want %+v", res, tc.wantRes)
			}
			ps.mu.Lock()
			defer ps.mu.Unlock()
			if len(ps.reqs) != 1 {
				t.Fatalf("%d requests, want 1", len(ps.reqs))
			}
			if b, _ := json.Marshal(ps.reqs[0]); string(b) != tc.wantReq {
				t.Errorf("request body %s, want %s", b, tc.wantReq)
			}
			wantAuth := ""
			if tc.token != "" {
				wantAuth = "Bearer " + tc.token
			}
			if ps.auth[0] != wantAuth {
				t.Errorf("Authorization %q, want %q", ps.auth[0], wantAuth)
			}
		})
	}
}

func TestNew(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		url, token, wantErr string
	}{
		{"http://127.0.0.1:8080", "", ""},
		{"https://example.com/herald/", "tok", ""},
		{"ftp://x", "", "want an http:// or https:// URL"},
		{"http://", "", "has no host"},
		{"http://x/?a=b", "", "without a query or fragment"},
		{"http://x", "tok\n", "control character"},
	} {
		_, err := client.New(tc.url, client.Options{Token: tc.token})
		switch {
		case tc.wantErr == "" && err != nil:
			t.Errorf("New(%q): %v", tc.url, err)
		case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
			t.Errorf("New(%q, token %q): err = %v, want %q", tc.url, tc.token, err, tc.wantErr)
		}
	}
}

// userToken mints a token of the test server for user sub.
func userToken(t *testing.T, sub string) string {
	t.Helper()
	tok, err := server.MintToken(jwtSecret, server.Claims{RegisteredClaims: jwt.RegisteredClaims{
		Subject: sub, ExpiresAt: jwt.NewNumericDate(time.Now().Add(time.Hour)),
	}})
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// TestAgainstARealServer walks a chat room's life through the API
// methods: the backend grants the room, a user subscribes, signals and
// publishes, the backend revokes, bans and lifts the ban.
func TestAgainstARealServer(t *testing.T) {
	h, err := startHerald()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := h.stop(); err != nil {
			t.Error(err)
		}
	})
	ctx := context.Background()
	backend, err := client.New(h.URL(), client.Options{Token: apiKey})
	if err != nil {
		t.Fatal(err)
	}
	ada, err := client.New(h.URL(), client.Options{Token: userToken(t, "17")})
	if err != nil {
		t.Fatal(err)
	}
	const room = "chat_room_9"

	// Not a participant yet: refused for good, before any stream starts.
	for _, tr := range []client.Transport{client.SSE, client.WebSocket, client.LongPoll} {
		_, err := ada.Subscribe(ctx, client.SubscribeOptions{Transport: tr, Channels: []string{room}})
		var ae *client.APIError
		if !errors.Is(err, client.ErrRefused) || !errors.As(err, &ae) || ae.Status != 403 || ae.Channel != room {
			t.Fatalf("%s subscribe before the grant: %v, want a 403 refusal naming the room", tr, err)
		}
	}

	g, err := backend.Grant(ctx, protocol.Grant{User: "17", Channel: room})
	if err != nil || strings.Join(g.Actions, ",") != "subscribe,publish,history,presence" {
		t.Fatalf("grant: %+v, %v; want all four actions", g, err)
	}
	sub, err := ada.Subscribe(ctx, client.SubscribeOptions{Transport: client.WebSocket, Channels: []string{room}})
	if err != nil {
		t.Fatalf("subscribe after the grant: %v", err)
	}
	defer sub.Close()

	p, err := ada.Presence(ctx, room, false)
	if err != nil || p.Count != 1 || len(p.Members) != 1 || p.Members[0].User != "17" {
		t.Fatalf("presence: %+v, %v; want Ada alone", p, err)
	}
	if err := ada.Signal(ctx, protocol.SignalRequest{Channel: room, State: json.RawMessage(`{"typing":true}`)}); err != nil {
		t.Fatalf("signal: %v", err)
	}
	if _, err := ada.Publish(ctx, protocol.PublishRequest{Channel: room, Event: "message_sent", Data: json.RawMessage(`{"text":"hi"}`)}); err != nil {
		t.Fatalf("publish: %v", err)
	}
	// Ada hears her own state, then her message.
	for _, want := range []struct {
		kind  client.Kind
		event string
	}{{client.KindEphemeral, protocol.EventState}, {client.KindMessage, "message_sent"}} {
		ev, err := sub.Next(ctx)
		if err != nil || ev.Kind != want.kind || ev.Envelope.Event != want.event {
			t.Fatalf("next: %v %+v, %v; want %v %s", ev.Kind, ev.Envelope, err, want.kind, want.event)
		}
		if ev.Kind == client.KindMessage && (ev.Envelope.From == nil || ev.Envelope.From.User != "17" || sub.Positions()[room].Offset != 1) {
			t.Errorf("message %+v, positions %v; want from 17, position 1", ev.Envelope, sub.Positions())
		}
	}
	page, err := ada.History(ctx, room, 0, 0)
	if err != nil || page.Head != 1 || len(page.Messages) != 1 {
		t.Fatalf("history: %+v, %v", page, err)
	}

	// Revoking ends the subscription's channel: herald.unsubscribed.
	left, err := backend.RevokeGrant(ctx, protocol.Grant{User: "17", Channel: room})
	if err != nil || len(left.Actions) != 0 {
		t.Fatalf("revoke: %+v, %v", left, err)
	}
	ev, err := sub.Next(ctx)
	if err != nil || ev.Kind != client.KindEphemeral || ev.Envelope.Event != protocol.EventUnsubscribed {
		t.Fatalf("after the revoke: %v %+v, %v; want herald.unsubscribed", ev.Kind, ev.Envelope, err)
	}

	// A ban refuses the user's token until it is lifted.
	until, err := backend.Ban(ctx, "17", time.Hour)
	if err != nil || time.Until(until) < 59*time.Minute {
		t.Fatalf("ban: %s, %v", until, err)
	}
	var ae *client.APIError
	if _, err := ada.Publish(ctx, protocol.PublishRequest{Channel: room, Data: json.RawMessage(`1`)}); !errors.As(err, &ae) || ae.Status != 403 || !strings.Contains(ae.Message, "banned") {
		t.Errorf("publish while banned: %v, want a 403 naming the ban", err)
	}
	if err := backend.Unban(ctx, "17"); err != nil {
		t.Fatalf("unban: %v", err)
	}
	if n, err := backend.Disconnect(ctx, "17"); err != nil || n < 0 {
		t.Errorf("disconnect: %d, %v", n, err)
	}
	// The ban ended Ada's subscription for good.
	if _, err := sub.Next(ctx); !errors.Is(err, client.ErrDisconnected) {
		t.Errorf("Ada's subscription after the ban: %v, want ErrDisconnected", err)
	}
	// Call reaches the routes without a method, answers as they came.
	var raw json.RawMessage
	if err := backend.Call(ctx, http.MethodGet, "api/users/17", nil, nil, &raw); err != nil || !strings.HasPrefix(string(raw), `{"user":"17","online":`) {
		t.Errorf("GET api/users/17: %s, %v", raw, err)
	}
	// Only the API key manages grants.
	if _, err := ada.Grant(ctx, protocol.Grant{User: "17", Channel: room}); !errors.As(err, &ae) || ae.Status != 403 {
		t.Errorf("a user grants: %v, want 403", err)
	}
}

// TestSubscriptionContinuesItsSession checks that a subscription that
// reconnects brings its session back on every transport, so a message
// its user publishes with exclude_session naming it stays passed over
// after a server restart.
func TestSubscriptionContinuesItsSession(t *testing.T) {
	h, err := startHerald()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := h.stop(); err != nil {
			t.Error(err)
		}
	})
	ctx := context.Background()
	backend, err := client.New(h.URL(), client.Options{Token: apiKey})
	if err != nil {
		t.Fatal(err)
	}
	for _, tr := range []client.Transport{client.SSE, client.WebSocket, client.LongPoll} {
		t.Run(string(tr), func(t *testing.T) {
			channel := "feed_" + string(tr)
			sub, err := backend.Subscribe(ctx, client.SubscribeOptions{Transport: tr, Channels: []string{channel},
				Positions: map[string]client.Position{channel: {}}})
			if err != nil {
				t.Fatal(err)
			}
			defer sub.Close()
			session := sub.Session()
			if session == "" {
				t.Fatal("no session after Subscribe")
			}
			if err := h.restart(); err != nil {
				t.Fatal(err)
			}
			// Published while the subscriber may still be away: one it
			// must not get, one it must.
			if _, err := backend.Publish(ctx, protocol.PublishRequest{Channel: channel, Data: json.RawMessage(`"not for you"`), ExcludeSession: session}); err != nil {
				t.Fatal(err)
			}
			if _, err := backend.Publish(ctx, protocol.PublishRequest{Channel: channel, Data: json.RawMessage(`"for you"`)}); err != nil {
				t.Fatal(err)
			}
			ev, err := sub.Next(ctx)
			if err != nil || string(ev.Envelope.Data) != `"for you"` || ev.Envelope.Offset != 2 {
				t.Fatalf("next: %+v, %v; want offset 2, \"for you\"", ev.Envelope, err)
			}
			if got := sub.Session(); got != session {
				t.Errorf("session %q after the restart, want %q continued", got, session)
			}
		})
	}
}
