package httpapi

import (
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/heraldrt/herald/server"
)

func TestMetricsCountRefusalsAndNeedTheirToken(t *testing.T) {
	t.Parallel()
	f := newAPI(t, server.Config{MetricsToken: "metrics-token", Rules: []server.RuleConfig{{Pattern: "r", Publish: []string{"authenticated"},
		RateLimit: &server.RateLimitConfig{Limit: 1, Window: time.Hour}}}})
	tok, _ := server.MintToken(testSecret, server.Claims{RegisteredClaims: registered("17")})
	for i := 0; i < 3; i++ {
		f.call(t, "POST", "/api/publish", tok, `{"channel":"r","data":1}`, nil)
	}
	get := func(auth string) (int, string) {
		req, _ := http.NewRequest("GET", f.hs.URL+"/metrics", nil)
		if auth != "" {
			req.Header.Set("Authorization", "Bearer "+auth)
		}
		resp, err := f.hs.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, _ := get(""); code != 401 {
		t.Fatalf("metrics without the token: %d", code)
	}
	code, body := get("metrics-token")
	if code != 200 || !strings.Contains(body, `herald_rate_limited_total{kind="publish"} 2`) ||
		!strings.Contains(body, "herald_messages_published_total 1") {
		t.Fatalf("metrics: %d\n%s", code, body)
	}
	// Go's runtime and process metrics (the README promises them).
	for _, m := range []string{"\ngo_goroutines ", "\nprocess_cpu_seconds_total "} {
		if !strings.Contains(body, m) {
			t.Errorf("metrics lack %q", strings.TrimSpace(m))
		}
	}
}
