package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"math"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/julienschmidt/httprouter"

	"github.com/heraldrt/herald/internal/cli"
	"github.com/heraldrt/herald/server"
	"github.com/heraldrt/herald/server/servertest"
	"github.com/heraldrt/herald/store"
	"github.com/heraldrt/herald/transports/longpoll"
	"github.com/heraldrt/herald/transports/sse"
	"github.com/heraldrt/herald/transports/ws"
)

func TestBenchHistogramPercentiles(t *testing.T) {
	t.Parallel()
	h := newBenchHist()
	// 1 µs … 100 ms in 1 µs steps: the q-quantile is q·100 ms.
	const n = 100_000
	for i := 1; i <= n; i++ {
		h.record(int64(i) * 1000)
	}
	for _, q := range []float64{0.5, 0.9, 0.99, 0.999} {
		want := q * n * 1000
		got := float64(h.quantile(q))
		if got < want || got > want*(1+1.0/32)+128 {
			t.Errorf("quantile %v = %.0f ns, want %.0f ns within one bucket above", q, got, want)
		}
	}
	if h.quantile(1) != n*1000 || h.max != n*1000 || h.min != 1000 {
		t.Errorf("max %d, quantile(1) %d, min %d", h.max, h.quantile(1), h.min)
	}
	if m := h.mean(); math.Abs(m-float64(n+1)/2*1000) > 1 {
		t.Errorf("mean %.1f", m)
	}
	s := h.summary()
	if s.Count != n || s.P50 < 50_000 || s.P50 > 51_600 || s.Max != 100_000 {
		t.Errorf("summary %+v", s)
	}

	// Merging the halves gives the whole.
	a, b := newBenchHist(), newBenchHist()
	for i := 1; i <= n; i++ {
		if i%2 == 0 {
			a.record(int64(i) * 1000)
		} else {
			b.record(int64(i) * 1000)
		}
	}
	a.merge(b)
	a.merge(nil)
	for _, q := range []float64{0.5, 0.99} {
		if a.quantile(q) != h.quantile(q) {
			t.Errorf("merged quantile %v = %d, whole %d", q, a.quantile(q), h.quantile(q))
		}
	}

	// Two clusters: the median is in the first, p99 in the second.
	c := newBenchHist()
	for range 980 {
		c.record(200_000) // 200 µs
	}
	for range 20 {
		c.record(40_000_000) // 40 ms
	}
	if p50 := c.quantile(0.5); p50 < 200_000 || p50 > 207_000 {
		t.Errorf("p50 %d", p50)
	}
	if p99 := c.quantile(0.99); p99 != 40_000_000 {
		t.Errorf("p99 %d, want the maximum 40 ms (capped)", p99)
	}
	// Beyond the range: the last bucket, the exact maximum kept.
	c.record(int64(10 * time.Minute))
	if c.quantile(1) != int64(10*time.Minute) {
		t.Errorf("max beyond the range: %d", c.quantile(1))
	}
	if newBenchHist().quantile(0.5) != 0 {
		t.Error("empty histogram")
	}
}

func TestBenchHistogramBuckets(t *testing.T) {
	t.Parallel()
	// Buckets are contiguous, each value falls in its bucket, and no bucket
	// is wider than 1/32 of its value above the linear range.
	var next int64
	for i := range benchHistBuckets {
		low, width := benchBucketBounds(i)
		if low != next {
			t.Fatalf("bucket %d starts at %d, want %d", i, low, next)
		}
		if got := benchBucketOf(low); got != i {
			t.Fatalf("value %d in bucket %d, want %d", low, got, i)
		}
		if got := benchBucketOf(low + width - 1); got != i {
			t.Fatalf("value %d in bucket %d, want %d", low+width-1, got, i)
		}
		if low >= 8192 && float64(width) > float64(low)/32 {
			t.Fatalf("bucket %d: width %d at %d", i, width, low)
		}
		next = low + width
	}
	if next < int64(benchHistMax) {
		t.Fatalf("buckets end at %d, below %d", next, benchHistMax)
	}
	if benchBucketOf(-5) != 0 {
		t.Fatal("negative value")
	}
}

