package httpapi

import (
	"bytes"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/julienschmidt/httprouter"

	"github.com/heraldrt/herald/server"
	"github.com/heraldrt/herald/store"
)

// apiRoutes are the API's routes that read a body or a query, as the
// fuzzer picks them.
var apiRoutes = []struct{ method, path string }{
	{http.MethodPost, "/api/publish"},
	{http.MethodPost, "/api/grants"},
	{http.MethodDelete, "/api/grants"},
	{http.MethodGet, "/api/grants?"},
	{http.MethodPost, "/api/signal"},
	{http.MethodPost, "/api/broadcast"},
	{http.MethodPost, "/api/disconnect"},
	{http.MethodPost, "/api/ban"},
	{http.MethodDelete, "/api/ban"},
	{http.MethodGet, "/api/history?"},
	{http.MethodGet, "/api/presence?"},
	{http.MethodGet, "/api/channels?"},
}

// FuzzAPIBodies sends any body (or, for a GET, any query) to every route
// of the API with the API key: the answer is never a 500, and a refusal
// is a JSON error with a message.
func FuzzAPIBodies(f *testing.F) {
	for i, seed := range []string{
		`{"channel":"chat_room_7","event":"message_sent","data":{"text":"hi"}}`,
		`{"user":"17","channel":"chat_room_9","ttl":"1h"}`,
		`{"user":"17","channel":"chat_room_9"}`,
		`user=17`,
		`{"channel":"room","user":"17","session":"s_1","data":{"typing":true},"ttl":5}`,
		`{"event":"maintenance","data":{"at":"12:00"}}`,
		`{"user":"17"}`,
		`{"user":"17","duration":"24h","reason":"spam"}`,
		`{"user":"17"}`,
		`channel=room&since=0&limit=10`,
		`channel=room`,
		`after=a&limit=5`,
	} {
		f.Add(uint8(i), []byte(seed))
	}
	f.Add(uint8(0), []byte(`{"messages":[{"channel":"a","data":1},{"channel":"","data":null}]}`))
	f.Add(uint8(9), []byte("channel=%ff&since=-1&limit=99999999999999999999"))
	srv, st, err := server.Open(server.Config{APIKey: testAPIKey, JWTSecret: testSecret,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
		Rules:  []server.RuleConfig{{Pattern: "*", Subscribe: []string{"authenticated"}, Publish: []string{"authenticated"}, Presence: true}}},
		store.Options{InMemory: true})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { srv.Shutdown(); _ = st.Close() })
	api, err := New(srv)
	if err != nil {
		f.Fatal(err)
	}
	r := httprouter.New()
	api.Routes(r)
	h := api.CORS(r)
	f.Fuzz(func(t *testing.T, route uint8, body []byte) {
		rt := apiRoutes[int(route)%len(apiRoutes)]
		var req *http.Request
		if rt.method == http.MethodGet {
			req = httptest.NewRequest(rt.method, "/", nil)
			req.URL.Path = rt.path[:len(rt.path)-1]
			req.URL.RawQuery = string(body)
		} else {
			req = httptest.NewRequest(rt.method, rt.path, bytes.NewReader(body))
			req.Header.Set("Content-Type", "application/json")
		}
		req.Header.Set("Authorization", "Bearer "+testAPIKey)
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code >= 500 {
			t.Fatalf("%s %s with %q: %d %s", rt.method, rt.path, body, rec.Code, rec.Body)
		}
		if rec.Code >= 400 {
			var e struct {
				Error struct {
					Message string `json:"message"`
				} `json:"error"`
			}
			if err := json.Unmarshal(rec.Body.Bytes(), &e); err != nil || e.Error.Message == "" {
				t.Fatalf("%s %s with %q: %d and a body that is not a JSON error: %s", rt.method, rt.path, body, rec.Code, rec.Body)
			}
		}
	})
}
