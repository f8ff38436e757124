package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// --- 1. the flood ---

// floodResult is what a flooder saw.
type floodResult struct {
	attempts, accepted, limited int
	noRetryAfter                int           // 429s without retry_after or Retry-After
	retryAfter                  map[int]int   // retry_after value → count
	other                       map[int]int   // any other status → count
	otherSample                 string        // one such answer
	offsets                     []uint64      // of the accepted publishes
	errs                        []error       // transport errors
	elapsed                     time.Duration // from the first request to the last answer
}

// flood publishes body to /api/publish as token, as fast as it can, over
// conns pipelined HTTP/1.1 connections (each with up to window requests
// in flight), until ctx ends; then it reads every answer still due.
func flood(ctx context.Context, base, token, body string, conns, window int) floodResult {
	addr := strings.TrimPrefix(base, "http://")
	req := fmt.Sprintf("POST /api/publish HTTP/1.1\r\nHost: %s\r\nAuthorization: Bearer %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s",
		addr, token, len(body), body)
	const batch = 32
	reqs := []byte(strings.Repeat(req, batch))

	results := make([]floodResult, conns)
	var wg sync.WaitGroup
	start := time.Now()
	for i := range conns {
		wg.Go(func() {
			r := &results[i]
			r.retryAfter, r.other = map[int]int{}, map[int]int{}
			conn, err := net.DialTimeout("tcp", addr, 10*time.Second)
			if err != nil {
				r.errs = append(r.errs, err)
				return
			}
			defer conn.Close()
			_ = conn.SetDeadline(time.Now().Add(2 * time.Minute))
			sem := make(chan struct{}, window)
			notify := make(chan struct{}, 1)
			writerDone := make(chan struct{})
			var sent atomic.Int64
			go func() { // the writer
				defer close(writerDone)
				for {
					select {
					case sem <- struct{}{}:
					case <-ctx.Done():
						return
					}
					n := 1
				more:
					for n < batch {
						select {
						case sem <- struct{}{}:
							n++
						default:
							break more
						}
					}
					if _, err := conn.Write(reqs[:n*len(req)]); err != nil {
						return // the reader sees the connection fail
					}
					sent.Add(int64(n))
					select {
					case notify <- struct{}{}:
					default:
					}
				}
			}()
			br := bufio.NewReaderSize(conn, 64<<10)
			var bodyBuf []byte
			received := int64(0)
			for {
				if received == sent.Load() {
					select {
					case <-writerDone:
						if received == sent.Load() {
							return
						}
					case <-notify:
					}
					continue
				}
				code, retryHdr, b, err := readHTTPAnswer(br, &bodyBuf)
				if err != nil {
					r.errs = append(r.errs, fmt.Errorf("answer #%d: %w", received+1, err))
					conn.Close()
					<-writerDone
					return
				}
				received++
				<-sem
				r.attempts++
				switch code {
				case 200:
					var res publishResult
					if err := json.Unmarshal(b, &res); err != nil || res.Offset == 0 {
						r.errs = append(r.errs, fmt.Errorf("200 answer %s", b))
						continue
					}
					r.accepted++
					r.offsets = append(r.offsets, res.Offset)
				case 429:
					// {"error":{"code":429,"message":"…","channel":"…","retry_after":N}}
					// checked without a JSON decoder: the flooder must
					// stay cheap next to the server it floods.
					r.limited++
					secs := -1
					if i := bytes.Index(b, []byte(`,"retry_after":`)); i >= 0 && bytes.HasPrefix(b, []byte(`{"error":{"code":429,`)) {
						rest := b[i+len(`,"retry_after":`):]
						if j := bytes.IndexByte(rest, '}'); j > 0 {
							secs, _ = strconv.Atoi(string(rest[:j]))
						}
					}
					if secs < 1 || !retryHdr {
						r.noRetryAfter++
						if r.otherSample == "" {
							r.otherSample = fmt.Sprintf("429 %s (Retry-After header: %v)", b, retryHdr)
						}
					}
					r.retryAfter[secs]++
				default:
					r.other[code]++
					if r.otherSample == "" {
						r.otherSample = fmt.Sprintf("%d %s", code, b)
					}
				}
			}
		})
	}
	wg.Wait()
	total := floodResult{retryAfter: map[int]int{}, other: map[int]int{}, elapsed: time.Since(start)}
	for _, r := range results {
		total.attempts += r.attempts
		total.accepted += r.accepted
		total.limited += r.limited
		total.noRetryAfter += r.noRetryAfter
		for k, v := range r.retryAfter {
			total.retryAfter[k] += v
		}
		for k, v := range r.other {
			total.other[k] += v
		}
		if total.otherSample == "" {
			total.otherSample = r.otherSample
		}
		total.offsets = append(total.offsets, r.offsets...)
		total.errs = append(total.errs, r.errs...)
	}
	return total
}

