package e2e

// Flow control end to end (issue 8): publish rate limits under a flood,
// the per-connection op limit, slow readers among many, batching on every
// transport, broadcasts to users, moderation (disconnect, ban) and the
// per-user connection limit — each against a real herald serve process,
// over the wire, as clients see it.
//
// Besides the drivers (drivers_test.go), these tests use raw clients where
// the drivers hide what is being checked: a raw SSE client that sees the
// chunked framing (one chunk per server write, so batching is visible) and
// can stall with a tiny receive buffer, a raw WebSocket client that counts
// frames, raw polls that count answers, and a pipelining HTTP flooder.

import (
	"bufio"
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"net/textproto"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/websocket"
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
			serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, size)
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
	resp, raw := permReq(t, http.MethodGet, base+"/metrics", token, nil)
	if resp.StatusCode != 200 {
		t.Fatalf("GET /metrics: %d %s", resp.StatusCode, abbreviate(raw, 300))
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
	return out
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

// waitMetric scrapes until the metric reaches want (a counter only rises).
func waitMetric(t testing.TB, base, token, name string, labels map[string]string, want float64, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for delay := 5 * time.Millisecond; ; delay = min(delay*2, 100*time.Millisecond) {
		got := metric(t, base, token, name, labels)
		if got >= want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s%v is %g after %s, want %g", name, labels, got, timeout, want)
		}
		time.Sleep(delay)
	}
}

// histogramQuantile estimates the q-quantile (0..1) of a Prometheus
// histogram from its buckets: the upper bound of the bucket it falls in.
func histogramQuantile(samples []metricSample, name string, q float64) (float64, float64) {
	type bucket struct{ le, n float64 }
	var bs []bucket
	for _, s := range samples {
		if s.name != name+"_bucket" {
			continue
		}
		le, err := strconv.ParseFloat(s.labels["le"], 64)
		if err != nil {
			le = math.Inf(1)
		}
		bs = append(bs, bucket{le, s.value})
	}
	slices.SortFunc(bs, func(a, b bucket) int { return cmp.Compare(a.le, b.le) })
	if len(bs) == 0 || bs[len(bs)-1].n == 0 {
		return 0, 0
	}
	total := bs[len(bs)-1].n
	for _, b := range bs {
		if b.n >= q*total {
			return b.le, total
		}
	}
	return math.Inf(1), total
}

// percentile returns the p-th percentile (0..100) of sorted durations.
func percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(math.Ceil(p/100*float64(len(sorted)))) - 1
	return sorted[max(0, min(i, len(sorted)-1))]
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

// --- a raw SSE client that sees the chunked framing ---

// rawSSE is one GET /sse over a plain TCP connection. The server writes
// one HTTP chunk per write, so chunks tell how events were batched.
type rawSSE struct {
	t      testing.TB
	conn   net.Conn
	br     *bufio.Reader
	status int
	header textproto.MIMEHeader
	body   []byte // the body of a non-200 answer
	buf    []byte // stream bytes not yet split into events
	chunks int    // chunks read so far
	ended  bool
}

// rawEvent is one SSE event; chunk is the number of the chunk that
// completed it (1 = the first chunk of the stream).
type rawEvent struct {
	name, data, id string
	chunk          int
}

// dialSSE sends GET /sse?query with the bearer token (and Last-Event-ID
// when set) and reads the answer's head; a non-200 answer's body is read
// into body. rcvbuf > 0 sets the socket's receive buffer.
func dialSSE(t testing.TB, base, query, token, lastEventID string, rcvbuf int) *rawSSE {
	t.Helper()
	addr := strings.TrimPrefix(base, "http://")
	d := net.Dialer{Timeout: 10 * time.Second}
	if rcvbuf > 0 {
		d.Control = rcvBufControl(rcvbuf)
	}
	conn, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	t.Cleanup(func() { conn.Close() })
	var req strings.Builder
	fmt.Fprintf(&req, "GET /sse?%s HTTP/1.1\r\nHost: %s\r\nAccept: text/event-stream\r\n", query, addr)
	if token != "" {
		fmt.Fprintf(&req, "Authorization: Bearer %s\r\n", token)
	}
	if lastEventID != "" {
		fmt.Fprintf(&req, "Last-Event-ID: %s\r\n", lastEventID)
	}
	req.WriteString("\r\n")
	_ = conn.SetDeadline(time.Now().Add(20 * time.Second))
	if _, err := io.WriteString(conn, req.String()); err != nil {
		t.Fatalf("GET /sse?%s: %v", query, err)
	}
	s := &rawSSE{t: t, conn: conn, br: bufio.NewReaderSize(conn, 4096)}
	tp := textproto.NewReader(s.br)
	line, err := tp.ReadLine()
	if err != nil {
		t.Fatalf("GET /sse?%s: reading the status line: %v", query, err)
	}
	if _, code, ok := strings.Cut(line, " "); ok && len(code) >= 3 {
		s.status, _ = strconv.Atoi(code[:3])
	}
	if s.header, err = tp.ReadMIMEHeader(); err != nil {
		t.Fatalf("GET /sse?%s: reading the headers: %v", query, err)
	}
	if s.status != 200 {
		n, _ := strconv.Atoi(s.header.Get("Content-Length"))
		s.body = make([]byte, n)
		if _, err := io.ReadFull(s.br, s.body); err != nil {
			t.Fatalf("GET /sse?%s: %d, reading the body: %v", query, s.status, err)
		}
		return s
	}
	if te := s.header.Get("Transfer-Encoding"); te != "chunked" {
		t.Fatalf("GET /sse?%s: Transfer-Encoding %q, want chunked", query, te)
	}
	return s
}

