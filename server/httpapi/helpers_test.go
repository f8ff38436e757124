package httpapi

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/golang-jwt/jwt/v5"
	"github.com/julienschmidt/httprouter"

	"github.com/heraldrt/herald/server"
	"github.com/heraldrt/herald/store"
)

const testAPIKey = "test-api-key-0123456789"
const testSecret = "test-jwt-secret-0123456789abcdef0123"

type apiFixture struct {
	srv *server.Server
	hs  *httptest.Server
}

// newAPI serves the API of a real core, on an in-memory store, until the
// test ends.
func newAPI(t *testing.T, cfg server.Config) *apiFixture {
	t.Helper()
	if cfg.APIKey == "" {
		cfg.APIKey = testAPIKey
	}
	if cfg.JWTSecret == "" {
		cfg.JWTSecret = testSecret
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(t.Output(), nil))
	}
	srv, st, err := server.Open(cfg, store.Options{InMemory: true})
	if err != nil {
		t.Fatal(err)
	}
	api, err := New(srv)
	if err != nil {
		t.Fatal(err)
	}
	r := httprouter.New()
	api.Routes(r)
	hs := httptest.NewServer(api.CORS(r))
	t.Cleanup(func() {
		hs.Close()
		srv.Shutdown()
		if err := st.Close(); err != nil {
			t.Errorf("close store: %v", err)
		}
	})
	return &apiFixture{srv: srv, hs: hs}
}

// call sends a request and decodes the JSON answer into out (when not nil).
func (f *apiFixture) call(t *testing.T, method, path, auth, body string, out any) (int, http.Header, string) {
	t.Helper()
	req, _ := http.NewRequest(method, f.hs.URL+path, strings.NewReader(body))
	if auth != "" {
		req.Header.Set("Authorization", "Bearer "+auth)
	}
	resp, err := f.hs.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	if out != nil {
		if err := json.Unmarshal(raw, out); err != nil {
			t.Fatalf("%s %s: %d %s: %v", method, path, resp.StatusCode, raw, err)
		}
	}
	return resp.StatusCode, resp.Header, string(raw)
}

type apiError struct {
	Error struct {
		Code       int    `json:"code"`
		Message    string `json:"message"`
		Channel    string `json:"channel"`
		RetryAfter int    `json:"retry_after"`
	} `json:"error"`
}

func registered(sub string) jwt.RegisteredClaims { return jwt.RegisteredClaims{Subject: sub} }

func publishN(t testing.TB, srv *server.Server, channel string, from, to int) {
	t.Helper()
	for i := from; i <= to; i++ {
		if _, err := srv.Publish(context.Background(), server.Identity{System: true}, server.PublishRequest{
			Channel: channel, Data: json.RawMessage(fmt.Sprintf(`{"n":%d}`, i)),
		}); err != nil {
			t.Fatalf("publish %d: %v", i, err)
		}
	}
}

// openSession opens a session on channels for the API key.
func openSession(t testing.TB, srv *server.Server, channels []string) *server.Session {
	t.Helper()
	sess, _, err := srv.Transport("test").Open(context.Background(), server.Identity{System: true}, server.OpenRequest{Channels: channels})
	if err != nil {
		t.Fatalf("open %v: %v", channels, err)
	}
	return sess
}

// assertRange checks that got is exactly from..to, each once, in order.
func assertRange(t testing.TB, got []uint64, from, to uint64) {
	t.Helper()
	if want := int(to - from + 1); len(got) != want {
		t.Fatalf("got %d offsets, want %d (%d..%d)", len(got), want, from, to)
	}
	for i, o := range got {
		if o != from+uint64(i) {
			t.Fatalf("offset #%d is %d, want %d (gap, duplicate or reorder)", i, o, from+uint64(i))
		}
	}
}