// readHTTPAnswer reads one HTTP/1.1 answer with a Content-Length body;
// the body is read into *buf and valid until the next call.
func readHTTPAnswer(br *bufio.Reader, buf *[]byte) (code int, retryAfter bool, body []byte, err error) {
	line, err := br.ReadSlice('\n')
	if err != nil {
		return 0, false, nil, err
	}
	if len(line) < 12 || !bytes.HasPrefix(line, []byte("HTTP/1.1 ")) {
		return 0, false, nil, fmt.Errorf("status line %q", line)
	}
	code, err = strconv.Atoi(string(line[9:12]))
	if err != nil {
		return 0, false, nil, fmt.Errorf("status line %q", line)
	}
	length := -1
	for {
		h, err := br.ReadSlice('\n')
		if err != nil {
			return 0, false, nil, err
		}
		if len(h) <= 2 {
			break
		}
		name, value, _ := bytes.Cut(h, []byte(":"))
		value = bytes.TrimSpace(value)
		switch {
		case bytes.EqualFold(name, []byte("Content-Length")):
			length, _ = strconv.Atoi(string(value))
		case bytes.EqualFold(name, []byte("Retry-After")):
			retryAfter = len(value) > 0
		case bytes.EqualFold(name, []byte("Connection")) && bytes.EqualFold(value, []byte("close")):
			return 0, false, nil, fmt.Errorf("the server closes the connection (status %d)", code)
		}
	}
	if length < 0 {
		return 0, false, nil, fmt.Errorf("a %d answer without Content-Length", code)
	}
	if cap(*buf) < length {
		*buf = make([]byte, length)
	}
	body = (*buf)[:length]
	if _, err := io.ReadFull(br, body); err != nil {
		return 0, false, nil, err
	}
	return code, retryAfter, body, nil
}

// floodReader is one well-behaved subscriber of the flood test.
type floodReader struct {
	transport string
	c         conn
	offsets   []uint64
	goodSeqs  []int
	latencies []time.Duration // of the good publisher's messages
	err       error
	done      chan struct{}
}

// run receives until the end marker, noting when each good message came.
func (r *floodReader) run() {
	defer close(r.done)
	for {
		env, err := r.c.recv(30 * time.Second)
		now := time.Now()
		if err != nil {
			r.err = fmt.Errorf("after %d messages: %w", len(r.offsets), err)
			return
		}
		r.offsets = append(r.offsets, env.Offset)
		var d struct {
			G   int   `json:"g"`
			T   int64 `json:"t"`
			End bool  `json:"end"`
		}
		if err := json.Unmarshal(env.Data, &d); err != nil {
			r.err = fmt.Errorf("offset %d: data %s: %v", env.Offset, env.Data, err)
			return
		}
		if d.End {
			return
		}
		if d.G > 0 {
			r.goodSeqs = append(r.goodSeqs, d.G)
			r.latencies = append(r.latencies, now.Sub(time.Unix(0, d.T)))
		}
	}
}