// Envelope bytes exactly as a Herald server sends them (captured from
// `herald serve`).
const (
	benchEnv1 = `{"channel":"bench.x","offset":1,"epoch":"37b6c7998e01","id":"m_01M8CMF7T7HMZG41KYZ2A4RGCZ","event":"bench","data":{"t":1764175940123456789,"p":"xxxxxxxx"},"time":"2026-11-26T19:14:13.959Z"}`
	benchEnv2 = `{"channel":"bench.x","offset":2,"epoch":"37b6c7998e01","id":"m_01M8CMF7TFAB2Z9J392M85T8FV","event":"bench","data":{"t":1764175940123456790,"p":"xxxxxxxx"},"time":"2026-11-26T19:14:13.967Z"}`
	benchEnv3 = `{"channel":"bench.x","offset":3,"epoch":"37b6c7998e01","id":"m_01M8CMFEPXAVAJBYQMA1860APW","event":"bench","data":{"t":1764175940123456791,"p":"yy"},"time":"2026-11-26T19:14:21.021Z","from":{"session":"s_GW7PIZCXYVQZ5W5XGRBPG6RY"}}`
	// Not a bench payload: no send time.
	benchEnvForeign = `{"channel":"bench.x","offset":4,"epoch":"37b6c7998e01","id":"m_01M8CMFF0H6GA4CYFEZPS6K2MQ","event":"message_sent","data":{"text":"a \"data\": {\"t\":5}"},"time":"2026-11-26T19:14:21.329Z"}`
	benchEnvReset   = `{"channel":"bench.x","epoch":"37b6c7998e01","id":"m_01M8CMFF0H6GA4CYFEZPS6K2MR","event":"herald.reset","data":{"reason":"trimmed","epoch":"37b6c7998e01","resume_after":900,"head":1900},"time":"2026-11-26T19:14:21.329Z"}`

	benchSSEStream = "retry: 2000\n\n" +
		"event: herald.connected\n" +
		`data: {"session":"s_MG4FD277DK6OTB6IN4VXVW76","channels":[{"channel":"bench.x","epoch":"37b6c7998e01","offset":0}]}` + "\n" +
		"id: AQFlOgPZ_XOjNwwzN2I2Yzc5OThlMDEAmupxiw\n\n" +
		"event: bench\ndata: " + benchEnv1 + "\nid: AQFlOgPZ_XOjNwwzN2I2Yzc5OThlMDEBaIHyiA\n\n" +
		":\n\n" +
		"event: bench\ndata: " + benchEnv2 + "\nid: AQFlOgPZ_XOjNwwzN2I2Yzc5OThlMDECe9EBfA\n\n"
)

type benchScanned struct {
	channel string
	offset  uint64
	t       int64
}

func benchScanAll(b []byte) []benchScanned {
	var out []benchScanned
	for p := 0; ; {
		e, next, ok := benchNextEnvelope(b, p)
		if !ok {
			return out
		}
		p = next
		out = append(out, benchScanned{string(e.channel), e.offset, e.t})
	}
}

func TestBenchScanEnvelopes(t *testing.T) {
	t.Parallel()
	want12 := []benchScanned{{"bench.x", 1, 1764175940123456789}, {"bench.x", 2, 1764175940123456790}}
	cases := []struct {
		name  string
		bytes string
		want  []benchScanned
	}{
		{"ws message", `{"type":"message","message":` + benchEnv1 + `}`, want12[:1]},
		{"ws batch", `{"type":"batch","messages":[` + benchEnv1 + `,` + benchEnv2 + `,` + benchEnv3 + `]}`,
			append(append([]benchScanned{}, want12...), benchScanned{"bench.x", 3, 1764175940123456791})},
		{"poll answer", `{"messages":[` + benchEnv1 + `,` + benchEnv2 + `],"cursor":"AQFlOgPZ_XOjNwwzN2I2Yzc5OThlMDECe9EBfA","session":"s_LXBAOCIH7SRZLUZR2LMAURHQ"}`, want12},
		{"foreign data", benchEnvForeign + benchEnv2, []benchScanned{{"bench.x", 4, 0}, {"bench.x", 2, 1764175940123456790}}},
		{"notice", benchEnvReset, []benchScanned{{"bench.x", 0, 0}}},
		{"nothing", `{"type":"connected","session":"s_x"}`, nil},
	}
	for _, c := range cases {
		got := benchScanAll([]byte(c.bytes))
		if len(got) != len(c.want) {
			t.Errorf("%s: got %+v, want %+v", c.name, got, c.want)
			continue
		}
		for i := range got {
			if got[i] != c.want[i] {
				t.Errorf("%s: envelope %d = %+v, want %+v", c.name, i, got[i], c.want[i])
			}
		}
	}
	if ev := benchEnvelopeEvent([]byte(benchEnvReset)); string(ev) != "herald.reset" {
		t.Errorf("notice event %q", ev)
	}

	msgs, cursor, session, ok := benchPollAnswer([]byte(`{"messages":[` + benchEnv1 + `],"cursor":"AQE-Q6","session":"s_P3XK"}` + "\n"))
	if !ok || string(cursor) != "AQE-Q6" || string(session) != "s_P3XK" || len(benchScanAll(msgs)) != 1 {
		t.Errorf("poll answer: ok %v cursor %q session %q", ok, cursor, session)
	}
	if _, _, _, ok := benchPollAnswer([]byte(`{"error":{"code":400}}`)); ok {
		t.Error("an error body read as an answer")
	}

	kinds := map[string]int{
		`{"type":"message","message":{}}`:          benchWSMessage,
		`{"type":"batch","messages":[]}`:           benchWSMessage,
		`{"id":1,"ok":true,"channel":"bench.x"}`:   benchWSReply,
		`{"type":"connected","session":"s_x"}`:     benchWSConnected,
		`{"type":"disconnect","code":4009}`:        benchWSDisconnect,
		`{"type":"reset","message":{}}`:            benchWSReset,
		`{"type":"skip","channel":"a","offset":3}`: benchWSSkip,
		`{"type":"unsubscribed","channel":"a"}`:    benchWSUnsubscribed,
		`{"type":"presence","channel":"a"}`:        benchWSOther,
	}
	for frame, want := range kinds {
		if got := benchWSKind([]byte(frame)); got != want {
			t.Errorf("kind of %s = %d, want %d", frame, got, want)
		}
	}
	if v, ok := benchUintField([]byte(`{"id":7,"ok":true,"channel":"a","offset":43,"epoch":"e"}`), benchKeyOffsetQ); !ok || v != 43 {
		t.Errorf("reply offset %d %v", v, ok)
	}
}

