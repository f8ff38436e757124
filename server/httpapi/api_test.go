package httpapi

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/heraldrt/herald/server"
)

func TestPublishAcknowledgesWithOffsetEpochAndID(t *testing.T) {
	t.Parallel()
	f := newAPI(t, server.Config{})
	var res server.PublishResult
	for i := 1; i <= 3; i++ {
		code, _, raw := f.call(t, "POST", "/api/publish", testAPIKey,
			`{"channel":"chat_room_7","event":"message_sent","data":{"text":"hi"}}`, &res)
		if code != 200 || res.Offset != uint64(i) || len(res.Epoch) != 12 || !strings.HasPrefix(res.ID, "m_") || len(res.ID) != 28 {
			t.Fatalf("publish #%d: %d %s", i, code, raw)
		}
	}
	var page server.HistoryPage
	f.call(t, "GET", "/api/history?channel=chat_room_7", testAPIKey, "", &page)
	var env struct {
		Channel string          `json:"channel"`
		Offset  uint64          `json:"offset"`
		Epoch   string          `json:"epoch"`
		ID      string          `json:"id"`
		Event   string          `json:"event"`
		Data    json.RawMessage `json:"data"`
		Time    string          `json:"time"`
		From    *struct{}       `json:"from"`
	}
	if err := json.Unmarshal(page.Messages[2], &env); err != nil {
		t.Fatal(err)
	}
	if env.Channel != "chat_room_7" || env.Offset != 3 || env.Epoch != res.Epoch || env.ID != res.ID ||
		env.Event != "message_sent" || string(env.Data) != `{"text":"hi"}` || len(env.Time) != 24 || env.From != nil {
		t.Fatalf("stored envelope %s", page.Messages[2])
	}
}

func TestPublishRejectsBadInputWithAClearError(t *testing.T) {
	t.Parallel()
	f := newAPI(t, server.Config{Limits: server.Limits{MaxDataBytes: 100, MaxBodyBytes: 1000}})
	cases := []struct {
		name, auth, body string
		code             int
		msg              string
	}{
		{"no credentials", "", `{"channel":"a","data":1}`, 401, "credentials"},
		{"wrong key", "nope", `{"channel":"a","data":1}`, 401, "neither the API key nor"},
		{"bad channel", testAPIKey, `{"channel":"chat#7","data":1}`, 400, `"#" at position 5`},
		{"reserved event", testAPIKey, `{"channel":"a","event":"herald.reset","data":1}`, 400, "reserved"},
		{"bad event", testAPIKey, `{"channel":"a","event":"a b","data":1}`, 400, `" " at position 2`},
		{"not json", testAPIKey, `{"channel":`, 400, "not valid JSON"},
		{"empty body", testAPIKey, ``, 400, "empty"},
		{"unknown field", testAPIKey, `{"channel":"a","data":1,"colour":"red"}`, 400, "colour"},
		{"wrong type", testAPIKey, `{"channel":7,"data":1}`, 400, `"channel"`},
		{"trailing data", testAPIKey, `{"channel":"a","data":1} {}`, 400, "after the JSON object"},
		{"data too large", testAPIKey, `{"channel":"a","data":"` + strings.Repeat("x", 200) + `"}`, 413, "limit is 100"},
		{"body too large", testAPIKey, `{"channel":"a","data":"` + strings.Repeat("x", 2000) + `"}`, 413, "1000 byte limit"},
		{"long idempotency key", testAPIKey, `{"channel":"a","data":1,"idempotency_key":"` + strings.Repeat("k", 129) + `"}`, 400, "idempotency_key"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var e apiError
			code, hdr, raw := f.call(t, "POST", "/api/publish", tc.auth, tc.body, &e)
			if code != tc.code || e.Error.Code != tc.code || !strings.Contains(e.Error.Message, tc.msg) {
				t.Fatalf("got %d %s, want %d containing %q", code, raw, tc.code, tc.msg)
			}
			if code == 401 && hdr.Get("WWW-Authenticate") == "" {
				t.Fatal("401 without WWW-Authenticate")
			}
		})
	}
	// Nothing was stored by any of them.
	var page server.HistoryPage
	f.call(t, "GET", "/api/history?channel=a", testAPIKey, "", &page)
	if page.Head != 0 {
		t.Fatalf("bad publishes stored %d messages", page.Head)
	}
}