// readChunk returns the next chunk's data; io.EOF after the last chunk.
func (s *rawSSE) readChunk() ([]byte, error) {
	line, err := s.br.ReadString('\n')
	if err != nil {
		return nil, err
	}
	sizeHex, _, _ := strings.Cut(strings.TrimRight(line, "\r\n"), ";")
	n, err := strconv.ParseUint(strings.TrimSpace(sizeHex), 16, 32)
	if err != nil {
		return nil, fmt.Errorf("chunk size line %q: %v", line, err)
	}
	if n == 0 {
		_, _ = s.br.ReadString('\n') // the empty trailer
		return nil, io.EOF
	}
	data := make([]byte, n+2)
	if _, err := io.ReadFull(s.br, data); err != nil {
		return nil, err
	}
	if string(data[n:]) != "\r\n" {
		return nil, fmt.Errorf("chunk of %d bytes not followed by CRLF", n)
	}
	s.chunks++
	return data[:n], nil
}

// parse takes the next complete event with data or an id off buf
// (comments and retry: fields are skipped).
func (s *rawSSE) parse() (rawEvent, bool) {
	for {
		i := bytes.Index(s.buf, []byte("\n\n"))
		if i < 0 {
			return rawEvent{}, false
		}
		block := string(s.buf[:i])
		s.buf = s.buf[i+2:]
		ev := rawEvent{chunk: s.chunks}
		var data []string
		for _, line := range strings.Split(block, "\n") {
			if strings.HasPrefix(line, ":") {
				continue
			}
			field, value, _ := strings.Cut(line, ":")
			value = strings.TrimPrefix(value, " ")
			switch field {
			case "event":
				ev.name = value
			case "data":
				data = append(data, value)
			case "id":
				ev.id = value
			}
		}
		ev.data = strings.Join(data, "\n")
		if data != nil || ev.id != "" {
			return ev, true
		}
	}
}

// next returns the next event, reading chunks as needed for up to
// timeout. The end of the stream is io.EOF (a proper last chunk) or the
// connection's error.
func (s *rawSSE) next(timeout time.Duration) (rawEvent, error) {
	_ = s.conn.SetReadDeadline(time.Now().Add(timeout))
	for {
		if ev, ok := s.parse(); ok {
			return ev, nil
		}
		if s.ended {
			return rawEvent{}, io.EOF
		}
		chunk, err := s.readChunk()
		if err != nil {
			s.ended = true
			return rawEvent{}, err
		}
		s.buf = append(s.buf, chunk...)
	}
}

// mustNext is next, failing the test on any error.
func (s *rawSSE) mustNext(what string) rawEvent {
	s.t.Helper()
	ev, err := s.next(20 * time.Second)
	if err != nil {
		s.t.Fatalf("%s: waiting for the next event: %v", what, err)
	}
	return ev
}

// connectedInfo is the data of herald.connected.
type connectedInfo struct {
	Session     string `json:"session"`
	UserChannel string `json:"user_channel"`
	Channels    []struct {
		Channel string `json:"channel"`
		Epoch   string `json:"epoch"`
		Offset  uint64 `json:"offset"`
	} `json:"channels"`
}

// openSSEStream is dialSSE for an answer that must be a stream: it reads
// herald.connected and returns its data and id.
func openSSEStream(t testing.TB, base, query, token, lastEventID string, rcvbuf int) (*rawSSE, connectedInfo, string) {
	t.Helper()
	s := dialSSE(t, base, query, token, lastEventID, rcvbuf)
	if s.status != 200 {
		t.Fatalf("GET /sse?%s: %d %s", query, s.status, s.body)
	}
	ev := s.mustNext("herald.connected")
	var info connectedInfo
	if ev.name != "herald.connected" || json.Unmarshal([]byte(ev.data), &info) != nil || info.Session == "" || ev.id == "" {
		t.Fatalf("GET /sse?%s: first event %+v, want herald.connected", query, ev)
	}
	return s, info, ev.id
}

// disconnectData is the data of herald.disconnect.
type disconnectData struct {
	Reason    string `json:"reason"`
	Reconnect bool   `json:"reconnect"`
}

// expectSSEDisconnect reads the stream to its end: the last event must be
// herald.disconnect with reason and reconnect, then the stream ends. It
// returns the message events that came before it.
func expectSSEDisconnect(t testing.TB, s *rawSSE, who, reason string, reconnect bool) []rawEvent {
	t.Helper()
	var before []rawEvent
	for {
		ev, err := s.next(20 * time.Second)
		if err != nil {
			t.Fatalf("%s: the stream ended (%v) without herald.disconnect", who, err)
		}
		if ev.name != "herald.disconnect" {
			before = append(before, ev)
			continue
		}
		var d disconnectData
		if err := json.Unmarshal([]byte(ev.data), &d); err != nil || d.Reason != reason || d.Reconnect != reconnect || ev.id != "" {
			t.Fatalf("%s: herald.disconnect %q (id %q), want {\"reason\":%q,\"reconnect\":%v} and no id", who, ev.data, ev.id, reason, reconnect)
		}
		if ev, err := s.next(20 * time.Second); err != io.EOF {
			t.Fatalf("%s: after herald.disconnect got %+v, %v; want the end of the stream", who, ev, err)
		}
		return before
	}
}

