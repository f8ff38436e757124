package httpapi

import (
	"context"
	"io"
	"net/http"
	"runtime"
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
	// Go's runtime and process metrics (the README promises them), and
	// on Linux the resident memory by kind.
	want := []string{"\ngo_goroutines ", "\nprocess_cpu_seconds_total "}
	if runtime.GOOS == "linux" {
		want = append(want, "\nherald_process_resident_memory_bytes{kind=\"anon\"} ", "\nherald_process_resident_memory_bytes{kind=\"file\"} ")
	}
	for _, m := range want {
		if !strings.Contains(body, m) {
			t.Errorf("metrics lack %q", strings.TrimSpace(m))
		}
	}
}

// TestMetricsCountLifeEventsBeforeTheScrape: sessions opened and closed
// and moderation actions are counted from the core's life events; a
// scrape right after them shows them all.
func TestMetricsCountLifeEventsBeforeTheScrape(t *testing.T) {
	t.Parallel()
	f := newAPI(t, server.Config{Dev: true})
	for range 3 {
		openSession(t, f.srv, []string{"a"}).Close(server.ReasonClientGone)
	}
	held := openSession(t, f.srv, []string{"a"})
	defer held.Close(server.ReasonClientGone)
	if _, err := f.srv.Moderation().Disconnect("18"); err != nil {
		t.Fatal(err)
	}
	if _, err := f.srv.Moderation().Ban(context.Background(), "18", time.Hour); err != nil {
		t.Fatal(err)
	}
	code, _, body := f.call(t, "GET", "/metrics", "", "", nil)
	if code != 200 {
		t.Fatalf("metrics: %d %s", code, body)
	}
	for _, line := range []string{
		`herald_sessions_opened_total{transport="test"} 4`,
		`herald_sessions_closed_total{reason="client_gone",transport="test"} 3`,
		`herald_sessions{transport="test"} 1`,
		`herald_moderation_total{action="disconnect"} 1`,
		`herald_moderation_total{action="ban"} 1`,
		`herald_observer_events_dropped_total{observer="metrics"} 0`,
	} {
		if !strings.Contains(body, "\n"+line+"\n") {
			t.Errorf("metrics lack %s", line)
		}
	}
}

func TestParseProcMem(t *testing.T) {
	t.Parallel()
	const status = "Name:\therald\nVmRSS:\t  120 kB\nRssAnon:\t   100 kB\nRssFile:\t    15 kB\nRssShmem:\t     5 kB\nThreads:\t9\n"
	for _, c := range []struct {
		name, status, err string
		want              [3]float64
	}{
		{name: "all three", status: status, want: [3]float64{100 << 10, 15 << 10, 5 << 10}},
		{name: "a field missing", status: strings.Replace(status, "RssShmem", "Other", 1), err: "no RssShmem: line"},
		{name: "not a number", status: strings.Replace(status, "15 kB", "x kB", 1), err: `"RssFile:\t    x kB"`},
		{name: "another unit", status: strings.Replace(status, "15 kB", "15 MB", 1), err: "want a number of kB"},
		{name: "empty", status: "", err: "no RssAnon: line"},
	} {
		t.Run(c.name, func(t *testing.T) {
			got, err := parseProcMem([]byte(c.status))
			if c.err != "" {
				if err == nil || !strings.Contains(err.Error(), c.err) {
					t.Fatalf("err %v, want one with %q", err, c.err)
				}
				return
			}
			if err != nil || got != c.want {
				t.Fatalf("got %v, %v; want %v", got, err, c.want)
			}
		})
	}
	if newProcMem("/nonexistent/status") != nil {
		t.Error("a collector for a status file that is not there")
	}
}