func TestBenchScanSSE(t *testing.T) {
	t.Parallel()
	b := []byte(benchSSEStream)
	var events []benchSSEEvent
	used := 0
	for {
		ev, n, ok := benchNextSSEEvent(b[used:])
		if !ok {
			break
		}
		used += n
		events = append(events, ev)
	}
	if used != len(b) || len(events) != 5 {
		t.Fatalf("%d events using %d of %d bytes", len(events), used, len(b))
	}
	if events[0].data != nil || events[0].hasID {
		t.Errorf("retry block %+v", events[0])
	}
	if c := events[1]; c.kind != benchSSEConnected || string(c.id) != "AQFlOgPZ_XOjNwwzN2I2Yzc5OThlMDEAmupxiw" {
		t.Errorf("connected %+v", c)
	}
	if head, ok := benchUintField(events[1].data, benchKeyOffsetQ); !ok || head != 0 {
		t.Errorf("connected head %d %v", head, ok)
	}
	if m := events[2]; m.kind != benchSSEMessage || string(m.data) != benchEnv1 || string(m.id) != "AQFlOgPZ_XOjNwwzN2I2Yzc5OThlMDEBaIHyiA" {
		t.Errorf("message %+v", m)
	}
	if c := events[3]; c.data != nil || c.hasID {
		t.Errorf("comment %+v", c)
	}
	// A half-received event is left for the next read, whatever the cut.
	for cut := 1; cut < len(b); cut++ {
		n := 0
		for {
			_, m, ok := benchNextSSEEvent(b[n:cut])
			if !ok {
				break
			}
			n += m
		}
		if n > cut || (n < cut && bytes.HasSuffix(b[:cut], []byte("\n\n")) && cut > 1) {
			t.Fatalf("cut at %d: used %d", cut, n)
		}
	}
	if k := benchSSEKind([]byte("herald.disconnect")); k != benchSSEDisconnect {
		t.Errorf("disconnect kind %d", k)
	}
	if k := benchSSEKind([]byte("herald.presence")); k != benchSSEOtherNotice {
		t.Errorf("other notice kind %d", k)
	}

	// The subscriber's consumer, on the same bytes: base from
	// herald.connected, two messages, the last cursor kept.
	r := &benchRun{opts: benchOptions{transport: "sse"}}
	r.latFrom.Store(0)
	r.latTo.Store(math.MaxInt64)
	s := newBenchSub(r, 0, &benchChannel{name: "bench.x"}, "sse", 1024)
	confirmed := 0
	n, done, err := s.sseConsume(b, 1764175940123456789+5_000_000, func() { confirmed++ })
	if err != nil || done || n != len(b) || confirmed != 1 {
		t.Fatalf("consume: %d bytes, done %v, err %v, confirmed %d", n, done, err, confirmed)
	}
	if s.delivered.Load() != 2 || s.have.Load() != 2 || s.track.base != 0 || string(s.sseID) != "AQFlOgPZ_XOjNwwzN2I2Yzc5OThlMDECe9EBfA" {
		t.Errorf("delivered %d have %d base %d id %s", s.delivered.Load(), s.have.Load(), s.track.base, s.sseID)
	}
	if s.hist.n != 2 || s.hist.max != 5_000_000 || s.hist.min != 4_999_999 {
		t.Errorf("latencies: n %d min %d max %d", s.hist.n, s.hist.min, s.hist.max)
	}
	// A disconnect ends the connection with its reason.
	_, _, err = s.sseConsume([]byte("event: herald.disconnect\ndata: {\"reason\":\"slow_consumer\",\"reconnect\":true}\n\n"), 0, func() {})
	if err == nil || !strings.Contains(err.Error(), "slow_consumer") {
		t.Errorf("disconnect: %v", err)
	}
}

func TestBenchTrackAccounting(t *testing.T) {
	t.Parallel()
	tr := newBenchTrack(100)
	for _, off := range []uint64{101, 102, 104, 103, 103, 100, 99, 105, 107} {
		tr.add(off)
	}
	// 103 after 104: out of order; the second 103, and 100 and 99 (at or
	// below the start): duplicates; 106 and 108 never came.
	if tr.distinct != 6 || tr.dup != 3 || tr.reorder != 1 || tr.high != 107 {
		t.Errorf("distinct %d dup %d reorder %d high %d", tr.distinct, tr.dup, tr.reorder, tr.high)
	}
	if got := tr.lost(108); got != 2 {
		t.Errorf("lost up to 108: %d, want 2", got)
	}
	if got := tr.lost(105); got != 0 {
		t.Errorf("lost up to 105: %d", got)
	}
	if got := tr.lost(90); got != 0 {
		t.Errorf("lost below the base: %d", got)
	}
	if !tr.received(104) || tr.received(106) || !tr.received(50) {
		t.Error("received")
	}

	// Many offsets, across words: all there, then one missing per 1000.
	big := newBenchTrack(0)
	for off := uint64(1); off <= 100_000; off++ {
		if off%1000 != 0 {
			big.add(off)
		}
	}
	if got := big.lost(100_000); got != 100 || big.dup != 0 || big.reorder != 0 {
		t.Errorf("lost %d dup %d reorder %d", got, big.dup, big.reorder)
	}
	if got := big.lost(150_000); got != 50_100 {
		t.Errorf("lost beyond what came: %d", got)
	}
	// An absurd offset is not allocated for.
	big.add(1 << 40)
	if big.jump != 1 {
		t.Errorf("jump %d", big.jump)
	}
}