func TestIdempotencyKeyReturnsTheFirstResult(t *testing.T) {
	t.Parallel()
	f := newAPI(t, server.Config{})
	body := `{"channel":"orders","data":{"id":9},"idempotency_key":"order-9-created"}`
	var first, again server.PublishResult
	f.call(t, "POST", "/api/publish", testAPIKey, body, &first)
	f.call(t, "POST", "/api/publish", testAPIKey, body, &again)
	if first.Offset != 1 || again.Offset != 1 || again.ID != first.ID || !again.Duplicate {
		t.Fatalf("first %+v, again %+v", first, again)
	}
	var page server.HistoryPage
	f.call(t, "GET", "/api/history?channel=orders", testAPIKey, "", &page)
	if page.Head != 1 || len(page.Messages) != 1 {
		t.Fatalf("history head %d, %d messages", page.Head, len(page.Messages))
	}
}

func TestHistoryPagesAscendingAndReportsReset(t *testing.T) {
	t.Parallel()
	f := newAPI(t, server.Config{})
	publishN(t, f.srv, "log", 1, 25)
	var got []uint64
	since := uint64(0)
	for pages := 0; ; pages++ {
		var page server.HistoryPage
		code, _, raw := f.call(t, "GET", fmt.Sprintf("/api/history?channel=log&since=%d&limit=10", since), testAPIKey, "", &page)
		if code != 200 || page.Head != 25 || page.Reset {
			t.Fatalf("page: %d %s", code, raw)
		}
		for _, m := range page.Messages {
			var env struct{ Offset uint64 }
			json.Unmarshal(m, &env)
			got = append(got, env.Offset)
		}
		if len(page.Messages) == 0 {
			break
		}
		since = page.Next
		if pages > 5 {
			t.Fatal("paging does not end")
		}
	}
	assertRange(t, got, 1, 25)

	cases := []struct {
		query string
		code  int
		msg   string
	}{
		{"channel=log&limit=1001", 400, "limit 1001 is over the limit of 1000"},
		{"channel=log&limit=0", 400, "at least 1"},
		{"channel=log&since=-1", 400, `since "-1"`},
		{"channel=", 400, "empty"},
	}
	for _, tc := range cases {
		var e apiError
		code, _, raw := f.call(t, "GET", "/api/history?"+tc.query, testAPIKey, "", &e)
		if code != tc.code || !strings.Contains(e.Error.Message, tc.msg) {
			t.Errorf("%s: %d %s", tc.query, code, raw)
		}
	}
}

func TestChannelsListsStoredChannelsWithSubscribers(t *testing.T) {
	t.Parallel()
	f := newAPI(t, server.Config{})
	publishN(t, f.srv, "b_channel", 1, 2)
	publishN(t, f.srv, "a_channel", 1, 1)
	sess := openSession(t, f.srv, []string{"b_channel"})
	defer sess.Close(server.ReasonClientGone)
	var out struct {
		Channels []server.ChannelStatus `json:"channels"`
	}
	code, _, raw := f.call(t, "GET", "/api/channels", testAPIKey, "", &out)
	if code != 200 || len(out.Channels) != 2 || out.Channels[0].Channel != "a_channel" ||
		out.Channels[1].Head != 2 || out.Channels[1].Subscribers != 1 {
		t.Fatalf("%d %s", code, raw)
	}
}

func TestHealthAndReadiness(t *testing.T) {
	t.Parallel()
	f := newAPI(t, server.Config{})
	if code, _, _ := f.call(t, "GET", "/healthz", "", "", nil); code != 200 {
		t.Fatalf("healthz %d", code)
	}
	if code, _, _ := f.call(t, "GET", "/readyz", "", "", nil); code != 200 {
		t.Fatalf("readyz %d", code)
	}
	f.srv.Shutdown()
	if code, _, _ := f.call(t, "GET", "/readyz", "", "", nil); code != 503 {
		t.Fatalf("readyz while shutting down %d", code)
	}
}