// --- a raw WebSocket client ---

// wsIn is any server frame: a reply (id, ok, error) or a push (type).
type wsIn struct {
	ID    *int64 `json:"id"`
	OK    bool   `json:"ok"`
	Error *struct {
		Code       int    `json:"code"`
		Message    string `json:"message"`
		Channel    string `json:"channel"`
		RetryAfter int    `json:"retry_after"`
	} `json:"error"`
	Type        string            `json:"type"`
	Session     string            `json:"session"`
	User        string            `json:"user"`
	UserChannel string            `json:"user_channel"`
	Message     json.RawMessage   `json:"message"`
	Messages    []json.RawMessage `json:"messages"`
	Code        int               `json:"code"`
	Reason      string            `json:"reason"`
	Reconnect   bool              `json:"reconnect"`
	Channel     string            `json:"channel"`
	Offset      uint64            `json:"offset"`
	Epoch       string            `json:"epoch"`
	raw         []byte
}

type rawWS struct {
	t      testing.TB
	ws     *websocket.Conn
	hello  wsIn   // the connected push
	nextID int64  // the last op id used
	queued []wsIn // pushes read while waiting for a reply
}

// dialWSRaw upgrades GET /ws with the bearer token. A refused handshake
// returns the answer; an upgraded connection is returned as it is.
func dialWSRaw(t testing.TB, base, token string, rcvbuf int) (*websocket.Conn, *http.Response, []byte, error) {
	t.Helper()
	d := &net.Dialer{Timeout: 10 * time.Second}
	if rcvbuf > 0 {
		d.Control = rcvBufControl(rcvbuf)
	}
	dialer := websocket.Dialer{HandshakeTimeout: 10 * time.Second, NetDialContext: d.DialContext}
	h := http.Header{}
	if token != "" {
		h.Set("Authorization", "Bearer "+token)
	}
	ws, resp, err := dialer.Dial("ws"+strings.TrimPrefix(base, "http")+"/ws", h)
	if err != nil {
		var raw []byte
		if resp != nil {
			raw, _ = io.ReadAll(resp.Body)
		}
		return nil, resp, raw, err
	}
	t.Cleanup(func() { ws.Close() })
	return ws, resp, nil, nil
}

// openWS upgrades and waits for the connected push.
func openWS(t testing.TB, base, token string, rcvbuf int) *rawWS {
	t.Helper()
	ws, resp, raw, err := dialWSRaw(t, base, token, rcvbuf)
	if err != nil {
		code := 0
		if resp != nil {
			code = resp.StatusCode
		}
		t.Fatalf("GET /ws: %v (%d %s)", err, code, raw)
	}
	c := &rawWS{t: t, ws: ws}
	f, err := c.read(20 * time.Second)
	if err != nil || f.Type != "connected" || f.Session == "" {
		t.Fatalf("GET /ws: first frame %s (%v), want the connected push", f.raw, err)
	}
	c.hello = f
	return c
}

// read returns the next frame (queued pushes first).
func (c *rawWS) read(timeout time.Duration) (wsIn, error) {
	if len(c.queued) > 0 {
		f := c.queued[0]
		c.queued = c.queued[1:]
		return f, nil
	}
	_ = c.ws.SetReadDeadline(time.Now().Add(timeout))
	typ, raw, err := c.ws.ReadMessage()
	if err != nil {
		return wsIn{}, err
	}
	if typ != websocket.TextMessage {
		return wsIn{}, fmt.Errorf("a non-text frame (type %d)", typ)
	}
	var f wsIn
	if err := json.Unmarshal(raw, &f); err != nil {
		return wsIn{}, fmt.Errorf("frame %q: %v", raw, err)
	}
	f.raw = raw
	return f, nil
}

// send writes one op with the next id and returns the id.
func (c *rawWS) send(op map[string]any) int64 {
	c.t.Helper()
	c.nextID++
	op["id"] = c.nextID
	b, _ := json.Marshal(op)
	_ = c.ws.SetWriteDeadline(time.Now().Add(10 * time.Second))
	if err := c.ws.WriteMessage(websocket.TextMessage, b); err != nil {
		c.t.Fatalf("sending %s: %v", b, err)
	}
	return c.nextID
}

// call sends an op and returns its reply; pushes read meanwhile are kept
// for read.
func (c *rawWS) call(op map[string]any) wsIn {
	c.t.Helper()
	id := c.send(op)
	var pushes []wsIn
	defer func() { c.queued = append(c.queued, pushes...) }()
	for {
		_ = c.ws.SetReadDeadline(time.Now().Add(20 * time.Second))
		typ, raw, err := c.ws.ReadMessage()
		if err != nil {
			c.t.Fatalf("waiting for the reply to %v: %v", op, err)
		}
		var f wsIn
		if typ != websocket.TextMessage || json.Unmarshal(raw, &f) != nil {
			c.t.Fatalf("waiting for the reply to %v: frame %q", op, raw)
		}
		f.raw = raw
		if f.Type != "" {
			pushes = append(pushes, f)
			continue
		}
		if f.ID == nil || *f.ID != id {
			c.t.Fatalf("reply %s while waiting for the reply to op %d", raw, id)
		}
		return f
	}
}

