package bench

import (
	"bufio"
	"bytes"
	"encoding/json"
	"math"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/heraldrt/herald/internal/cli"
	"github.com/heraldrt/herald/server"
	"github.com/heraldrt/herald/store"
)

const benchTestJWTSecret = "bench-test-jwt-secret-0123456789abcdef"

func TestBenchFloodFlags(t *testing.T) {
	t.Parallel()
	noEnv := func(string) string { return "" }
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{}, "--jwt-secret is required"},
		{[]string{"--jwt-secret", "s", "--rate", "0"}, "--rate 0"},
		{[]string{"--jwt-secret", "s", "--transport", "pigeon"}, "use mixed, sse, ws or poll"},
		{[]string{"--jwt-secret", "s", "--flood-connections", "0"}, "--flood-connections 0"},
		{[]string{"--jwt-secret", "s", "--flood-window", "0"}, "--flood-window 0"},
		{[]string{"--jwt-secret", "s", "--baseline", "0s"}, "--baseline 0s"},
		{[]string{"--jwt-secret", "s", "--subscribers", "0"}, "--subscribers 0"},
	} {
		_, err := parseBenchFlags("flood", c.args, noEnv, &bytes.Buffer{})
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("flood %v: %v, want an error naming %q", c.args, err, c.want)
		}
	}
	// mixed is the flood's alone.
	if _, err := parseBenchFlags("fanout", []string{"--transport", "mixed"}, noEnv, &bytes.Buffer{}); err == nil {
		t.Error("fanout --transport mixed accepted")
	}

	// The defaults, and the secret from the environment, kept out of the
	// report's flags.
	env := func(k string) string {
		if k == cli.EnvJWTSecret {
			return benchTestJWTSecret
		}
		return ""
	}
	o, err := parseBenchFlags("flood", nil, env, &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	if o.transport != "mixed" || o.subscribers != 100 || o.publishers != 1 || o.rate != 50 ||
		o.floodConns != 8 || o.floodWindow != 64 || o.baseline != 5*time.Second || o.duration != 10*time.Second ||
		o.jwtSecret != benchTestJWTSecret || !strings.HasPrefix(o.channel, "bench.flood.") || o.channelName(3) != o.channel {
		t.Errorf("defaults %+v", o)
	}
	for _, k := range []string{"token", "jwt-secret"} {
		if _, ok := o.flags[k]; ok {
			t.Errorf("the report's flags hold %s", k)
		}
	}
	// mixed: 40 % SSE, 40 % WebSocket, 20 % long polling.
	n := map[string]int{}
	for i := range 100 {
		n[benchSubTransport("mixed", i)]++
	}
	if n["sse"] != 40 || n["ws"] != 40 || n["poll"] != 20 || benchSubTransport("ws", 4) != "ws" {
		t.Errorf("mixed transports %v", n)
	}
}

