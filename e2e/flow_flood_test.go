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

	"github.com/heraldrt/herald/internal/bench"
)

// --- 1. the flood ---

// floodResult is what a flooder saw.
type floodResult struct {
	attempts, accepted, limited int
	byRule                      int         // 429s from the channel's rate_limit (the rest: too many in flight)
	noRetryAfter                int         // 429s without retry_after or Retry-After
	retryAfter                  map[int]int // retry_after value → count
	other                       map[int]int // any other status → count
	otherSample                 string      // one such answer
	offsets                     []uint64    // of the accepted publishes
	errs                        []error     // transport errors
	// elapsed runs from before the first connection is dialled to after
	// the last answer is read: every request reached the server, and was
	// decided, inside it.
	elapsed time.Duration
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
				code, retryHdr, b, err := bench.ReadHTTPAnswer(br, &bodyBuf)
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
					if bytes.Contains(b, []byte(` is limited to `)) {
						r.byRule++
					}
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
		total.byRule += r.byRule
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

// floodReader is one well-behaved subscriber of the flood test.
type floodReader struct {
	transport string
	c         conn
	offsets   []uint64
	goodSeqs  []int
	err       error
	done      chan struct{}
}

// run receives until the end marker, noting the good publisher's
// messages.
func (r *floodReader) run() {
	defer close(r.done)
	for {
		env, err := r.c.recv(30 * time.Second)
		if err != nil {
			r.err = fmt.Errorf("after %d messages: %w", len(r.offsets), err)
			return
		}
		r.offsets = append(r.offsets, env.Offset)
		var d struct {
			G   int  `json:"g"`
			End bool `json:"end"`
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
		}
	}
}

// TestFloodIsHeldToTheLimitAndLosesNothing: one abusive user floods POST
// /api/publish on a rate-limited channel as fast as it can (several
// pipelined connections) while a well-behaved user publishes every 20 ms
// and 100 subscribers on all three transports listen. What the limiter
// guarantees, at whatever speed this machine runs the flood:
//
//   - the abuser has at most the burst plus the rule's rate over the
//     flood's duration accepted, and at least the burst once the rule has
//     refused anything;
//   - every refusal is a 429 with retry_after and Retry-After, and the
//     metrics count each one once;
//   - the good publisher is never refused;
//   - every accepted message, and nothing else, is stored and reaches
//     every subscriber exactly once, in order.
//
// How fast the abuser goes and what the flood does to the others' latency
// is measured, not asserted, by `herald bench flood` (README, Limits and
// abuse): on a busy machine the flood may reach only a fraction of the
// limit, and latency measures the machine as much as the server.
func TestFloodIsHeldToTheLimitAndLosesNothing(t *testing.T) {
	const (
		channel      = "chat_room_1"
		limit        = 100 // per second, and the burst
		floodFor     = 3 * time.Second
		goodEvery    = 20 * time.Millisecond
		goodInFlight = 8 // the good publisher's requests in flight, at most: well under the server's 64
		metricsToken = "e2e-metrics-token-0123456789"
		floodConns   = 8
		floodWindow  = 64 // requests in flight per connection
	)
	srv := startFlowServer(t, `channels:
  - pattern: "chat_room_{id}"
    subscribe: ["authenticated"]
    publish: ["authenticated"]
    rate_limit: {limit: 100, window: 1s}
    history: {size: 1000000}
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
	}
	var (
		goodMu      sync.Mutex
		goodAcks    []goodAck
		goodRefused []string
		goodWG      sync.WaitGroup
		goodSlots   = make(chan struct{}, goodInFlight)
	)
	goodClient := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: goodInFlight}}
	defer goodClient.CloseIdleConnections()
	goodStart := time.Now()
	for seq := 1; ; seq++ {
		// Publish seq is due at goodStart + (seq-1)×goodEvery; one that
		// comes late (this process is busy too, or its requests in flight
		// are all out) goes at once. At most 50 a second on average and
		// at most goodInFlight at once: within the rule and the server's
		// cap on requests in flight, however slow the answers are.
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
		goodSlots <- struct{}{}
		goodWG.Go(func() {
			defer func() { <-goodSlots }()
			body, _ := json.Marshal(map[string]any{"channel": channel, "data": map[string]any{"g": seq}})
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
				goodAcks = append(goodAcks, goodAck{seq: seq, offset: res.Offset})
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

	// The abuser: every refusal a 429 with retry_after and Retry-After;
	// accepted, at most the burst plus the rate over the flood's
	// duration, and at least the burst once the rule refused anything
	// (the bucket starts full and refuses only once it is empty).
	t.Logf("abuser: %d attempts in %s (%d pipelined connections, up to %d requests in flight each): %d accepted, %d refused with 429 (%d by the rule, %d for too many in flight; retry_after values %v), other statuses %v",
		fr.attempts, fr.elapsed.Round(time.Millisecond), floodConns, floodWindow, fr.accepted, fr.limited,
		fr.byRule, fr.limited-fr.byRule, fr.retryAfter, fr.other)
	if len(fr.errs) > 0 {
		t.Errorf("abuser's connections: %v", errors.Join(fr.errs...))
	}
	if len(fr.other) > 0 || fr.noRetryAfter > 0 {
		t.Errorf("abuser got %v other answers and %d 429s without retry_after and Retry-After; e.g. %s", fr.other, fr.noRetryAfter, fr.otherSample)
	}
	maxAccepted := limit + int(math.Ceil(limit*fr.elapsed.Seconds()))
	if fr.accepted > maxAccepted {
		t.Errorf("abuser had %d publishes accepted in %s, want at most %d (burst %d + %d/s)",
			fr.accepted, fr.elapsed.Round(time.Millisecond), maxAccepted, limit, limit)
	}
	if fr.accepted < 1 || (fr.byRule > 0 && fr.accepted < limit) {
		t.Errorf("abuser had %d publishes accepted and %d refused by the rule; want at least 1, and the burst (%d) before the rule refuses any",
			fr.accepted, fr.byRule, limit)
	}

	// The good publisher was never refused.
	if len(goodRefused) > 0 {
		t.Errorf("the good publisher was refused %d times: %v", len(goodRefused), goodRefused)
	}
	goodSeqAt := map[uint64]int{}
	for _, a := range goodAcks {
		goodSeqAt[a.offset] = a.seq
	}
	t.Logf("good publisher: %d publishes, every %s at most %d in flight", len(goodAcks), goodEvery, goodInFlight)

	// Every accepted publish has its own offset, and nothing else was
	// stored: the end marker (the API key is not limited) comes right
	// after them, and the history holds exactly the accepted messages.
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
	_, stored := history(t, base, channel)
	if len(stored) != int(n+1) {
		t.Errorf("history holds %d messages, want the %d accepted and the end marker", len(stored), n)
	}
	for i, env := range stored {
		want := `{"spam":true}`
		if s, ok := goodSeqAt[env.Offset]; ok {
			want = fmt.Sprintf(`{"g":%d}`, s)
		} else if env.Offset == n+1 {
			want = `{"end":true}`
		}
		if env.Offset != uint64(i+1) || string(env.Data) != want {
			t.Errorf("history message #%d: offset %d data %s, want offset %d data %s", i+1, env.Offset, env.Data, i+1, want)
			break
		}
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
	}

	// The metrics count each refusal once.
	ms := scrapeMetrics(t, base, metricsToken)
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