// TestFloodIsLimitedWhileOthersKeepTheirLatency: one abusive user floods
// POST /api/publish on a rate-limited channel as fast as it can (several
// pipelined connections) while a well-behaved user publishes every 20 ms
// and 100 subscribers on all three transports listen. The abuser is held
// to the rule's limit with 429s that carry retry_after; the good publisher
// is never refused; every subscriber receives every accepted message, in
// order, exactly once; the metrics count the refusals.
//
// Latency is measured, logged and held to loose bounds. The good
// publisher is open-loop (it keeps its schedule whatever the
// acknowledgements do, so slow spells are sampled, not skipped). On a
// 2-core machine running the race-built server, this race-built test
// process (100 subscribers decoding every message) and the flood, the
// flood saturates both cores: the end-to-end p99 then measures the shared
// machine as much as the server (1.5–3.8 s in runs here, against ~35 ms
// without the flood), so it is only held under 10 s: a guard against
// stalls, not a latency target. The server's own part, from its
// histograms (publish to durable, commit to hand-over to the transports),
// is held under 500 ms.
func TestFloodIsLimitedWhileOthersKeepTheirLatency(t *testing.T) {
	const (
		channel      = "chat_room_1"
		limit        = 100 // per second, and the burst
		floodFor     = 3 * time.Second
		goodEvery    = 20 * time.Millisecond
		metricsToken = "e2e-metrics-token-0123456789"
		floodConns   = 8
		floodWindow  = 64 // requests in flight per connection
		// Loose bounds (see above): the end-to-end p99 of the good
		// messages, and the server's own p99 of append and
		// commit-to-hand-over.
		maxP99       = 10 * time.Second
		maxServerP99 = 500 * time.Millisecond
	)
	srv := startFlowServer(t, `channels:
  - pattern: "chat_room_{id}"
    subscribe: ["authenticated"]
    publish: ["authenticated"]
    rate_limit: {limit: 100, window: 1s}
metrics_token: "`+metricsToken+`"
`)
	base := srv.url()
	toks := permTokens(t, map[string][]string{
		"good": {"--sub", "1"}, "abuser": {"--sub", "666"},
		"r1": {"--sub", "reader1"}, "r2": {"--sub", "reader2"}, "r3": {"--sub", "reader3"}, "r4": {"--sub", "reader4"},
	})

	// The metrics are behind their token.
	if resp, raw := permReq(t, http.MethodGet, base+"/metrics", "", nil); resp.StatusCode != 401 {
		t.Fatalf("GET /metrics without the metrics token: %d %s, want 401", resp.StatusCode, abbreviate(raw, 200))
	}

	// 100 subscribers: 40 SSE, 40 WebSocket, 20 long polling, as four
	// reader users (25 sessions each, under the default per-user limit).
	readers := make([]*floodReader, 100)
	openStart := time.Now()
	var (
		openWG   sync.WaitGroup
		openMu   sync.Mutex
		openErrs []error
		slots    = make(chan struct{}, 8)
	)
	for i := range readers {
		var d driver
		switch {
		case i < 40:
			d = sseDriver{}
		case i < 80:
			d = wsDriver{}
		default:
			d = pollDriver{}
		}
		r := &floodReader{transport: d.name(), done: make(chan struct{})}
		readers[i] = r
		openWG.Go(func() {
			slots <- struct{}{}
			defer func() { <-slots }()
			c, err := d.open(t, base, toks[fmt.Sprintf("r%d", i%4+1)], []string{channel}, nil)
			openMu.Lock()
			defer openMu.Unlock()
			if err != nil {
				openErrs = append(openErrs, fmt.Errorf("subscriber %d (%s): %w", i, d.name(), err))
				return
			}
			r.c = c
		})
	}
	openWG.Wait()
	if len(openErrs) > 0 {
		t.Fatalf("opening the subscribers: %v", errors.Join(openErrs...))
	}
	t.Logf("100 subscribers open in %s", time.Since(openStart).Round(time.Millisecond))
	for _, r := range readers {
		go r.run()
	}

	// The flood and the good publisher, side by side.
	ctx, cancel := context.WithTimeout(context.Background(), floodFor)
	defer cancel()
	var fr floodResult
	floodDone := make(chan struct{})
	go func() {
		defer close(floodDone)
		fr = flood(ctx, base, toks["abuser"], `{"channel":"`+channel+`","data":{"spam":true}}`, floodConns, floodWindow)
	}()

	type goodAck struct {
		seq    int
		offset uint64
		took   time.Duration
	}
	var (
		goodMu      sync.Mutex
		goodAcks    []goodAck
		goodRefused []string
		goodWG      sync.WaitGroup
	)
	goodClient := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
	defer goodClient.CloseIdleConnections()
	goodStart := time.Now()
	for seq := 1; ; seq++ {
		// On schedule: publish seq is due at goodStart + (seq-1)×goodEvery;
		// one that comes late (this process is busy too) goes at once.
		due := goodStart.Add(time.Duration(seq-1) * goodEvery)
		if due.Sub(goodStart) >= floodFor {
			break
		}
		if wait := time.Until(due); wait > 0 {
			select {
			case <-time.After(wait):
			case <-ctx.Done():
			}
		}
		goodWG.Go(func() {
			sent := time.Now()
			body, _ := json.Marshal(map[string]any{"channel": channel, "data": map[string]any{"g": seq, "t": sent.UnixNano()}})
			req, _ := http.NewRequest(http.MethodPost, base+"/api/publish", bytes.NewReader(body))
			req.Header.Set("Authorization", "Bearer "+toks["good"])
			req.Header.Set("Content-Type", "application/json")
			resp, err := goodClient.Do(req)
			var raw []byte
			if err == nil {
				raw, _ = io.ReadAll(resp.Body)
				resp.Body.Close()
			}
			var res publishResult
			goodMu.Lock()
			defer goodMu.Unlock()
			switch {
			case err != nil:
				goodRefused = append(goodRefused, fmt.Sprintf("#%d: %v", seq, err))
			case resp.StatusCode != 200 || json.Unmarshal(raw, &res) != nil || res.Offset == 0:
				goodRefused = append(goodRefused, fmt.Sprintf("#%d: %d %s", seq, resp.StatusCode, raw))
			default:
				goodAcks = append(goodAcks, goodAck{seq: seq, offset: res.Offset, took: time.Since(sent)})
			}
		})
	}
	goodWG.Wait()
	<-floodDone

	// The server is up.
	select {
	case <-srv.exited:
		t.Fatalf("herald exited during the flood:\n%s", lastLines(srv.log.String(), 40))
	default:
	}
	if resp, raw := permReq(t, http.MethodGet, base+"/healthz", "", nil); resp.StatusCode != 200 {
		t.Fatalf("GET /healthz after the flood: %d %s", resp.StatusCode, raw)
	}

	// The abuser: mostly 429s with retry_after; at most the burst plus
	// the rate over the flood's duration accepted.
	rate := float64(fr.attempts) / fr.elapsed.Seconds()
	t.Logf("abuser: %d attempts in %s = %.0f/s (%d pipelined connections, up to %d requests in flight each): %d accepted, %d refused with 429 (%.1f%%; retry_after values %v), other statuses %v",
		fr.attempts, fr.elapsed.Round(time.Millisecond), rate, floodConns, floodWindow, fr.accepted, fr.limited,
		100*float64(fr.limited)/float64(max(1, fr.attempts)), fr.retryAfter, fr.other)
	if len(fr.errs) > 0 {
		t.Errorf("abuser's connections: %v", errors.Join(fr.errs...))
	}
	if len(fr.other) > 0 || fr.noRetryAfter > 0 {
		t.Errorf("abuser got %v other answers and %d 429s without retry_after and Retry-After; e.g. %s", fr.other, fr.noRetryAfter, fr.otherSample)
	}
	// The flood's last requests (up to floodConns×floodWindow in flight)
	// are served after its measured end: allow half a second of refill.
	maxAccepted := limit + int(math.Ceil(limit*(fr.elapsed.Seconds()+0.5)))
	if fr.accepted > maxAccepted || fr.accepted < limit {
		t.Errorf("abuser had %d publishes accepted in %s, want the burst (%d) and at most %d (burst + %d/s)",
			fr.accepted, fr.elapsed.Round(time.Millisecond), limit, maxAccepted, limit)
	}
	if fr.limited < 2*fr.accepted {
		t.Errorf("abuser: %d refused and %d accepted; a flood should be mostly refused", fr.limited, fr.accepted)
	}

	// The good publisher was never refused.
	if len(goodRefused) > 0 {
		t.Errorf("the good publisher was refused %d times: %v", len(goodRefused), goodRefused)
	}
	acks := make([]time.Duration, len(goodAcks))
	goodSeqAt := map[uint64]int{}
	for i, a := range goodAcks {
		acks[i] = a.took
		goodSeqAt[a.offset] = a.seq
	}
	slices.Sort(acks)
	t.Logf("good publisher: %d publishes (one every %s), acknowledged in p50 %s, p99 %s, max %s", len(goodAcks), goodEvery,
		percentile(acks, 50).Round(time.Microsecond), percentile(acks, 99).Round(time.Microsecond), percentile(acks, 100).Round(time.Microsecond))

	// Every accepted publish has its own offset, and nothing else was
	// stored: the end marker (the API key is not limited) comes right
	// after them.
	accepted := append([]uint64(nil), fr.offsets...)
	for _, a := range goodAcks {
		accepted = append(accepted, a.offset)
	}
	slices.Sort(accepted)
	for i, off := range accepted {
		if off != uint64(i+1) {
			t.Fatalf("accepted offsets are not 1..%d: #%d is %d (%s)", len(accepted), i+1, off, abbreviateOffsets(accepted))
		}
	}
	n := uint64(len(accepted))
	end := mustPublish(t, base, channel, `{"end":true}`)
	if end.Offset != n+1 {
		t.Fatalf("the end marker is at offset %d, want %d: something was stored that no publisher was told of", end.Offset, n+1)
	}

	// Every subscriber received every accepted message, in order, once.
	deadline := time.After(60 * time.Second)
	for i, r := range readers {
		select {
		case <-r.done:
		case <-deadline:
			t.Fatalf("subscriber %d (%s) still waiting after 60s with %d messages", i, r.transport, len(r.offsets))
		}
	}
	byTransport := map[string][]time.Duration{}
	var all []time.Duration
	for i, r := range readers {
		who := fmt.Sprintf("subscriber %d (%s)", i, r.transport)
		if r.err != nil {
			t.Errorf("%s: %v", who, r.err)
			continue
		}
		checkOffsets(t, who, r.offsets, 1, n+1)
		var want []int
		for _, off := range r.offsets {
			if s, ok := goodSeqAt[off]; ok {
				want = append(want, s)
			}
		}
		if !slices.Equal(r.goodSeqs, want) {
			t.Errorf("%s: good messages %v, want %v by offset", who, r.goodSeqs, want)
		}
		byTransport[r.transport] = append(byTransport[r.transport], r.latencies...)
		all = append(all, r.latencies...)
	}

	// The good messages' latency, publish to receipt, by transport and
	// overall; and the server's own view of its part.
	for _, tr := range []string{"sse", "ws", "poll"} {
		l := byTransport[tr]
		slices.Sort(l)
		t.Logf("good messages over %-4s: latency p50 %s, p99 %s, max %s (%d deliveries)", tr,
			percentile(l, 50).Round(time.Microsecond), percentile(l, 99).Round(time.Microsecond), percentile(l, 100).Round(time.Microsecond), len(l))
	}
	slices.Sort(all)
	p50, p99 := percentile(all, 50), percentile(all, 99)
	t.Logf("good messages, all 100 subscribers: latency p50 %s, p99 %s, max %s (%d deliveries)",
		p50.Round(time.Microsecond), p99.Round(time.Microsecond), percentile(all, 100).Round(time.Microsecond), len(all))
	if p99 > maxP99 {
		t.Errorf("p99 latency of the good messages is %s under the flood, want under %s", p99.Round(time.Millisecond), maxP99)
	}
	// The server's part, from its own histograms: publish to durable
	// (append) and commit to hand-over to the transports — its core path
	// is not queued behind the flood.
	ms := scrapeMetrics(t, base, metricsToken)
	for _, h := range []string{"herald_store_append_seconds", "herald_delivery_latency_seconds"} {
		hp50, cnt := histogramQuantile(ms, h, 0.5)
		hp99, _ := histogramQuantile(ms, h, 0.99)
		t.Logf("server's %s: p50 ≤ %gs, p99 ≤ %gs (%g samples)", h, hp50, hp99, cnt)
		if hp99 > maxServerP99.Seconds() {
			t.Errorf("server's %s: p99 ≤ %gs under the flood, want at most %s", h, hp99, maxServerP99)
		}
	}

	// The metrics count each refusal once.
	if got := metricSum(ms, "herald_rate_limited_total", map[string]string{"kind": "publish"}); got != float64(fr.limited) {
		t.Errorf(`herald_rate_limited_total{kind="publish"} is %g, want %d (the abuser's 429s)`, got, fr.limited)
	}
}

