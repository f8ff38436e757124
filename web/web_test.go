package web

import (
	"bytes"
	"compress/gzip"
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

func newPages(t *testing.T, cfg server.Config) http.Handler {
	t.Helper()
	srv, st, err := server.Open(cfg, store.Options{InMemory: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Shutdown(); _ = st.Close() })
	p, err := New(srv, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	r := httprouter.New()
	p.Routes(r)
	return r
}

func get(t *testing.T, h http.Handler, path string, header map[string]string) *httptest.ResponseRecorder {
	t.Helper()
	req := httptest.NewRequest(http.MethodGet, path, nil)
	for k, v := range header {
		req.Header.Set(k, v)
	}
	w := httptest.NewRecorder()
	h.ServeHTTP(w, req)
	return w
}

// TestClientIsSmallAndCacheable: /herald.js is JavaScript, at most 8 KB
// gzipped (as served: not even minified), revalidated by its ETag; its
// type declarations are served beside it.
func TestClientIsSmallAndCacheable(t *testing.T) {
	t.Parallel()
	h := newPages(t, server.Config{APIKey: "web-test-api-key-0123456789"})
	plain := get(t, h, "/herald.js", nil)
	if plain.Code != 200 || !strings.HasPrefix(plain.Header().Get("Content-Type"), "text/javascript") || !strings.Contains(plain.Body.String(), "Herald") {
		t.Fatalf("GET /herald.js: %d %q", plain.Code, plain.Header().Get("Content-Type"))
	}
	gz := get(t, h, "/herald.js", map[string]string{"Accept-Encoding": "gzip"})
	if gz.Header().Get("Content-Encoding") != "gzip" || gz.Body.Len() > 8<<10 {
		t.Fatalf("gzipped client: %q, %d bytes (budget 8 KiB)", gz.Header().Get("Content-Encoding"), gz.Body.Len())
	}
	zr, err := gzip.NewReader(bytes.NewReader(gz.Body.Bytes()))
	if err != nil {
		t.Fatal(err)
	}
	if b, _ := io.ReadAll(zr); !bytes.Equal(b, plain.Body.Bytes()) {
		t.Fatal("the gzipped client is not the client")
	}
	etag := plain.Header().Get("ETag")
	if etag == "" || !strings.Contains(plain.Header().Get("Cache-Control"), "max-age") {
		t.Fatalf("caching headers %v", plain.Header())
	}
	if w := get(t, h, "/herald.js", map[string]string{"If-None-Match": etag}); w.Code != http.StatusNotModified || w.Body.Len() != 0 {
		t.Fatalf("revalidation: %d, %d bytes", w.Code, w.Body.Len())
	}
	if w := get(t, h, "/herald.d.ts", nil); w.Code != 200 || !strings.Contains(w.Body.String(), "export function connect") {
		t.Fatalf("GET /herald.d.ts: %d", w.Code)
	}
}

// TestPagesAreServed: /demo and /admin are HTML with a policy that keeps
// them to their own origin; their assets are served; a path that is not
// a page is a JSON 404.
func TestPagesAreServed(t *testing.T) {
	t.Parallel()
	h := newPages(t, server.Config{APIKey: "web-test-api-key-0123456789"})
	for _, tc := range []struct{ path, ctype, has string }{
		{"/demo", "text/html", `src="/herald.js"`},
		{"/demo/demo.js", "text/javascript", "Herald.connect"},
		{"/demo/demo.css", "text/css", "--accent"},
		{"/admin", "text/html", `src="/admin/admin.js"`},
		{"/admin/admin.js", "text/javascript", "/api/metrics"},
		{"/admin/admin.css", "text/css", ".cards"},
	} {
		w := get(t, h, tc.path, nil)
		if w.Code != 200 || !strings.HasPrefix(w.Header().Get("Content-Type"), tc.ctype) || !strings.Contains(w.Body.String(), tc.has) {
			t.Errorf("GET %s: %d %q", tc.path, w.Code, w.Header().Get("Content-Type"))
		}
		if tc.ctype == "text/html" && !strings.Contains(w.Header().Get("Content-Security-Policy"), "default-src 'self'") {
			t.Errorf("GET %s: CSP %q", tc.path, w.Header().Get("Content-Security-Policy"))
		}
	}
	w := get(t, h, "/demo/nothing.js", nil)
	var body struct {
		Error struct {
			Code    int    `json:"code"`
			Message string `json:"message"`
		} `json:"error"`
	}
	if err := json.Unmarshal(w.Body.Bytes(), &body); err != nil || w.Code != 404 || !strings.Contains(body.Error.Message, "/demo/nothing.js") {
		t.Fatalf("GET /demo/nothing.js: %d %s", w.Code, w.Body.String())
	}
}

// TestDemoTokensInDevModeOnly: the demo gets a user token for a name in
// dev mode; elsewhere the answer says to bring one; bad names are named.
func TestDemoTokensInDevModeOnly(t *testing.T) {
	t.Parallel()
	post := func(h http.Handler, body string) *httptest.ResponseRecorder {
		req := httptest.NewRequest(http.MethodPost, "/demo/token", strings.NewReader(body))
		w := httptest.NewRecorder()
		h.ServeHTTP(w, req)
		return w
	}
	secret := "web-test-jwt-secret-0123456789abcdef"
	dev := newPages(t, server.Config{Dev: true, APIKey: "web-test-api-key-0123456789", JWTSecret: secret})
	w := post(dev, `{"user":"alice"}`)
	var tok struct{ Token, User string }
	if err := json.Unmarshal(w.Body.Bytes(), &tok); err != nil || w.Code != 200 || tok.User != "alice" || strings.Count(tok.Token, ".") != 2 {
		t.Fatalf("dev token: %d %s", w.Code, w.Body.String())
	}
	for body, want := range map[string]string{`{"user":"a b"}`: `user \"a b\"`, `{"name":"x"}`: "unknown field", `{"user":""}`: `user \"\"`} {
		if w := post(dev, body); w.Code != 400 || !strings.Contains(w.Body.String(), want) {
			t.Errorf("%s: %d %s, want a 400 naming %s", body, w.Code, w.Body.String(), want)
		}
	}
	prod := newPages(t, server.Config{APIKey: "web-test-api-key-0123456789", JWTSecret: secret})
	if w := post(prod, `{"user":"alice"}`); w.Code != 404 || !strings.Contains(w.Body.String(), "dev mode only") {
		t.Fatalf("outside dev mode: %d %s", w.Code, w.Body.String())
	}
}