func TestBenchFloodAnswers(t *testing.T) {
	t.Parallel()
	// Pipelined answers as the server writes them, read one by one.
	answer := func(status, headers, body string) string {
		return "HTTP/1.1 " + status + "\r\n" + headers + "Content-Length: " + strconv.Itoa(len(body)) + "\r\n\r\n" + body
	}
	answers := answer("200 OK", "Content-Type: application/json\r\n", `{"channel":"bench.flood.x","offset":7,"epoch":"e","id":"m_1"}`) +
		answer("429 Too Many Requests", "Retry-After: 1\r\n",
			`{"error":{"code":429,"message":"publishing to channel \"bench.flood.x\" is limited to 100 per 1s","channel":"bench.flood.x","retry_after":1}}`) +
		answer("429 Too Many Requests", "Retry-After: 1\r\n",
			`{"error":{"code":429,"message":"user \"bench-flood-abuser\" has 64 requests in flight, the limit is 64","retry_after":1}}`) +
		answer("429 Too Many Requests", "", `{"error":{"code":429,"message":"no retry_after, no header"}}`) +
		answer("500 Internal Server Error", "", `{}`)
	br := bufio.NewReader(strings.NewReader(answers))
	var c benchAbuseCount
	var buf []byte
	for i := range 5 {
		code, retry, body, err := ReadHTTPAnswer(br, &buf)
		if err != nil {
			t.Fatalf("answer %d: %v", i+1, err)
		}
		c.tally(code, retry, body)
	}
	if _, _, _, err := ReadHTTPAnswer(br, &buf); err == nil {
		t.Error("read past the last answer")
	}
	if c.attempts != 5 || c.accepted != 1 || c.maxOffset != 7 || c.byRule != 1 || c.inFlight != 2 ||
		c.noRetryAfter != 1 || c.other[500] != 1 || !strings.Contains(c.sample, "429") {
		t.Errorf("tally %+v", c)
	}
	limit, window, ok := benchParseLimit(c.ruleMessage)
	if !ok || limit != 100 || window != time.Second {
		t.Errorf("limit from %q: %d per %s (%v)", c.ruleMessage, limit, window, ok)
	}
	if _, _, ok := benchParseLimit(`{"error":{"code":429}}`); ok {
		t.Error("a limit found where there is none")
	}
	// The bucket and its refill: 100 + 100/s × 2.5 s; 60 per minute over 90 s.
	if got := benchMaxAccepted(100, time.Second, 2500*time.Millisecond); got != 350 {
		t.Errorf("max accepted %d, want 350", got)
	}
	if got := benchMaxAccepted(60, time.Minute, 90*time.Second); got != 150 {
		t.Errorf("max accepted %d, want 150", got)
	}
	// A status line that is not HTTP/1.1, and an answer that closes.
	for _, bad := range []string{"HTTP/1.0 200 OK\r\n\r\n", "HTTP/1.1 429 Too Many Requests\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"} {
		if _, _, _, err := ReadHTTPAnswer(bufio.NewReader(strings.NewReader(bad)), &buf); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

// TestBenchFloodReport: the table names what the flood did, the JSON line
// carries it, and a broken promise of the limiter fails the run.
func TestBenchFloodReport(t *testing.T) {
	t.Parallel()
	lat := func(p50, p99 float64) benchLatency {
		return benchLatency{Count: 10, P50: p50, P90: p99, P99: p99, P999: p99, Max: p99}
	}
	res := &benchResult{Workload: "flood", Transport: "mixed", Subscribers: 100, Publishers: 1, Rate: 50, PublishVia: "api", Payload: 200,
		WindowSeconds: 10, Delivered: 1000, DeliveredPerSec: 100, Latency: lat(21000, 84000), AckLatency: lat(900, 5000), DrainComplete: true,
		Flood: &benchFloodResult{
			Abuser: benchAbuseResult{Connections: 8, Window: 64, Seconds: 10, Attempts: 410000, Accepted: 1100, Refused: 408900,
				RefusedByRule: 400000, RefusedInFlight: 8900, AttemptsPerSec: 41000, AcceptedPerSec: 110, RefusedPerSec: 40890, RefusedPercent: 99.7},
			Limit:           &benchFloodLimit{Limit: 100, Window: "1s", MaxAccepted: 1101},
			BaselineSeconds: 5, BaselineLatency: lat(14000, 35000), BaselineAckLatency: lat(800, 3000),
			ByTransport: map[string]benchFloodLatencies{"poll": {lat(15000, 40000), lat(30000, 90000)}, "sse": {lat(14000, 35000), lat(21000, 84000)}},
		}}
	var out bytes.Buffer
	if err := writeBenchReport(&out, res); err != nil {
		t.Fatal(err)
	}
	table := out.String()
	spaced := strings.Join(strings.Fields(table), " ") // the table's columns, one space apart
	for _, want := range []string{
		"herald bench flood — mixed, 1 channel, 100 subscribers",
		"410,000 requests in 10.00 s = 41,000/s over 8 connections",
		"408,900 refused with 429 = 40,890/s (99.7 %: 400,000 by the rule, 8,900 at the in-flight cap), 1,100 accepted",
		"rule: 100 per 1s, so at most 1,101 accepted",
		"every 429 with retry_after and Retry-After",
		"latency, baseline p50 14.00ms",
		"latency, flood p50 21.00ms",
		"poll baseline p50 15.00ms p99 40.00ms → flood p50 30.00ms p99 90.00ms",
	} {
		if !strings.Contains(spaced, want) {
			t.Errorf("the table lacks %q:\n%s", want, table)
		}
	}
	lines := strings.Split(strings.TrimSpace(table), "\n")
	var back benchResult
	if err := json.Unmarshal([]byte(lines[len(lines)-1]), &back); err != nil || back.Flood == nil ||
		back.Flood.Abuser.RefusedByRule != 400000 || back.Flood.ByTransport["sse"].Flood.P99 != 84000 {
		t.Errorf("JSON line %s: %v", lines[len(lines)-1], err)
	}
	if err := res.verdict(); err != nil {
		t.Errorf("verdict %v, want none", err)
	}

	// One accepted too many, a 429 without retry_after, a 500: each named.
	res.Flood.Abuser.Accepted = 1102
	res.Flood.Abuser.NoRetryAfter = 3
	res.Flood.Abuser.Other = map[string]int64{"500": 1}
	err := res.verdict()
	for _, want := range []string{"1102 publishes accepted", "more than the limit of 100 per 1s allows (1101)", "3 refusals without retry_after", "500:1"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("verdict %v, want it to name %q", err, want)
		}
	}
}

// TestBenchFloodSmoke runs the workload against a real core whose rule
// limits the channel: it asserts what the limiter guarantees whatever the
// speed (at most the bucket plus the rate accepted, every refusal a
// proper 429, nothing lost), not how fast anything went.
func TestBenchFloodSmoke(t *testing.T) {
	t.Parallel()
	base := benchTestServer(t, server.Config{JWTSecret: benchTestJWTSecret, Rules: []server.RuleConfig{{
		Pattern: "bench.flood.*", Subscribe: []string{"authenticated"}, Publish: []string{"authenticated"},
		RateLimit: &server.RateLimitConfig{Limit: 100, Window: time.Second}}}}, store.Options{})
	key := "bench-test-api-key-0123456789"
	res, report, err := runBenchJSON(t, "flood", "--server", base, "--token", key, "--jwt-secret", benchTestJWTSecret,
		"--subscribers", "10", "--rate", "20", "--warmup", "100ms", "--baseline", "1s", "--duration", "1s",
		"--flood-connections", "2", "--flood-window", "16", "--drain", "60s", "--quiet")
	if err != nil {
		t.Fatalf("%v\n%s", err, report)
	}
	checkBenchExact(t, res, report)
	f := res.Flood
	if f == nil || res.Subscribers != 10 || res.Transport != "mixed" {
		t.Fatalf("no flood result\n%s", report)
	}
	a := f.Abuser
	// The first publish finds the bucket full and nothing in flight.
	if a.Attempts < 1 || a.Accepted < 1 || a.Attempts != a.Accepted+a.Refused || a.NoRetryAfter != 0 || len(a.Other) != 0 || len(a.Errors) != 0 {
		t.Errorf("abuser %+v\n%s", a, report)
	}
	if maxOK := 100 + int64(math.Ceil(100*a.Seconds)); a.Accepted > maxOK {
		t.Errorf("%d accepted in %.3f s, want at most %d\n%s", a.Accepted, a.Seconds, maxOK, report)
	}
	if a.RefusedByRule > 0 && (f.Limit == nil || f.Limit.Limit != 100 || f.Limit.Window != "1s") {
		t.Errorf("limit %+v from the refusals\n%s", f.Limit, report)
	}
	// The good publisher's messages before the flood, on every transport.
	if f.BaselineLatency.Count == 0 || len(f.ByTransport) != 3 || f.ByTransport["poll"].Baseline.Count == 0 {
		t.Errorf("baseline %+v by transport %+v\n%s", f.BaselineLatency, f.ByTransport, report)
	}
}