// subscribe subscribes from the head (or after since when not nil).
func (c *rawWS) subscribe(channel string, since *uint64) wsIn {
	c.t.Helper()
	op := map[string]any{"op": "subscribe", "channel": channel}
	if since != nil {
		op["since"] = *since
	}
	r := c.call(op)
	if !r.OK || r.Channel != channel || r.Epoch == "" {
		c.t.Fatalf("subscribe %s: reply %s", channel, r.raw)
	}
	return r
}

// envelopes returns the envelopes a message or batch push carries.
func (f wsIn) envelopes() ([]envelope, error) {
	var raws []json.RawMessage
	switch f.Type {
	case "message":
		raws = []json.RawMessage{f.Message}
	case "batch":
		raws = f.Messages
	default:
		return nil, nil
	}
	out := make([]envelope, len(raws))
	for i, r := range raws {
		if err := json.Unmarshal(r, &out[i]); err != nil {
			return nil, fmt.Errorf("envelope %s: %v", abbreviate(r, 200), err)
		}
	}
	return out, nil
}

// expectWSDisconnect reads to the end of the connection: a disconnect
// push with code, reason and reconnect, then the close with code. It
// returns the envelopes that came before.
func expectWSDisconnect(t testing.TB, c *rawWS, who string, code int, reason string, reconnect bool) []envelope {
	t.Helper()
	var before []envelope
	for {
		f, err := c.read(20 * time.Second)
		if err != nil {
			t.Fatalf("%s: the connection ended (%v) without a disconnect push", who, err)
		}
		if f.Type != "disconnect" {
			envs, err := f.envelopes()
			if err != nil {
				t.Fatalf("%s: %v", who, err)
			}
			before = append(before, envs...)
			continue
		}
		if f.Code != code || f.Reason != reason || f.Reconnect != reconnect {
			t.Fatalf("%s: disconnect push %s, want code %d, reason %q, reconnect %v", who, f.raw, code, reason, reconnect)
		}
		_, err = c.read(20 * time.Second)
		var ce *websocket.CloseError
		if !errors.As(err, &ce) || ce.Code != code {
			t.Fatalf("%s: after the disconnect push: %v, want a close with code %d", who, err, code)
		}
		return before
	}
}

// --- raw long polls ---

// flowPoll sends one GET /poll?q as token and decodes a 200 answer.
func flowPoll(t testing.TB, base, token string, q url.Values) (int, pollAnswer, []byte) {
	t.Helper()
	resp, raw := permReq(t, http.MethodGet, base+"/poll?"+q.Encode(), token, nil)
	var ans pollAnswer
	if resp.StatusCode == 200 {
		if err := json.Unmarshal(raw, &ans); err != nil || ans.Cursor == "" || ans.Session == "" {
			t.Fatalf("GET /poll?%s answered %s (%v)", q.Encode(), abbreviate(raw, 300), err)
		}
	}
	return resp.StatusCode, ans, raw
}

// --- 1. the flood ---