func TestBenchLoopbackGuard(t *testing.T) {
	t.Parallel()
	for _, s := range []string{"http://127.0.0.1:8080", "http://127.8.9.10", "http://localhost:1", "http://LOCALHOST", "http://[::1]:8080", "https://127.0.0.1/herald/", "http://[::ffff:127.0.0.1]:80"} {
		u, _ := url.Parse(s)
		if err := benchCheckLoopback(u); err != nil {
			t.Errorf("%s refused: %v", s, err)
		}
	}
	for _, s := range []string{"http://10.0.0.1:8080", "http://example.com", "http://128.0.0.1", "http://[::2]:80", "http://0.0.0.0:8080", "http://[fe80::1%25lo]:80", "http://localhost.example.com"} {
		u, _ := url.Parse(s)
		if err := benchCheckLoopback(u); err == nil {
			t.Errorf("%s accepted", s)
		}
	}
	var stdout, stderr bytes.Buffer
	err := Run(context.Background(), []string{"fanout", "--server", "http://192.168.1.5:8080"}, func(string) string { return "" }, &stdout, &stderr)
	if err == nil || !strings.Contains(err.Error(), "loopback") && !strings.Contains(err.Error(), "this machine") {
		t.Errorf("non-loopback --server: %v", err)
	}
	err = Run(context.Background(), []string{"fanout"}, func(k string) string {
		if k == cli.EnvURL {
			return "http://10.1.1.1"
		}
		return ""
	}, &stdout, &stderr)
	if err == nil {
		t.Error("non-loopback $HERALD_URL accepted")
	}
}

