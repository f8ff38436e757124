package e2e

// Flow control end to end: publish rate limits under a flood, the
// per-connection op limit, slow readers among many, batching on every
// transport, broadcasts to users, moderation (disconnect, ban) and the
// per-user connection limit — each against a real herald serve process,
// over the wire, as clients see it (flow_*_test.go).
//
// Besides the drivers (drivers_test.go), these tests use raw clients where
// the drivers hide what is being checked (flow_clients_test.go): a raw SSE
// client that sees the chunked framing (one chunk per server write, so
// batching is visible) and can stall with a tiny receive buffer, a raw
// WebSocket client that counts frames, raw polls that count answers, and a
// pipelining HTTP flooder.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// --- helpers ---

// startFlowServer starts a server with yaml as its configuration file.
func startFlowServer(t *testing.T, yaml string) *server {
	t.Helper()
	return startServer(t, "--config", writeConfig(t, yaml))
}

// rcvBufControl makes a dialer set the socket's receive buffer before it
// connects (so the TCP window it advertises is small from the start).
func rcvBufControl(size int) func(network, address string, rc syscall.RawConn) error {
	return func(_, _ string, rc syscall.RawConn) error {
		var serr error
		err := rc.Control(func(fd uintptr) {
			serr = setRcvBuf(fd, size)
		})
		return errors.Join(err, serr)
	}
}

// metricSample is one sample line of the Prometheus text format.
type metricSample struct {
	name   string
	labels map[string]string
	value  float64
}

// scrapeMetrics reads GET /metrics (with token as the bearer when set).
func scrapeMetrics(t testing.TB, base, token string) []metricSample {
	t.Helper()
	out, err := fetchMetrics(base, token)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// fetchMetrics is scrapeMetrics for any goroutine: it returns the error.
func fetchMetrics(base, token string) ([]metricSample, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, base+"/metrics", nil)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("GET /metrics: %w", err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != 200 {
		return nil, fmt.Errorf("GET /metrics: %d %s (%v)", resp.StatusCode, abbreviate(raw, 300), err)
	}
	var out []metricSample
	for _, line := range strings.Split(string(raw), "\n") {
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		sp := strings.LastIndexByte(line, ' ')
		if sp < 0 {
			continue
		}
		v, err := strconv.ParseFloat(line[sp+1:], 64)
		if err != nil {
			continue
		}
		s := metricSample{name: line[:sp], labels: map[string]string{}, value: v}
		if i := strings.IndexByte(s.name, '{'); i >= 0 {
			for _, kv := range strings.Split(strings.TrimSuffix(s.name[i+1:], "}"), ",") {
				k, val, ok := strings.Cut(kv, "=")
				if ok {
					s.labels[k] = strings.Trim(val, `"`)
				}
			}
			s.name = s.name[:i]
		}
		out = append(out, s)
	}
	return out, nil
}

// metricSum adds up the samples of name whose labels include labels.
func metricSum(samples []metricSample, name string, labels map[string]string) float64 {
	var sum float64
	for _, s := range samples {
		if s.name != name {
			continue
		}
		match := true
		for k, v := range labels {
			if s.labels[k] != v {
				match = false
				break
			}
		}
		if match {
			sum += s.value
		}
	}
	return sum
}

func metric(t testing.TB, base, token, name string, labels map[string]string) float64 {
	t.Helper()
	return metricSum(scrapeMetrics(t, base, token), name, labels)
}

// checkOffsets checks that got is exactly from..to, once each, in order.
func checkOffsets(t testing.TB, who string, got []uint64, from, to uint64) {
	t.Helper()
	if len(got) != int(to-from+1) {
		t.Errorf("%s: %d messages, want offsets %d..%d", who, len(got), from, to)
	}
	for i, off := range got {
		if off != from+uint64(i) {
			t.Errorf("%s: message #%d has offset %d, want %d (gap, duplicate or reorder); offsets %v", who, i+1, off, from+uint64(i), abbreviateOffsets(got))
			return
		}
	}
}

func abbreviateOffsets(offs []uint64) string {
	if len(offs) <= 40 {
		return fmt.Sprint(offs)
	}
	return fmt.Sprintf("%v … %v (%d)", offs[:20], offs[len(offs)-20:], len(offs))
}

// apiCall sends a JSON request with token and decodes a JSON answer into
// out (when not nil); it returns the status and the raw body.
func apiCall(t testing.TB, method, url, token string, body, out any) (int, []byte) {
	t.Helper()
	resp, raw := permReq(t, method, url, token, body)
	if out != nil && resp.StatusCode == 200 {
		if err := json.Unmarshal(raw, out); err != nil {
			t.Fatalf("%s %s: answer %s: %v", method, url, abbreviate(raw, 300), err)
		}
	}
	return resp.StatusCode, raw
}

// errorOf decodes {"error":{…}}, failing the test when raw is anything else.
type apiError struct {
	Code       int    `json:"code"`
	Message    string `json:"message"`
	Channel    string `json:"channel"`
	RetryAfter int    `json:"retry_after"`
}

func errorOf(t testing.TB, raw []byte) apiError {
	t.Helper()
	var body struct {
		Error *apiError `json:"error"`
	}
	if err := json.Unmarshal(raw, &body); err != nil || body.Error == nil {
		t.Fatalf("answer %s: want a JSON error body", abbreviate(raw, 300))
	}
	return *body.Error
}