func TestUserTokensAreVerified(t *testing.T) {
	t.Parallel()
	f := newAPI(t, server.Config{})
	mint := func(sub string, mod func(*server.Claims)) string {
		var c server.Claims
		c.Subject = sub
		if mod != nil {
			mod(&c)
		}
		tok, err := server.MintToken(testSecret, c)
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	other, _ := server.MintToken("another-secret-0123456789abcdef0123", server.Claims{})
	body := `{"channel":"user_17_notifications","data":1}`
	cases := []struct {
		name, tok string
		code      int
		msg       string
	}{
		{"valid user, no rules", mint("17", nil), 403, "not allowed to publish"},
		{"wrong signature", other, 401, "signature is invalid"},
		{"no sub", mint("", nil), 401, "no sub"},
		{"garbage", "a.b.c", 401, "malformed"},
	}
	for _, tc := range cases {
		var e apiError
		code, _, raw := f.call(t, "POST", "/api/publish", tc.tok, body, &e)
		if code != tc.code || !strings.Contains(e.Error.Message, tc.msg) {
			t.Errorf("%s: %d %s", tc.name, code, raw)
		}
	}
}

func TestJSONAnswersKeepHTMLCharactersLiteral(t *testing.T) {
	t.Parallel()
	f := newAPI(t, server.Config{})
	// An error quoting the caller's bad value.
	code, hdr, raw := f.call(t, "GET", "/api/history?channel="+url.QueryEscape("a<b>&c"), testAPIKey, "", nil)
	if code != 400 || !strings.Contains(raw, `channel name \"a<b>&c\" has the character \"<\" at position 2`) {
		t.Fatalf("bad channel: %d %s, want the name quoted with a literal <", code, raw)
	}
	if strings.Contains(raw, `\u003c`) || !strings.HasSuffix(raw, "}\n") || strings.HasSuffix(raw, "\n\n") {
		t.Fatalf("bad channel: body %q, want literal characters and one trailing newline", raw)
	}
	if ct, opt := hdr.Get("Content-Type"), hdr.Get("X-Content-Type-Options"); ct != "application/json" || opt != "nosniff" {
		t.Fatalf("Content-Type %q, X-Content-Type-Options %q", ct, opt)
	}
	// A stored message read back through the API.
	f.call(t, "POST", "/api/publish", testAPIKey, `{"channel":"html","data":{"text":"<b>Tom & Jerry</b>"}}`, nil)
	code, _, raw = f.call(t, "GET", "/api/history?channel=html", testAPIKey, "", nil)
	if code != 200 || !strings.Contains(raw, `"data":{"text":"<b>Tom & Jerry</b>"}`) {
		t.Fatalf("history: %d %s, want the data as published", code, raw)
	}
}

func TestUnknownRoutesAndMethodsAnswerJSONErrors(t *testing.T) {
	t.Parallel()
	f := newAPI(t, server.Config{CORS: server.CORSConfig{AllowedOrigins: []string{"https://app.example.com"}}})
	cases := []struct {
		method, path string
		origin       string // sends a CORS preflight from this origin
		code         int
		msg, allow   string
	}{
		{"GET", "/api/publsh", "", 404, "no route for GET /api/publsh", ""},
		{"GET", "/", "", 404, "no route for GET /", ""},
		{"POST", "/api/history", "", 405, "POST /api/history is not allowed; use GET", "GET, OPTIONS"},
		{"PUT", "/api/grants", "", 405, "PUT /api/grants is not allowed; use DELETE, GET or POST", "DELETE, GET, OPTIONS, POST"},
		{"DELETE", "/api/users/17", "", 405, "DELETE /api/users/17 is not allowed; use GET", "GET, OPTIONS"},
		{"OPTIONS", "/healthz", "", 405, "OPTIONS /healthz is not allowed; use GET", "GET, OPTIONS"},
		// A preflight from an allowed origin is CORS's to answer.
		{"OPTIONS", "/api/publish", "https://app.example.com", 204, "", ""},
	}
	for _, tc := range cases {
		req, _ := http.NewRequest(tc.method, f.hs.URL+tc.path, nil)
		if tc.origin != "" {
			req.Header.Set("Origin", tc.origin)
			req.Header.Set("Access-Control-Request-Method", "POST")
		}
		resp, err := f.hs.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		raw, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		what := tc.method + " " + tc.path
		if resp.StatusCode != tc.code {
			t.Errorf("%s: %d %s, want %d", what, resp.StatusCode, raw, tc.code)
			continue
		}
		if tc.code == 204 {
			if resp.Header.Get("Access-Control-Allow-Origin") != tc.origin {
				t.Errorf("%s: preflight not answered by CORS: %v", what, resp.Header)
			}
			continue
		}
		var e apiError
		if err := json.Unmarshal(raw, &e); err != nil || e.Error.Code != tc.code || e.Error.Message != tc.msg {
			t.Errorf("%s: body %q, want {\"error\":{\"code\":%d,\"message\":%q}}", what, raw, tc.code, tc.msg)
		}
		if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
			t.Errorf("%s: Content-Type %q", what, ct)
		}
		if got := resp.Header.Get("Allow"); got != tc.allow {
			t.Errorf("%s: Allow %q, want %q", what, got, tc.allow)
		}
	}
}