func TestBenchFlags(t *testing.T) {
	t.Parallel()
	env := func(string) string { return "" }
	for _, args := range [][]string{
		{"nosuch"},
		{"fanout", "--transport", "carrier-pigeon"},
		{"fanout", "--publish-via", "smoke"},
		{"fanout", "--subscribers", "0"},
		{"idle"}, // --server-pid is required
		{"resume", "--messages", "0"},
		{"fanout", "stray"},
		{"fanout", "--server", "https://127.0.0.1:8443"},
		{"fanout", "--batch", "0"},
		{"fanout", "--batch", "5", "--publish-via", "ws"},
		{"channels", "--window", "4"},
		{"fanout", "--window", "2000", "--publish-via", "ws"},
		{"fanout", "--server", "http://127.0.0.1:8080,http://192.0.2.1:8080"}, // a node off loopback
	} {
		if _, err := parseBenchFlags(args[0], args[1:], env, &bytes.Buffer{}); err == nil {
			t.Errorf("%v accepted", args)
		}
	}
	o, err := parseBenchFlags("channels", []string{"--channels", "3", "--token", "secret-key"}, env, &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	if o.channelName(2) != o.channel+".2" || !strings.HasPrefix(o.channel, "bench.channels.") {
		t.Errorf("channel names %q", o.channelName(2))
	}
	if _, ok := o.flags["token"]; ok {
		t.Error("the token is in the report's flags")
	}
	// A cluster's nodes: connections go to each in turn.
	o, err = parseBenchFlags("fanout", []string{"--server", "http://127.0.0.1:8081,http://127.0.0.1:8082"}, env, &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	u := newClusterURLs(o.base, o.nodes)
	var got []string
	for range 3 {
		got = append(got, u.node().hostPort)
	}
	if strings.Join(got, " ") != "127.0.0.1:8081 127.0.0.1:8082 127.0.0.1:8081" {
		t.Errorf("connections go to %v", got)
	}
}

func TestBenchProcSelf(t *testing.T) {
	t.Parallel()
	for _, pid := range []int{0, os.Getpid()} {
		s, err := benchReadProc(pid)
		if err != nil {
			t.Fatal(err)
		}
		if s.RSSKiB <= 0 || s.HWMKiB < s.RSSKiB || s.CPU < 0 || s.CPUs == "" {
			t.Errorf("pid %d: %+v", pid, s)
		}
	}
	cpu, err := benchParseStat([]byte("4242 (we (ird) name) S 1 4242 4242 0 -1 4194560 1000 0 0 0 250 75 0 0 20 0 3 0 100 1000000 500 18446744073709551615\n"))
	if err != nil || cpu != 3250*time.Millisecond {
		t.Errorf("stat with a tricky name: %v %v", cpu, err)
	}
	if _, err := benchParseStat([]byte("4242 (x) S 1 2")); err == nil {
		t.Error("short stat accepted")
	}
	st := benchParseStatus([]byte("Name:\therald\nVmHWM:\t  2048 kB\nVmRSS:\t  1024 kB\nCpus_allowed_list:\t0\n"))
	if st.RSSKiB != 1024 || st.HWMKiB != 2048 || st.CPUs != "0" {
		t.Errorf("status %+v", st)
	}
	io := benchParseIO([]byte("rchar: 10\nwchar: 20\nsyscr: 3\nsyscw: 4\n"))
	if io != (benchIO{ReadCalls: 3, WriteCalls: 4, ReadBytes: 10, WriteBytes: 20}) {
		t.Errorf("io %+v", io)
	}
	if _, err := benchReadProc(-1); err == nil {
		t.Error("no such process accepted")
	}
	if m := benchDescribeMachine(); m.CPUs < 1 || m.GoVersion == "" {
		t.Errorf("machine %+v", m)
	}
}

// benchTestServer is a real Herald core with the three transports on an
// httptest server.
func benchTestServer(t *testing.T, cfg server.Config, so store.Options) string {
	t.Helper()
	cfg.APIKey = "bench-test-api-key-0123456789"
	cfg.Logger = slog.New(slog.DiscardHandler)
	f := servertest.Start(t, cfg, so, func(srv *server.Server, r *httprouter.Router) func(context.Context) error {
		sh, err := sse.New(srv, sse.Options{})
		if err != nil {
			t.Fatal(err)
		}
		wh, err := ws.New(srv, ws.Options{})
		if err != nil {
			t.Fatal(err)
		}
		ph, err := longpoll.New(srv, longpoll.Options{})
		if err != nil {
			t.Fatal(err)
		}
		r.Handler(http.MethodGet, "/sse", sh)
		r.Handler(http.MethodGet, "/ws", wh)
		r.Handler(http.MethodGet, "/poll", ph)
		return func(ctx context.Context) error {
			return errors.Join(sh.Wait(ctx), wh.Wait(ctx))
		}
	})
	return f.HTTP.URL
}

// runBenchJSON runs the bench command and returns its JSON line.
func runBenchJSON(t *testing.T, args ...string) (benchResult, string, error) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	err := Run(context.Background(), args, func(string) string { return "" }, &stdout, &stderr)
	out := stdout.String()
	var res benchResult
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if last := lines[len(lines)-1]; strings.HasPrefix(last, "{") {
		if jerr := json.Unmarshal([]byte(last), &res); jerr != nil {
			t.Fatalf("JSON line: %v\n%s", jerr, last)
		}
	} else if err == nil {
		t.Fatalf("no JSON line:\n%s\nstderr:\n%s", out, stderr.String())
	}
	return res, out + "\nstderr:\n" + stderr.String(), err
}

func checkBenchExact(t *testing.T, res benchResult, report string) {
	t.Helper()
	if res.Lost != 0 || res.Duplicated != 0 || res.OutOfOrder != 0 || res.Errors != 0 {
		t.Errorf("lost %d dup %d reorder %d errors %d\n%s", res.Lost, res.Duplicated, res.OutOfOrder, res.Errors, report)
	}
}

// TestBenchSmoke runs every workload briefly against a real core. It
// asserts what holds at any speed: nothing lost, repeated or reordered,
// and every acknowledged message delivered (--drain waits until it is,
// so its long bound only stops a hang).
func TestBenchSmoke(t *testing.T) {
	t.Parallel()
	base := benchTestServer(t, server.Config{}, store.Options{})
	key := "bench-test-api-key-0123456789"
	pid := os.Getpid() // the server runs in this process
	for _, c := range []struct{ transport, via string }{{"sse", "api"}, {"ws", "api"}, {"poll", "api"}, {"ws", "ws"}} {
		t.Run("fanout/"+c.transport+"/"+c.via, func(t *testing.T) {
			t.Parallel()
			html := filepath.Join(t.TempDir(), "report.html")
			res, report, err := runBenchJSON(t, "fanout", "--server", base, "--token", key,
				"--transport", c.transport, "--publish-via", c.via, "--subscribers", "5", "--publishers", "2",
				"--warmup", "200ms", "--duration", "1s", "--drain", "60s", "--server-pid", strconv.Itoa(pid), "--html", html, "--quiet")
			if err != nil {
				t.Fatalf("%v\n%s", err, report)
			}
			checkBenchExact(t, res, report)
			if res.DeliveredPerSec <= 0 || res.AcksPerSec <= 0 || res.Latency.Count == 0 || !res.DrainComplete {
				t.Errorf("rates %v %v, latency %+v, drained %v\n%s", res.DeliveredPerSec, res.AcksPerSec, res.Latency, res.DrainComplete, report)
			}
			// Every acknowledged message reached all five subscribers.
			if res.Delivered > 5*res.Acks+5*2*10_000 || res.Server == nil || res.Server.PeakRSSKiB <= 0 {
				t.Errorf("delivered %d for %d acks; server %+v", res.Delivered, res.Acks, res.Server)
			}
			page, err := os.ReadFile(html)
			if err != nil || !bytes.Contains(page, []byte("<svg")) || bytes.Contains(page, []byte("<script")) || bytes.Contains(page, []byte(key)) {
				t.Errorf("HTML report: %v", err)
			}
		})
	}
	// Batches over the API and a window of ops over a WebSocket: messages
	// are acknowledged, and every acknowledged one is delivered (the drain
	// completes, none lost), once, in order. Acks and deliveries are each
	// counted over the measured window, so they need not be equal.
	for _, c := range []struct{ name, via, flag, n string }{{"batch", "api", "--batch", "10"}, {"window", "ws", "--window", "8"}} {
		t.Run("channels/"+c.name, func(t *testing.T) {
			t.Parallel()
			res, report, err := runBenchJSON(t, "channels", "--server", base, "--token", key, "--publish-via", c.via, c.flag, c.n,
				"--channels", "5", "--publishers", "2", "--warmup", "100ms", "--duration", "1s", "--drain", "60s", "--quiet")
			if err != nil {
				t.Fatalf("%v\n%s", err, report)
			}
			checkBenchExact(t, res, report)
			if res.Acks == 0 || res.Delivered == 0 || !res.DrainComplete {
				t.Errorf("%d acknowledged, %d delivered, drained %v\n%s", res.Acks, res.Delivered, res.DrainComplete, report)
			}
		})
	}
	t.Run("channels/sse", func(t *testing.T) {
		t.Parallel()
		res, report, err := runBenchJSON(t, "channels", "--server", base, "--token", key,
			"--channels", "7", "--publishers", "3", "--rate", "300", "--warmup", "100ms", "--duration", "1s", "--drain", "60s", "--quiet")
		if err != nil {
			t.Fatalf("%v\n%s", err, report)
		}
		checkBenchExact(t, res, report)
		if res.Channels != 7 || res.Subscribers != 7 || res.DeliveredPerSec <= 0 || res.AcksPerSec > 400 {
			t.Errorf("%+v\n%s", res, report)
		}
	})
	for _, transport := range []string{"sse", "ws", "poll"} {
		t.Run("resume/"+transport, func(t *testing.T) {
			t.Parallel()
			res, report, err := runBenchJSON(t, "resume", "--server", base, "--token", key,
				"--transport", transport, "--messages", "300", "--publishers", "4", "--quiet")
			if err != nil {
				t.Fatalf("%v\n%s", err, report)
			}
			checkBenchExact(t, res, report)
			if res.Resume == nil || !res.Resume.CaughtUp || res.Resume.Messages != 300 || res.Resume.ReceivedOfWant != 300 || res.Resume.CatchUpPerSec <= 0 {
				t.Errorf("resume %+v\n%s", res.Resume, report)
			}
		})
	}
	for _, transport := range []string{"ws", "mixed"} {
		t.Run("idle/"+transport, func(t *testing.T) {
			t.Parallel()
			res, report, err := runBenchJSON(t, "idle", "--server", base, "--token", key,
				"--transport", transport, "--connections", "20", "--channels", "3", "--hold", "0s", "--server-pid", strconv.Itoa(pid), "--quiet")
			if err != nil {
				t.Fatalf("%v\n%s", err, report)
			}
			if res.Idle == nil || res.Idle.Connections != 20 || res.Idle.RSSAfterKiB <= 0 {
				t.Errorf("idle %+v\n%s", res.Idle, report)
			}
		})
	}
}

// A resume the server's history does not cover fails, naming the fix.
func TestBenchResumeBeyondHistory(t *testing.T) {
	t.Parallel()
	// History off: offsets still count, nothing of the past is kept.
	base := benchTestServer(t, server.Config{History: server.HistoryConfig{RetentionConfig: server.RetentionConfig{Size: new(int)}}},
		store.Options{Retention: func(string) store.Retention { return store.Retention{} }})
	_, report, err := runBenchJSON(t, "resume", "--server", base, "--token", "bench-test-api-key-0123456789",
		"--messages", "100", "--publishers", "2", "--quiet")
	if err == nil || !strings.Contains(err.Error(), "history.size") {
		t.Errorf("err %v\n%s", err, report)
	}
}

func TestBenchParseUint(t *testing.T) {
	t.Parallel()
	for _, s := range []string{"0", "7", "42", "12345678", "123456789", "1764175940123456789", "18446744073709551615", "99999999", "10000000"} {
		want, _ := strconv.ParseUint(s, 10, 64)
		for _, tail := range []string{"", ",", "}", ":x", "/0123456789"} {
			v, n := benchParseUint([]byte(s + tail))
			if v != want || n != len(s) {
				t.Errorf("%q: %d (%d bytes), want %d (%d)", s+tail, v, n, want, len(s))
			}
		}
	}
	for i := uint64(0); i < 200_000; i++ {
		x := i * 92233720368547 // spread over the range
		s := strconv.FormatUint(x, 10)
		if v, n := benchParseUint([]byte(s + ",")); v != x || n != len(s) {
			t.Fatalf("%s: %d %d", s, v, n)
		}
	}
	if v, n := benchParseUint([]byte(",1")); v != 0 || n != 0 {
		t.Errorf("no digit: %d %d", v, n)
	}
}

func TestBenchSkipToData(t *testing.T) {
	t.Parallel()
	// The fast path and the search agree on real envelopes; odd shapes
	// fall back to the search.
	for _, env := range []string{benchEnv1, benchEnv3, benchEnvForeign,
		`{"channel":"a","offset":5,"epoch":"short","id":"m_1","event":"e","data":{"t":9}}`,
		`{"channel":"a","offset":5,"epoch":"37b6c7998e01","id":"m_01M8CMF7T7HMZG41KYZ2A4RGCZ","event":"x","dat":1,"data":{"t":9}}`} {
		e, _, ok := benchNextEnvelope([]byte(env), 0)
		i := strings.Index(env, `"data":`) + len(`"data":`)
		wantT, _ := benchParseUint([]byte(strings.TrimPrefix(env[i:], `{"t":`)))
		if !strings.HasPrefix(env[i:], `{"t":`) {
			wantT = 0
		}
		if !ok || e.t != int64(wantT) {
			t.Errorf("%s: t %d, want %d", env, e.t, wantT)
		}
	}
}

// benchFeed hands b to a reactor connection in pieces of the given sizes,
// as reads would, and returns the first end it reports.
func benchFeed(t *testing.T, c *benchRConn, b []byte, piece int) (done bool, err error) {
	t.Helper()
	for len(b) > 0 && !done && err == nil {
		n := min(piece, len(b))
		for len(c.sub.buf)-c.rn < n {
			c.sub.grow(c.rn)
		}
		c.rn += copy(c.sub.buf[c.rn:], b[:n])
		b = b[n:]
		if c.ws {
			done, err = c.processWS(1764175940123456789 + 1000)
		} else {
			done, err = c.processSSE(1764175940123456789 + 1000)
		}
	}
	return done, err
}

func benchTestSub() *benchSub {
	r := &benchRun{opts: benchOptions{transport: "sse"}}
	r.latFrom.Store(0)
	r.latTo.Store(math.MaxInt64)
	return newBenchSub(r, 0, &benchChannel{name: "bench.x"}, "sse", 64)
}

func TestBenchUnchunkSSE(t *testing.T) {
	t.Parallel()
	// The stream in uneven chunks, as net/http writes it, then the last
	// chunk.
	var chunked []byte
	stream := []byte(benchSSEStream)
	for i, size := 0, 1; i < len(stream); size = size*3 + 1 {
		n := min(size, len(stream)-i)
		chunked = append(chunked, []byte(strings.ToUpper(strconv.FormatInt(int64(n), 16))+"\r\n")...)
		chunked = append(chunked, stream[i:i+n]...)
		chunked = append(chunked, "\r\n"...)
		i += n
	}
	chunked = append(chunked, "0\r\n\r\n"...)
	for _, piece := range []int{1, 2, 3, 7, 64, 1000, len(chunked)} {
		s := benchTestSub()
		confirmed := 0
		c := newBenchRConn(s, false, true, func() { confirmed++ })
		done, err := benchFeed(t, c, chunked, piece)
		if done || err != errBenchStreamEnded || confirmed != 1 || s.delivered.Load() != 2 || s.track.distinct != 2 {
			t.Errorf("pieces of %d: done %v err %v confirmed %d delivered %d", piece, done, err, confirmed, s.delivered.Load())
		}
		if string(s.sseID) != "AQFlOgPZ_XOjNwwzN2I2Yzc5OThlMDECe9EBfA" || s.hist.n != 2 {
			t.Errorf("pieces of %d: id %s, latencies %d", piece, s.sseID, s.hist.n)
		}
	}
	// Not chunked (an HTTP/1.0-style body) works the same.
	s := benchTestSub()
	c := newBenchRConn(s, false, false, func() {})
	if _, err := benchFeed(t, c, stream, 5); err != nil || s.delivered.Load() != 2 {
		t.Errorf("unchunked: %v, %d", err, s.delivered.Load())
	}
	// A bad chunk header is an error.
	c = newBenchRConn(benchTestSub(), false, true, func() {})
	if _, err := benchFeed(t, c, []byte("zz\r\nhello\r\n"), 100); err == nil {
		t.Error("bad chunk header accepted")
	}
	for line, want := range map[string]int{"1a\r": 26, "FF;ext=1\r": 255, "0\r": 0, "10": 16} {
		if n, ok := benchParseHex([]byte(line)); !ok || n != want {
			t.Errorf("hex %q = %d %v", line, n, ok)
		}
	}
	if _, ok := benchParseHex([]byte("\r")); ok {
		t.Error("empty hex accepted")
	}
}

// benchServerFrame is a WebSocket frame as a server sends it (unmasked).
func benchServerFrame(fin bool, op byte, payload []byte) []byte {
	b0 := op
	if fin {
		b0 |= 0x80
	}
	f := []byte{b0}
	switch n := len(payload); {
	case n < 126:
		f = append(f, byte(n))
	case n < 1<<16:
		f = append(f, 126, byte(n>>8), byte(n))
	default:
		f = append(f, 127, 0, 0, 0, 0, byte(n>>24), byte(n>>16), byte(n>>8), byte(n))
	}
	return append(f, payload...)
}

func TestBenchWSFrames(t *testing.T) {
	t.Parallel()
	// A batch of 300 envelopes (> 64 KiB: a 127-length frame when whole),
	// sent in three fragments with a ping between them.
	var batch []byte
	batch = append(batch, `{"type":"batch","messages":[`...)
	for off := 1; off <= 300; off++ {
		if off > 1 {
			batch = append(batch, ',')
		}
		batch = append(batch, strings.Replace(benchEnv1, `"offset":1,`, `"offset":`+strconv.Itoa(off)+`,`, 1)...)
	}
	batch = append(batch, "]}"...)
	third := len(batch) / 3
	var stream []byte
	stream = append(stream, benchServerFrame(true, 1, []byte(`{"type":"connected","session":"s_x"}`))...)
	stream = append(stream, benchServerFrame(true, 1, []byte(`{"id":1,"ok":true,"channel":"bench.x","epoch":"37b6c7998e01","offset":0}`))...)
	stream = append(stream, benchServerFrame(false, 1, batch[:third])...)
	stream = append(stream, benchServerFrame(true, 9, []byte("hi"))...)
	stream = append(stream, benchServerFrame(false, 0, batch[third:2*third])...)
	stream = append(stream, benchServerFrame(true, 0, batch[2*third:])...)
	stream = append(stream, benchServerFrame(true, 1, []byte(`{"type":"message","message":`+strings.Replace(benchEnv2, `"offset":2,`, `"offset":301,`, 1)+`}`))...)
	stream = append(stream, benchServerFrame(true, 1, batch)...) // whole: 300 duplicates
	stream = append(stream, benchServerFrame(true, 8, []byte{0x0f, 0xa1, 's', 'l', 'o', 'w'})...)

	for _, piece := range []int{1, 5, 130, 4096, len(stream)} {
		s := benchTestSub()
		confirmed := 0
		c := newBenchRConn(s, true, false, func() { confirmed++ })
		var pongs bytes.Buffer
		c.out = &pongs
		_, err := benchFeed(t, c, stream, piece)
		if err == nil || !strings.Contains(err.Error(), "4001 slow") {
			t.Errorf("pieces of %d: end %v", piece, err)
		}
		if confirmed != 1 || s.track.distinct != 301 || s.track.dup != 300 || s.track.reorder != 0 || s.track.lost(301) != 0 {
			t.Errorf("pieces of %d: confirmed %d distinct %d dup %d reorder %d", piece, confirmed, s.track.distinct, s.track.dup, s.track.reorder)
		}
		if !bytes.Equal(pongs.Bytes(), []byte{0x8A, 0x82, 0, 0, 0, 0, 'h', 'i'}) {
			t.Errorf("pieces of %d: pongs %x, want one pong carrying the ping's data", piece, pongs.Bytes())
		}
	}
	// A masked frame from the server is refused.
	c := newBenchRConn(benchTestSub(), true, false, func() {})
	if _, err := benchFeed(t, c, []byte{0x81, 0x81, 1, 2, 3, 4, 'x'}, 10); err == nil {
		t.Error("masked server frame accepted")
	}
	// Client frames are masked and decode back.
	f := benchWSFrame([]byte(`{"id":1,"op":"subscribe","channel":"bench.x"}`))
	if f[0] != 0x81 || f[1]&0x80 == 0 || int(f[1]&0x7f) != len(f)-6 {
		t.Fatalf("client frame header %x", f[:2])
	}
	mask, data := f[2:6], f[6:]
	for i := range data {
		data[i] ^= mask[i&3]
	}
	if string(data) != `{"id":1,"op":"subscribe","channel":"bench.x"}` {
		t.Errorf("client frame %q", data)
	}
}

func TestBenchPaceIsOneScheduleForAllPublishers(t *testing.T) {
	t.Parallel()
	var unpaced benchPace
	if _, paced := unpaced.take(1); paced {
		t.Error("no rate: paced")
	}
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	var s benchPace
	s.begin(t0, 100) // a message every 10 ms
	for _, c := range []struct {
		n    int
		want time.Duration
	}{
		{1, 0},                     // message 0
		{5, 10 * time.Millisecond}, // messages 1–5 (a batch): due with its first
		{1, 60 * time.Millisecond}, // message 6
		{1, 70 * time.Millisecond},
	} {
		due, paced := s.take(c.n)
		if !paced || due.Sub(t0) != c.want {
			t.Errorf("take(%d): %v after the start (paced %v), want %v", c.n, due.Sub(t0), paced, c.want)
		}
	}
	// Publishers drawing at once share the schedule: every slot is taken
	// once.
	s.begin(t0, 1000)
	var mu sync.Mutex
	seen := map[time.Duration]bool{}
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 100 {
				due, _ := s.take(1)
				mu.Lock()
				seen[due.Sub(t0)] = true
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if len(seen) != 800 || !seen[0] || !seen[799*time.Millisecond] {
		t.Errorf("%d distinct slots, want 800 from 0 to 799 ms", len(seen))
	}
}