// --- 2. the op limit ---

// TestOpLimitOverWebSocket: a user's connection that sends 200 pings at
// once gets ok replies for the burst (and what refills meanwhile) and 429
// error replies with retry_after for the rest; the connection stays open
// and is usable again once the wait is over.
func TestOpLimitOverWebSocket(t *testing.T) {
	const (
		rate  = 20
		burst = 20
		pings = 200
	)
	srv := startFlowServer(t, "limits:\n  ops_per_second: 20\n  ops_burst: 20\n")
	base := srv.url()
	toks := permTokens(t, map[string][]string{"chatty": {"--sub", "chatty"}})
	c := openWS(t, base, toks["chatty"], 0)

	// 200 pings in one go: every frame is written before any reply is read.
	var frames bytes.Buffer
	start := time.Now()
	for i := 1; i <= pings; i++ {
		frames.Reset()
		fmt.Fprintf(&frames, `{"id":%d,"op":"ping"}`, i)
		if err := c.ws.WriteMessage(websocket.TextMessage, frames.Bytes()); err != nil {
			t.Fatalf("ping %d: %v", i, err)
		}
	}
	c.nextID = pings
	okIDs, limited := []int64{}, 0
	retryAfter := 0
	for seen := 0; seen < pings; seen++ {
		f, err := c.read(20 * time.Second)
		if err != nil {
			t.Fatalf("after %d of %d replies: %v", seen, pings, err)
		}
		if f.ID == nil || *f.ID != int64(seen+1) {
			t.Fatalf("reply #%d is %s, want the reply to ping %d (replies come in order)", seen+1, f.raw, seen+1)
		}
		switch {
		case f.OK && f.Error == nil:
			okIDs = append(okIDs, *f.ID)
		case !f.OK && f.Error != nil && f.Error.Code == 429 && f.Error.RetryAfter >= 1 && strings.Contains(f.Error.Message, "ops per second"):
			limited++
			retryAfter = max(retryAfter, f.Error.RetryAfter)
		default:
			t.Fatalf("reply %s: want ok, or a 429 error with retry_after", f.raw)
		}
	}
	took := time.Since(start)
	t.Logf("%d pings at once: %d ok (ids %v), %d refused with 429, max retry_after %ds, in %s", pings, len(okIDs), okIDs, limited, retryAfter, took.Round(time.Millisecond))
	for i := range burst {
		if i >= len(okIDs) || okIDs[i] != int64(i+1) {
			t.Fatalf("the first %d pings (the burst) must all be ok; ok ids %v", burst, okIDs)
		}
	}
	if maxOK := burst + int(math.Ceil(rate*took.Seconds())); len(okIDs) > maxOK {
		t.Errorf("%d pings ok in %s, want at most %d (burst %d + %d/s)", len(okIDs), took, maxOK, burst, rate)
	}

	// Still usable once retry_after has passed (the limit is about time:
	// waiting for it is the event).
	time.Sleep(time.Duration(retryAfter) * time.Second)
	for i := range 5 {
		if r := c.call(map[string]any{"op": "ping"}); !r.OK {
			t.Fatalf("ping %d after waiting %ds: %s", i+1, retryAfter, r.raw)
		}
	}
	if got := metric(t, base, "", "herald_rate_limited_total", map[string]string{"kind": "ops"}); got != float64(limited) {
		t.Errorf(`herald_rate_limited_total{kind="ops"} is %g, want %d`, got, limited)
	}
}
