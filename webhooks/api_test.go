package webhooks

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/julienschmidt/httprouter"

	"github.com/heraldrt/herald/server"
)

func TestAPIAnswers(t *testing.T) {
	t.Parallel()
	srv, _ := openServer(t)
	rc := newReceiver(t, func(w http.ResponseWriter, r *http.Request, h hit) { w.WriteHeader(http.StatusInternalServerError) })
	r := newRig(t, compile(t, EndpointConfig{Name: "hook", URL: rc.URL, Channels: []string{"orders"},
		Retry: RetryConfig{Initial: time.Hour}}), nil)
	es, _ := messageEntries(2)
	r.enqueue(t, "hook", es...)
	r.start(t, srv)
	router := httprouter.New()
	r.svc.Routes(router, srv)
	hs := httptest.NewServer(router)
	t.Cleanup(hs.Close)

	user, err := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.RegisteredClaims{Subject: "17",
		ExpiresAt: jwt.NewNumericDate(time.Now().Add(time.Hour))}).SignedString([]byte(testJWTSecret))
	if err != nil {
		t.Fatal(err)
	}
	call := func(method, path, auth, body string) (int, string) {
		t.Helper()
		req, err := http.NewRequest(method, hs.URL+path, strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		if auth != "" {
			req.Header.Set("Authorization", "Bearer "+auth)
		}
		resp, err := hs.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		raw, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatal(err)
		}
		return resp.StatusCode, string(raw)
	}

	const replay = "/api/webhooks/hook/replay"
	cases := []struct {
		name, method, path, auth, body string
		status                         int
		says                           string
	}{
		{"no credentials", "GET", "/api/webhooks", "", "", 401, "needs credentials"},
		{"a wrong key", "GET", "/api/webhooks", "not-the-api-key-at-all", "", 401, ""},
		{"a user's token", "GET", "/api/webhooks", user, "", 403, "needs the API key"},
		{"a user's token replaying", "POST", replay, user, `{"dead":true}`, 403, "needs the API key"},
		{"a user's token testing", "POST", "/api/webhooks/hook/test", user, "", 403, "needs the API key"},
		{"dead letters of an unknown endpoint", "GET", "/api/webhooks/nope/dead", testAPIKey, "", 404, `named \"nope\"`},
		{"a replay to an unknown endpoint", "POST", "/api/webhooks/nope/replay", testAPIKey, `{"dead":true}`, 404, `named \"nope\"`},
		{"a test of an unknown endpoint", "POST", "/api/webhooks/nope/test", testAPIKey, "", 404, `named \"nope\"`},
		{"dead letters and a range", "POST", replay, testAPIKey, `{"dead":true,"from":"2026-12-05T10:00:00Z","to":"2026-12-05T11:00:00Z"}`, 400, "not both"},
		{"an empty replay", "POST", replay, testAPIKey, `{}`, 400, "replay needs"},
		{"no body", "POST", replay, testAPIKey, "", 400, "replay needs"},
		{"from without to", "POST", replay, testAPIKey, `{"from":"2026-12-05T10:00:00Z"}`, 400, "replay needs"},
		{"a bad from", "POST", replay, testAPIKey, `{"from":"yesterday","to":"2026-12-05T11:00:00Z"}`, 400, `from \"yesterday\"`},
		{"a bad to", "POST", replay, testAPIKey, `{"from":"2026-12-05T10:00:00Z","to":"12:00"}`, 400, `to \"12:00\"`},
		{"from after to", "POST", replay, testAPIKey, `{"from":"2026-12-05T12:00:00Z","to":"2026-12-05T11:00:00Z"}`, 400, "is not before"},
		{"an unknown field", "POST", replay, testAPIKey, `{"deadd":true}`, 400, "replay body"},
		{"a body that is not JSON", "POST", replay, testAPIKey, `dead`, 400, "replay body"},
		{"a dead letter limit of 0", "GET", "/api/webhooks/hook/dead?limit=0", testAPIKey, "", 400, "limit"},
		{"a dead letter after that is no seq", "GET", "/api/webhooks/hook/dead?after=x", testAPIKey, "", 400, "after"},
		{"no dead letters", "GET", "/api/webhooks/hook/dead", testAPIKey, "", 200, `{"dead_letters":[]}`},
		{"a replay of no dead letters", "POST", replay, testAPIKey, `{"dead":true}`, 200, `"queued":0`},
	}
	for _, tc := range cases {
		status, body := call(tc.method, tc.path, tc.auth, tc.body)
		if status != tc.status || !strings.Contains(body, tc.says) {
			t.Errorf("%s: %s %s answered %d %s, want %d saying %s", tc.name, tc.method, tc.path, status, body, tc.status, tc.says)
		}
	}

	status, body := call("GET", "/api/webhooks", testAPIKey, "")
	var list struct {
		Webhooks []EndpointStatus `json:"webhooks"`
	}
	if err := json.Unmarshal([]byte(body), &list); status != 200 || err != nil || len(list.Webhooks) != 1 {
		t.Fatalf("GET /api/webhooks: %d %s (%v)", status, body, err)
	}
	got := list.Webhooks[0]
	if got.Name != "hook" || got.URL != rc.URL || got.Depth != 2 || got.Dead != 0 || got.Breaker != "closed" ||
		!slices.Equal(got.Events, []string{EventMessage}) || !slices.Equal(got.Channels, []string{"orders"}) || got.Disabled {
		t.Errorf("GET /api/webhooks: %+v", got)
	}

	// A time range queues again what the endpoint's channels keep.
	ctx := context.Background()
	for _, ch := range []string{"orders", "orders", "invoices"} {
		if _, err := srv.Publish(ctx, server.Identity{System: true}, server.PublishRequest{Channel: ch, Data: json.RawMessage(`{}`)}); err != nil {
			t.Fatal(err)
		}
	}
	now := time.Now().UTC()
	status, body = call("POST", replay, testAPIKey, fmt.Sprintf(`{"from":%q,"to":%q}`,
		now.Add(-time.Hour).Format(time.RFC3339), now.Add(time.Hour).Format(time.RFC3339)))
	if status != 200 || !strings.Contains(body, `"queued":2`) {
		t.Errorf("replay of a time range: %d %s, want the 2 messages of orders", status, body)
	}
	r.waitDepth(t, "hook", 4, 0)
}