// floodResult is what a flooder saw.
type floodResult struct {
	attempts, accepted, limited int
	noRetryAfter                int            // 429s without retry_after or Retry-After
	retryAfter                  map[int]int    // retry_after value → count
	other                       map[int]int    // any other status → count
	otherSample                 string         // one such answer
	offsets                     []uint64       // of the accepted publishes
	errs                        []error        // transport errors
	elapsed                     time.Duration  // from the first request to the last answer
	perConn                     map[string]int // for the log
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
					if xpace > 0 {
						time.Sleep(xpace)
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
					r.limited++
					var e struct {
						Error apiError `json:"error"`
					}
					if json.Unmarshal(b, &e) != nil || e.Error.Code != 429 || e.Error.RetryAfter < 1 || !retryHdr {
						r.noRetryAfter++
						if r.otherSample == "" {
							r.otherSample = fmt.Sprintf("429 %s (Retry-After header: %v)", b, retryHdr)
						}
					}
					r.retryAfter[e.Error.RetryAfter]++
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
	total := floodResult{retryAfter: map[int]int{}, other: map[int]int{}, perConn: map[string]int{}, elapsed: time.Since(start)}
	for i, r := range results {
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
		total.perConn[fmt.Sprint(i)] = r.attempts
	}
	return total
}

var xpace time.Duration

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
// POST /api/publish on a rate-limited channel as fast as it can while a
// well-behaved user publishes every 20 ms and 100 subscribers on all three
// transports listen. The abuser is held to the rule's limit with 429s
// that carry retry_after; the good publisher is never refused; every
// subscriber receives every accepted message, in order, exactly once; the
// good messages' delivery latency stays reasonable; the metrics count the
// refusals.
func TestFloodIsLimitedWhileOthersKeepTheirLatency(t *testing.T) {
	const (
		channel      = "chat_room_1"
		limit        = 100 // per second, and the burst
		floodFor     = 3 * time.Second
		goodEvery    = 20 * time.Millisecond
		metricsToken = "e2e-metrics-token-0123456789"
	)
	if v := os.Getenv("XHERALD"); v != "" {
		heraldBin = v
	}
	floodConns, floodWindow := 8, 128
	if v := os.Getenv("XFLOOD_CONNS"); v != "" {
		floodConns, _ = strconv.Atoi(v)
	}
	if v := os.Getenv("XPACE"); v != "" {
		xpace, _ = time.ParseDuration(v)
	}
	if v := os.Getenv("XWINDOW"); v != "" {
		floodWindow, _ = strconv.Atoi(v)
	}
	srv := startFlowServer(t, `channels:
  - pattern: "chat_room_{id}"
    subscribe: ["authenticated"]
    publish: ["authenticated"]
    rate_limit: {limit: 100, window: 1s}
metrics_token: "`+metricsToken+`"
`+os.Getenv("XEXTRA"))
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
	var readers []*floodReader
	for i := range 100 {
		var d driver
		switch {
		case i < 40:
			d = sseDriver{}
		case i < 80:
			d = wsDriver{}
		default:
			d = pollDriver{}
		}
		readers = append(readers, &floodReader{transport: d.name(), done: make(chan struct{})})
		_ = d
	}
	openStart := time.Now()
	var (
		openWG   sync.WaitGroup
		openMu   sync.Mutex
		openErrs []error
		slots    = make(chan struct{}, 8)
	)
	for i, r := range readers {
		openWG.Go(func() {
			slots <- struct{}{}
			defer func() { <-slots }()
			var d driver = sseDriver{}
			switch r.transport {
			case "ws":
				d = wsDriver{}
			case "poll":
				d = pollDriver{}
			}
			c, err := d.open(t, base, toks[fmt.Sprintf("r%d", i%4+1)], []string{channel}, nil)
			openMu.Lock()
			defer openMu.Unlock()
			if err != nil {
				openErrs = append(openErrs, fmt.Errorf("subscriber %d (%s): %w", i, r.transport, err))
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
		goodAcks    []goodAck
		goodRefused []string
	)
	goodClient := &http.Client{Timeout: 20 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 2}}
	defer goodClient.CloseIdleConnections()
	ticker := time.NewTicker(goodEvery)
	for seq := 1; ctx.Err() == nil; seq++ {
		sent := time.Now()
		body, _ := json.Marshal(map[string]any{"channel": channel, "data": map[string]any{"g": seq, "t": sent.UnixNano()}})
		req, _ := http.NewRequest(http.MethodPost, base+"/api/publish", bytes.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+toks["good"])
		req.Header.Set("Content-Type", "application/json")
		resp, err := goodClient.Do(req)
		if err != nil {
			goodRefused = append(goodRefused, fmt.Sprintf("#%d: %v", seq, err))
			break
		}
		raw, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		var res publishResult
		if resp.StatusCode != 200 || json.Unmarshal(raw, &res) != nil || res.Offset == 0 {
			goodRefused = append(goodRefused, fmt.Sprintf("#%d: %d %s", seq, resp.StatusCode, raw))
			continue
		}
		goodAcks = append(goodAcks, goodAck{seq: seq, offset: res.Offset, took: time.Since(sent)})
		select {
		case <-ticker.C:
		case <-ctx.Done():
		}
	}
	ticker.Stop()
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
	t.Logf("abuser: %d attempts in %s (%.0f/s over %d pipelined connections): %d accepted, %d refused with 429 (retry_after values %v), other statuses %v",
		fr.attempts, fr.elapsed.Round(time.Millisecond), rate, floodConns, fr.accepted, fr.limited, fr.retryAfter, fr.other)
	if len(fr.errs) > 0 {
		t.Errorf("abuser's connections: %v", errors.Join(fr.errs...))
	}
	if len(fr.other) > 0 || fr.noRetryAfter > 0 {
		t.Errorf("abuser got %v other answers and %d 429s without retry_after; e.g. %s", fr.other, fr.noRetryAfter, fr.otherSample)
	}
	maxAccepted := limit + int(math.Ceil(limit*fr.elapsed.Seconds()))
	if fr.accepted > maxAccepted || fr.accepted < limit {
		t.Errorf("abuser had %d publishes accepted in %s, want the burst (%d) and at most %d (burst + %d/s)",
			fr.accepted, fr.elapsed.Round(time.Millisecond), limit, maxAccepted, limit)
	}
	if fr.limited < 4*fr.accepted {
		t.Errorf("abuser: %d refused and %d accepted; a flood should be mostly refused", fr.limited, fr.accepted)
	}
	if fr.attempts < 3*limit*int(floodFor/time.Second) {
		t.Errorf("abuser made only %d attempts (%.0f/s): not a flood", fr.attempts, rate)
	}

	// The good publisher was never refused.
	if len(goodRefused) > 0 {
		t.Errorf("the good publisher was refused %d times: %v", len(goodRefused), goodRefused)
	}
	if len(goodAcks) < int(floodFor/goodEvery)/3 {
		t.Errorf("the good publisher got only %d publishes through in %s", len(goodAcks), floodFor)
	}
	acks := make([]time.Duration, len(goodAcks))
	for i, a := range goodAcks {
		acks[i] = a.took
	}
	slices.Sort(acks)
	t.Logf("good publisher: %d publishes, acknowledged in p50 %s, p99 %s, max %s", len(goodAcks),
		percentile(acks, 50).Round(time.Microsecond), percentile(acks, 99).Round(time.Microsecond), percentile(acks, 100).Round(time.Microsecond))

	// Every accepted publish has its own offset, and nothing else was
	// stored: the end marker (the API key is not limited) comes right
	// after them.
	accepted := append([]uint64(nil), fr.offsets...)
	goodSeqAt := map[uint64]int{}
	for _, a := range goodAcks {
		accepted = append(accepted, a.offset)
		goodSeqAt[a.offset] = a.seq
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
	for _, tr := range []string{"sse", "ws", "poll"} {
		l := byTransport[tr]
		slices.Sort(l)
		t.Logf("delivery latency of the good messages over %s: p50 %s, p99 %s, max %s (%d deliveries)", tr,
			percentile(l, 50).Round(time.Microsecond), percentile(l, 99).Round(time.Microsecond), percentile(l, 100).Round(time.Microsecond), len(l))
	}
	slices.Sort(all)
	p50, p99 := percentile(all, 50), percentile(all, 99)
	t.Logf("delivery latency of the good messages, all 100 subscribers: p50 %s, p99 %s, max %s (%d deliveries)",
		p50.Round(time.Microsecond), p99.Round(time.Microsecond), percentile(all, 100).Round(time.Microsecond), len(all))
	if p99 > time.Second {
		t.Errorf("p99 delivery latency of the good messages is %s, want under 1s", p99)
	}

	// The server's own view: append (publish to durable) and commit to
	// hand-over to the transports.
	ms := scrapeMetrics(t, base, metricsToken)
	for _, h := range []string{"herald_store_append_seconds", "herald_delivery_latency_seconds"} {
		p50, cnt := histogramQuantile(ms, h, 0.5)
		p99, _ := histogramQuantile(ms, h, 0.99)
		t.Logf("server's %s: p50 ≤ %gs, p99 ≤ %gs (%g samples)", h, p50, p99, cnt)
	}

	// The metrics count each refusal once.
	if got := metric(t, base, metricsToken, "herald_rate_limited_total", map[string]string{"kind": "publish"}); got != float64(fr.limited) {
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

// --- 3. slow readers ---

// TestSlowReaderAmongManyIsDisconnected: with a small session queue, one
// SSE client and one WebSocket client that stop reading (tiny receive
// buffers) are disconnected as slow consumers while 20 normal readers on
// every transport receive everything in order; both stalled clients then
// resume exactly where they stopped.
func TestSlowReaderAmongManyIsDisconnected(t *testing.T) {
	const (
		channel = "firehose"
		maxMsgs = 1500
		after   = 50 // published once both stalled clients are out
	)
	srv := startFlowServer(t, "history:\n  size: 5000\n  ttl: 1h\nlimits:\n  queue_messages: 64\n")
	base := srv.url()

	// The stalled clients: each reads its stream's start, then nothing.
	stalledSSE, _, connectedID := openSSEStream(t, base, "channel="+channel, apiKey, "", 2048)
	stalledWS := openWS(t, base, apiKey, 2048)
	stalledWS.subscribe(channel, nil)

	// 20 normal readers.
	type reader struct {
		name    string
		c       conn
		offsets []uint64
		err     error
		done    chan struct{}
	}
	var readers []*reader
	for i := range 20 {
		d := drivers[i%3]
		readers = append(readers, &reader{name: fmt.Sprintf("reader %d (%s)", i, d.name()), c: mustOpen(t, d, base, apiKey, []string{channel}, nil), done: make(chan struct{})})
	}
	for _, r := range readers {
		go func() {
			defer close(r.done)
			for {
				env, err := r.c.recv(30 * time.Second)
				if err != nil {
					r.err = fmt.Errorf("after %d messages: %w", len(r.offsets), err)
					return
				}
				r.offsets = append(r.offsets, env.Offset)
				if strings.Contains(string(env.Data), `"end":true`) {
					return
				}
			}
		}()
	}

	// Publish 30 KB messages as fast as one publisher goes until both
	// stalled clients are out, then some more.
	slow := func(transport string) map[string]string {
		return map[string]string{"reason": "slow_consumer", "transport": transport}
	}
	const closed = "herald_sessions_closed_total"
	pad := strings.Repeat("x", 30<<10)
	start := time.Now()
	n, outAt := 0, 0
	for n < maxMsgs && (outAt == 0 || n < outAt+after) {
		n++
		res := mustPublish(t, base, channel, fmt.Sprintf(`{"i":%d,"pad":%q}`, n, pad))
		if res.Offset != uint64(n) {
			t.Fatalf("publish %d acknowledged at offset %d", n, res.Offset)
		}
		if outAt == 0 && n%8 == 0 {
			s := scrapeMetrics(t, base, "")
			if metricSum(s, closed, slow("sse")) >= 1 && metricSum(s, closed, slow("ws")) >= 1 {
				outAt = n
			}
		}
	}
	if outAt == 0 {
		t.Fatalf("%d messages of 30 KB published and the stalled clients are still connected", n)
	}
	end := mustPublish(t, base, channel, `{"end":true}`)
	last := end.Offset
	t.Logf("both stalled clients disconnected as slow consumers after %d messages of 30 KB; %d published in %s", outAt, last, time.Since(start).Round(time.Millisecond))

	// Everyone else got everything, in order, once.
	for _, r := range readers {
		select {
		case <-r.done:
		case <-time.After(60 * time.Second):
			t.Fatalf("%s still waiting after 60s with %d messages", r.name, len(r.offsets))
		}
		if r.err != nil {
			t.Errorf("%s: %v", r.name, r.err)
			continue
		}
		checkOffsets(t, r.name, r.offsets, 1, last)
	}

	// The stalled SSE client reads on: what the server had sent or queued
	// comes, in order, then herald.disconnect slow_consumer; it resumes
	// with its last id and gets exactly the rest.
	var sseGot []uint64
	lastID := connectedID
	for _, ev := range expectSSEDisconnect(t, stalledSSE, "stalled SSE client", "slow_consumer", true) {
		var env envelope
		if err := json.Unmarshal([]byte(ev.data), &env); err != nil || ev.id == "" {
			t.Fatalf("stalled SSE client: event %+v", ev)
		}
		sseGot = append(sseGot, env.Offset)
		lastID = ev.id
	}
	k := uint64(len(sseGot))
	checkOffsets(t, "stalled SSE client before the disconnect", sseGot, 1, k)
	resumed := mustOpen(t, sseDriver{}, base, apiKey, []string{channel}, &mark{cursor: lastID})
	var resumedGot []uint64
	for _, env := range collectMessages(t, resumed, int(last-k)) {
		resumedGot = append(resumedGot, env.Offset)
	}
	checkOffsets(t, "stalled SSE client after resuming", resumedGot, k+1, last)

	// The stalled WebSocket client likewise: the rest of what was queued,
	// the disconnect push and close 4009, then a resume from its offset.
	var wsGot []uint64
	epoch := ""
	for _, env := range expectWSDisconnect(t, stalledWS, "stalled WebSocket client", 4009, "slow_consumer", true) {
		wsGot = append(wsGot, env.Offset)
		epoch = env.Epoch
	}
	kw := uint64(len(wsGot))
	checkOffsets(t, "stalled WebSocket client before the disconnect", wsGot, 1, kw)
	wsResumed := mustOpen(t, wsDriver{}, base, apiKey, []string{channel}, &mark{channels: map[string]position{channel: {offset: kw, epoch: epoch}}})
	resumedGot = resumedGot[:0]
	for _, env := range collectMessages(t, wsResumed, int(last-kw)) {
		resumedGot = append(resumedGot, env.Offset)
	}
	checkOffsets(t, "stalled WebSocket client after resuming", resumedGot, kw+1, last)
	t.Logf("the stalled SSE client had received %d messages, the WebSocket one %d, before the disconnect", k, kw)

	// Exactly the two stalled sessions were cut, and the log says so.
	s := scrapeMetrics(t, base, "")
	for _, tr := range []string{"sse", "ws", "poll"} {
		want := 1.0
		if tr == "poll" {
			want = 0
		}
		if got := metricSum(s, closed, slow(tr)); got != want {
			t.Errorf(`%s{reason="slow_consumer",transport=%q} is %g, want %g`, closed, tr, got, want)
		}
	}
	if got := strings.Count(srv.log.String(), "reason=slow_consumer"); got != 2 {
		t.Errorf("the server logged %d sessions closed as slow consumers, want 2", got)
	}
}

// --- 4. batching ---

// batchReader collects one transport's messages by write: an SSE chunk, a
// WebSocket frame, a long-poll answer.
type batchReader struct {
	name    string
	n       int
	offsets []uint64
	writes  []int // messages per write, among the first n
	kinds   map[string]int
	lone    time.Time // when message n+1 came
	err     error
	haveN   chan struct{} // closed once the first n are in
	done    chan struct{} // closed once n+1 are in, or on error
}

func newBatchReader(name string, n int) *batchReader {
	return &batchReader{name: name, n: n, kinds: map[string]int{}, haveN: make(chan struct{}), done: make(chan struct{})}
}

// take records the messages of one write.
func (r *batchReader) take(offs []uint64) {
	now := time.Now()
	for i, off := range offs {
		r.offsets = append(r.offsets, off)
		switch {
		case off > uint64(r.n):
			r.lone = now
		case i == 0:
			r.writes = append(r.writes, 1)
		default:
			r.writes[len(r.writes)-1]++
		}
		if len(r.offsets) == r.n {
			close(r.haveN)
		}
	}
}

// TestBatchRuleOverEveryTransport: on a channel whose rule batches
// (size 20, timeout 200ms), 100 messages published quickly arrive in
// order, exactly once, over every transport — in few writes: few SSE
// chunks, few WebSocket frames (batch pushes), few long-poll answers —
// and a lone message is not held past the timeout.
func TestBatchRuleOverEveryTransport(t *testing.T) {
	const (
		channel = "ticks"
		n       = 100
	)
	srv := startFlowServer(t, `channels:
  - pattern: "ticks"
    subscribe: ["system"]
    publish: ["system"]
    batch: {size: 20, timeout: 200ms}
`)
	base := srv.url()

	sse, _, _ := openSSEStream(t, base, "channel="+channel, apiKey, "", 0)
	ws := openWS(t, base, apiKey, 0)
	ws.subscribe(channel, nil)
	_, first, _ := flowPoll(t, base, apiKey, url.Values{"channel": {channel}, "timeout": {"0"}})

	sr, wr, pr := newBatchReader("sse", n), newBatchReader("ws", n), newBatchReader("poll", n)
	go func() { // SSE: one chunk is one write
		defer close(sr.done)
		chunk := -1
		for len(sr.offsets) <= n {
			ev, err := sse.next(20 * time.Second)
			if err != nil {
				sr.err = fmt.Errorf("after %d messages: %w", len(sr.offsets), err)
				return
			}
			var env envelope
			if err := json.Unmarshal([]byte(ev.data), &env); err != nil || env.Offset == 0 {
				sr.err = fmt.Errorf("event %+v", ev)
				return
			}
			if ev.chunk != chunk {
				sr.take([]uint64{env.Offset})
				chunk = ev.chunk
			} else { // same write as the one before
				sr.offsets = append(sr.offsets, env.Offset)
				if env.Offset <= n {
					sr.writes[len(sr.writes)-1]++
				} else {
					sr.lone = time.Now()
				}
				if len(sr.offsets) == n {
					close(sr.haveN)
				}
			}
		}
	}()
	go func() { // WebSocket: frames
		defer close(wr.done)
		for len(wr.offsets) <= n {
			f, err := ws.read(20 * time.Second)
			if err != nil {
				wr.err = fmt.Errorf("after %d messages: %w", len(wr.offsets), err)
				return
			}
			envs, err := f.envelopes()
			if err != nil || len(envs) == 0 {
				wr.err = fmt.Errorf("frame %s (%v)", f.raw, err)
				return
			}
			offs := make([]uint64, len(envs))
			for i, e := range envs {
				offs[i] = e.Offset
			}
			if offs[0] <= n {
				wr.kinds[f.Type]++
			}
			wr.take(offs)
		}
	}()
	go func() { // long polling: answers
		defer close(pr.done)
		cursor, sess := first.Cursor, first.Session
		client := &http.Client{Timeout: 30 * time.Second}
		defer client.CloseIdleConnections()
		for len(pr.offsets) <= n {
			q := url.Values{"channel": {channel}, "cursor": {cursor}, "session": {sess}, "timeout": {"10"}}
			req, _ := http.NewRequest(http.MethodGet, base+"/poll?"+q.Encode(), nil)
			req.Header.Set("Authorization", "Bearer "+apiKey)
			resp, err := client.Do(req)
			if err != nil {
				pr.err = err
				return
			}
			var ans pollAnswer
			err = json.NewDecoder(resp.Body).Decode(&ans)
			resp.Body.Close()
			if err != nil || resp.StatusCode != 200 {
				pr.err = fmt.Errorf("poll: %d %v", resp.StatusCode, err)
				return
			}
			cursor, sess = ans.Cursor, ans.Session
			var offs []uint64
			for _, m := range ans.Messages {
				var env envelope
				if err := json.Unmarshal(m, &env); err != nil {
					pr.err = err
					return
				}
				offs = append(offs, env.Offset)
			}
			if len(offs) > 0 {
				pr.take(offs)
			}
		}
	}()

	// 100 messages, quickly; once every transport has them, a lone one.
	pubStart := time.Now()
	mustPublishRange(t, base, channel, 1, n)
	t.Logf("%d messages published in %s", n, time.Since(pubStart).Round(time.Millisecond))
	readers := []*batchReader{sr, wr, pr}
	for _, r := range readers {
		select {
		case <-r.haveN:
		case <-r.done:
			t.Fatalf("%s: %v", r.name, r.err)
		case <-time.After(30 * time.Second):
			t.Fatalf("%s: not all %d messages within 30s", r.name, n)
		}
	}
	loneSent := time.Now()
	mustPublish(t, base, channel, fmt.Sprintf(`{"i":%d}`, n+1))
	for _, r := range readers {
		select {
		case <-r.done:
		case <-time.After(30 * time.Second):
			t.Fatalf("%s: no message %d within 30s", r.name, n+1)
		}
		if r.err != nil {
			t.Errorf("%s: %v", r.name, r.err)
			continue
		}
		checkOffsets(t, r.name, r.offsets, 1, n+1)
		biggest := slices.Max(r.writes)
		t.Logf("%s: %d messages in %d writes %v; the lone message came %s after it was published",
			r.name, n, len(r.writes), r.writes, r.lone.Sub(loneSent).Round(time.Millisecond))
		if len(r.writes)*4 > n || biggest < 10 {
			t.Errorf("%s: %d messages came in %d writes %v; batching should need far fewer", r.name, n, len(r.writes), r.writes)
		}
		if wait := r.lone.Sub(loneSent); wait > time.Second {
			t.Errorf("%s: the lone message came %s after it was published; the batch timeout is 200ms", r.name, wait)
		}
	}
	if wr.kinds["batch"] == 0 {
		t.Errorf("ws: no batch push among %v", wr.kinds)
	}
	t.Logf("ws frames by type: %v", wr.kinds)
}
