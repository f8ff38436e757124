package datasync

import (
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/julienschmidt/httprouter"

	"github.com/heraldrt/herald/server"
	"github.com/heraldrt/herald/store"
)

const testKey = "datasync-test-key-0123456789"

func newAPIServer(t *testing.T) (*httptest.Server, *server.Server) {
	t.Helper()
	srv, st, err := server.Open(server.Config{APIKey: testKey, JWTSecret: "datasync-test-jwt-secret-0123456789abcdef",
		Logger: slog.New(slog.NewTextHandler(t.Output(), nil))}, store.Options{InMemory: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		srv.Shutdown()
		if err := st.Close(); err != nil {
			t.Error(err)
		}
	})
	router := httprouter.New()
	NewAPI(projects(t), srv, nil).Routes(router)
	hs := httptest.NewServer(router)
	t.Cleanup(hs.Close)
	return hs, srv
}

func post(t *testing.T, url, token, body string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, url+"/api/changes", strings.NewReader(body))
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestChangeAPIPublishesTheRulesEventsOnce: an update reported with both
// rows becomes the rule's two events, stored and answered with their
// offsets; the same change again with its idempotency key publishes
// nothing new.
func TestChangeAPIPublishesTheRulesEventsOnce(t *testing.T) {
	t.Parallel()
	hs, srv := newAPIServer(t)
	body := `{"table":"projects","op":"update","idempotency_key":"xano-991",
		"old":{"id":7,"name":"Apollo","owner_id":3,"password_hash":"a"},
		"new":{"id":7,"name":"Apollo 2","owner_id":3,"password_hash":"b"}}`
	for round, wantDup := range []bool{false, true} {
		code, got := post(t, hs.URL, testKey, body)
		var res struct {
			Events []server.PublishResult `json:"events"`
		}
		if code != http.StatusOK || json.Unmarshal([]byte(got), &res) != nil || len(res.Events) != 2 {
			t.Fatalf("round %d: %d %s", round, code, got)
		}
		if e := res.Events[0]; e.Channel != "project_7" || e.Offset != 1 || e.Duplicate != wantDup {
			t.Fatalf("round %d: first event %+v", round, e)
		}
		if e := res.Events[1]; e.Channel != "user_3_notifications" || e.Offset != 1 || e.Duplicate != wantDup {
			t.Fatalf("round %d: second event %+v", round, e)
		}
	}
	page, err := srv.History(t.Context(), server.Identity{System: true}, server.HistoryRequest{Channel: "project_7"})
	if err != nil || len(page.Messages) != 1 {
		t.Fatalf("history of project_7: %+v, %v", page, err)
	}
	msg := string(page.Messages[0])
	if !strings.Contains(msg, `"event":"project_updated"`) || !strings.Contains(msg, `"changes":{"name":{"old":"Apollo","new":"Apollo 2"}}`) ||
		strings.Contains(msg, "password_hash") {
		t.Fatalf("stored message %s", msg)
	}
	// An operation the rule does not publish: answered, nothing stored.
	if code, got := post(t, hs.URL, testKey, `{"table":"tasks","op":"update","old":{"id":1},"new":{"id":1,"project_id":7}}`); code != 200 || got != "{\"events\":[]}\n" {
		t.Fatalf("an update of tasks: %d %s", code, got)
	}
}

func TestChangeAPIRefusesWhatItCannotMap(t *testing.T) {
	t.Parallel()
	hs, _ := newAPIServer(t)
	cases := []struct {
		token, body string
		code        int
		want        string
	}{
		{"", `{}`, 401, "credentials"},
		{"wrong", `{}`, 401, ""},
		{testKey, `{"table":"users","op":"insert","new":{"id":1}}`, 400, `table "users" has no sync rule`},
		{testKey, `{"table":"projects","op":"upsert","new":{"id":1}}`, 400, `op "upsert"`},
		{testKey, `{"op":"insert"}`, 400, "table and op are required"},
		{testKey, `{"table":"projects","op":"insert","new":{"id":1},"extra":1}`, 400, `unknown field "extra"`},
		{testKey, `not json`, 400, "the body"},
		{testKey, `{"table":"projects","op":"insert","new":{"id":1,"owner_id":null}}`, 400, `column "owner_id" is null`},
		{testKey, `{"table":"projects","op":"insert","new":{"id":"a b","owner_id":3,"name":"x"}}`, 400, "project_a b"},
	}
	for _, tc := range cases {
		code, got := post(t, hs.URL, tc.token, tc.body)
		var e struct {
			Error struct {
				Message string `json:"message"`
			} `json:"error"`
		}
		if code != tc.code || json.Unmarshal([]byte(got), &e) != nil || !strings.Contains(e.Error.Message, tc.want) {
			t.Errorf("%s: %d %s, want %d naming %q", tc.body, code, got, tc.code, tc.want)
		}
	}
}
