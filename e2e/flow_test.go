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
	"maps"
	"math"
	"net"
	"net/http"
	"net/textproto"
	"net/url"
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

// drainSSE reads a stream to its end: every event, and how it ended
// (io.EOF after a proper last chunk).
func drainSSE(s *rawSSE) ([]rawEvent, error) {
	var evs []rawEvent
	for {
		ev, err := s.next(20 * time.Second)
		if err != nil {
			return evs, err
		}
		evs = append(evs, ev)
	}
}

// checkSSEDisconnect checks a drained stream: its last event is
// herald.disconnect with reason and reconnect (and no id), then the
// stream ended properly. It returns the events before.
func checkSSEDisconnect(evs []rawEvent, end error, reason string, reconnect bool) ([]rawEvent, error) {
	if len(evs) == 0 || evs[len(evs)-1].name != "herald.disconnect" {
		return nil, fmt.Errorf("the stream ended (%v) without herald.disconnect; last events %+v", end, evs[max(0, len(evs)-2):])
	}
	last := evs[len(evs)-1]
	var d disconnectData
	if err := json.Unmarshal([]byte(last.data), &d); err != nil || d.Reason != reason || d.Reconnect != reconnect || last.id != "" {
		return nil, fmt.Errorf("herald.disconnect %q (id %q), want {\"reason\":%q,\"reconnect\":%v} and no id", last.data, last.id, reason, reconnect)
	}
	if end != io.EOF {
		return nil, fmt.Errorf("after herald.disconnect the stream ended with %v, want the last chunk", end)
	}
	return evs[:len(evs)-1], nil
}

// expectSSEDisconnect reads the stream to its end: the last event must be
// herald.disconnect with reason and reconnect, then the stream ends. It
// returns the events that came before it.
func expectSSEDisconnect(t testing.TB, s *rawSSE, who, reason string, reconnect bool) []rawEvent {
	t.Helper()
	evs, end := drainSSE(s)
	before, err := checkSSEDisconnect(evs, end, reason, reconnect)
	if err != nil {
		t.Fatalf("%s: %v", who, err)
	}
	return before
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

// drainWS reads a connection to its end: every frame, and the error that
// ended it (a *websocket.CloseError for a close frame).
func drainWS(c *rawWS) ([]wsIn, error) {
	var fs []wsIn
	for {
		f, err := c.read(20 * time.Second)
		if err != nil {
			return fs, err
		}
		fs = append(fs, f)
	}
}

// checkWSDisconnect checks a drained connection: its last frame is a
// disconnect push with code, reason and reconnect, then a close with
// code. It returns the envelopes that came before.
func checkWSDisconnect(fs []wsIn, end error, code int, reason string, reconnect bool) ([]envelope, error) {
	if len(fs) == 0 || fs[len(fs)-1].Type != "disconnect" {
		return nil, fmt.Errorf("the connection ended (%v) without a disconnect push", end)
	}
	if d := fs[len(fs)-1]; d.Code != code || d.Reason != reason || d.Reconnect != reconnect {
		return nil, fmt.Errorf("disconnect push %s, want code %d, reason %q, reconnect %v", d.raw, code, reason, reconnect)
	}
	var ce *websocket.CloseError
	if !errors.As(end, &ce) || ce.Code != code {
		return nil, fmt.Errorf("after the disconnect push: %v, want a close with code %d", end, code)
	}
	var envs []envelope
	for _, f := range fs[:len(fs)-1] {
		e, err := f.envelopes()
		if err != nil {
			return nil, err
		}
		envs = append(envs, e...)
	}
	return envs, nil
}

// expectWSDisconnect reads to the end of the connection: a disconnect
// push with code, reason and reconnect, then the close with code. It
// returns the envelopes that came before.
func expectWSDisconnect(t testing.TB, c *rawWS, who string, code int, reason string, reconnect bool) []envelope {
	t.Helper()
	fs, end := drainWS(c)
	envs, err := checkWSDisconnect(fs, end, code, reason, reconnect)
	if err != nil {
		t.Fatalf("%s: %v", who, err)
	}
	return envs
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
		after   = 20 // published once both stalled clients are out
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

	// Publish 30 KB messages at speed (four publishers) until both
	// stalled clients are out, then some more.
	slow := func(transport string) map[string]string {
		return map[string]string{"reason": "slow_consumer", "transport": transport}
	}
	const closed = "herald_sessions_closed_total"
	pad := strings.Repeat("x", 30<<10)
	start := time.Now()
	var (
		published atomic.Int64 // acknowledged publishes
		outAt     atomic.Int64 // published when both were seen out
		outTime   time.Time    // when (the watcher's, read after it ends)
		pubsDone  atomic.Bool  // the publishers have stopped
		// What the stalled clients read once they are out.
		sseDrained, wsDrained = make(chan struct{}), make(chan struct{})
		sseEvs                []rawEvent
		sseEnd, wsEnd         error
		wsFrames              []wsIn
		pubWG                 sync.WaitGroup
		pubErr                = make(chan error, 5)
	)
	for range 4 {
		pubWG.Go(func() {
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			for {
				n, out := published.Load(), outAt.Load()
				if n >= maxMsgs || out < 0 || (out > 0 && n >= out+after) {
					return
				}
				if _, _, err := publish(ctx, base, channel, fmt.Sprintf(`{"pad":%q}`, pad), ""); err != nil {
					pubErr <- err
					return
				}
				published.Add(1)
			}
		})
	}
	watchDone := make(chan struct{})
	go func() { // the stalled clients' end, seen in the metrics
		defer close(watchDone)
		for outAt.Load() == 0 && !pubsDone.Load() {
			s, err := fetchMetrics(base, "")
			if err != nil {
				pubErr <- err
				outAt.Store(-1) // stops the publishers
				return
			}
			if metricSum(s, closed, slow("sse")) >= 1 && metricSum(s, closed, slow("ws")) >= 1 {
				outTime = time.Now()
				outAt.Store(max(1, published.Load()))
				// The stalled clients read on at once, as a client that
				// wakes up would (and before the server's write timeout).
				go func() { defer close(sseDrained); sseEvs, sseEnd = drainSSE(stalledSSE) }()
				go func() { defer close(wsDrained); wsFrames, wsEnd = drainWS(stalledWS) }()
			}
			time.Sleep(20 * time.Millisecond) // a scrape rate, not a synchronisation
		}
	}()
	pubWG.Wait()
	pubsDone.Store(true)
	<-watchDone
	select {
	case err := <-pubErr:
		t.Fatal(err)
	default:
	}
	if outAt.Load() == 0 {
		t.Fatalf("%d messages of 30 KB published and the stalled clients are still connected", published.Load())
	}
	end := mustPublish(t, base, channel, `{"end":true}`)
	last := end.Offset
	before, took := outAt.Load(), outTime.Sub(start)
	t.Logf("both stalled clients disconnected as slow consumers once about %d messages of 30 KB were published (%s, %.0f/s); then %d more in %s (%.0f/s)",
		before, took.Round(time.Millisecond), float64(before)/took.Seconds(),
		int64(last)-before, time.Since(outTime).Round(time.Millisecond), float64(int64(last)-before)/time.Since(outTime).Seconds())

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

	// The stalled SSE client read on: what the server had sent or queued
	// came, in order, then herald.disconnect slow_consumer; it resumes
	// with its last id and gets exactly the rest.
	<-sseDrained
	evs, err := checkSSEDisconnect(sseEvs, sseEnd, "slow_consumer", true)
	if err != nil {
		t.Fatalf("stalled SSE client: %v", err)
	}
	var sseGot []uint64
	lastID := connectedID
	for _, ev := range evs {
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
	<-wsDrained
	wsEnvs, err := checkWSDisconnect(wsFrames, wsEnd, 4009, "slow_consumer", true)
	if err != nil {
		t.Fatalf("stalled WebSocket client: %v", err)
	}
	var wsGot []uint64
	epoch := ""
	for _, env := range wsEnvs {
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

	// The two stalled sessions were cut as slow consumers, and the log
	// says so. A long-poll session of a normal reader may be cut too on a
	// loaded machine (its queue fills between two polls of 30 KB
	// messages); its next poll rebuilds it from its cursor, which the
	// in-order checks above prove lossless.
	s := scrapeMetrics(t, base, "")
	for _, tr := range []string{"sse", "ws"} {
		if got := metricSum(s, closed, slow(tr)); got != 1 {
			t.Errorf(`%s{reason="slow_consumer",transport=%q} is %g, want 1`, closed, tr, got)
		}
	}
	polls := metricSum(s, closed, slow("poll"))
	if got := strings.Count(srv.log.String(), "reason=slow_consumer"); got != 2+int(polls) {
		t.Errorf("the server logged %d sessions closed as slow consumers, want %d", got, 2+int(polls))
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

// --- 5. broadcast ---

// broadcastAnswer is the answer of POST /api/broadcast.
type broadcastAnswer struct {
	Results []struct {
		Channel string    `json:"channel"`
		Offset  uint64    `json:"offset"`
		Epoch   string    `json:"epoch"`
		ID      string    `json:"id"`
		Error   *apiError `json:"error"`
	} `json:"results"`
}

// broadcast posts body with the API key; it must be a 200 that reaches
// exactly the channels want, each at offset 1 more than before.
func broadcast(t testing.TB, base string, body map[string]any, want map[string]uint64) {
	t.Helper()
	var ans broadcastAnswer
	code, raw := apiCall(t, http.MethodPost, base+"/api/broadcast", apiKey, body, &ans)
	if code != 200 {
		t.Fatalf("POST /api/broadcast %v: %d %s", body, code, raw)
	}
	got := map[string]uint64{}
	for _, r := range ans.Results {
		if r.Error != nil || r.Epoch == "" || r.ID == "" {
			t.Fatalf("POST /api/broadcast %v: result %+v in %s", body, r, raw)
		}
		got[r.Channel] = r.Offset
	}
	if !maps.Equal(got, want) {
		t.Fatalf("POST /api/broadcast %v reached %v, want %v (%s)", body, got, want, raw)
	}
}

// expectNotice receives the next message of c: event notice on channel at
// offset, with data.
func expectNotice(t testing.TB, who string, c conn, channel string, offset uint64, data string) {
	t.Helper()
	e, err := c.recv(20 * time.Second)
	if err != nil {
		t.Fatalf("%s: waiting for %s offset %d: %v", who, channel, offset, err)
	}
	if e.Event != "notice" || e.Channel != channel || e.Offset != offset || string(e.Data) != data {
		t.Fatalf("%s: got %s %s offset %d %s, want notice %s offset %d %s", who, e.Event, e.Channel, e.Offset, e.Data, channel, offset, data)
	}
}

// TestBroadcastToUsersIsResumable: a broadcast to every connected user
// whose token attributes match a filter lands on each such user's system
// channel — herald.user.<id>, named by herald.connected and the WebSocket
// connected push — live on every transport, in that user's history, and
// again on a resume from before it; users who do not match get nothing.
// A broadcast to named channels is stored in each channel's own log.
func TestBroadcastToUsersIsResumable(t *testing.T) {
	srv := startFlowServer(t, `channels:
  - pattern: "lobby"
    subscribe: ["authenticated"]
    publish: ["system"]
`)
	base := srv.url()
	toks := permTokens(t, map[string][]string{
		"ada": {"--sub", "ada", "--attr", "status=active"},
		"bo":  {"--sub", "bo", "--attr", "status=idle"},
	})

	// Each user learns its system channel when it connects.
	_, adaInfo, _ := openSSEStream(t, base, "channel=lobby", toks["ada"], "", 0)
	adaWS := openWS(t, base, toks["ada"], 0)
	boWS := openWS(t, base, toks["bo"], 0)
	adaCh, boCh := adaInfo.UserChannel, boWS.hello.UserChannel
	if adaCh != "herald.user.ada" || adaWS.hello.UserChannel != adaCh || boCh != "herald.user.bo" {
		t.Fatalf("user channels: herald.connected %q, connected pushes %q and %q; want herald.user.ada and herald.user.bo",
			adaCh, adaWS.hello.UserChannel, boCh)
	}
	adaWS.subscribe(adaCh, nil)
	boWS.subscribe(boCh, nil)

	// Ada listens to hers over every transport, Bo to his over SSE and
	// long polling; each keeps where it started.
	ada, adaFrom := map[string]conn{}, map[string]*mark{}
	for _, d := range drivers {
		c := mustOpen(t, d, base, toks["ada"], []string{adaCh}, nil)
		ada[d.name()], adaFrom[d.name()] = c, c.mark()
	}
	bo := map[string]conn{
		"sse":  mustOpen(t, sseDriver{}, base, toks["bo"], []string{boCh}, nil),
		"poll": mustOpen(t, pollDriver{}, base, toks["bo"], []string{boCh}, nil),
	}

	// To the active users: Ada only.
	const active, idle, everyone = `{"text":"maintenance at 5"}`, `{"text":"we miss you"}`, `{"text":"hello all"}`
	broadcast(t, base, map[string]any{"users": true, "filter": map[string]string{"status": "active"}, "event": "notice", "data": json.RawMessage(active)},
		map[string]uint64{adaCh: 1})
	for name, c := range ada {
		expectNotice(t, "ada over "+name, c, adaCh, 1, active)
	}
	f, err := adaWS.read(20 * time.Second)
	if envs, _ := f.envelopes(); err != nil || len(envs) != 1 || envs[0].Event != "notice" || envs[0].Channel != adaCh || string(envs[0].Data) != active {
		t.Fatalf("ada's raw WebSocket: %s (%v), want the notice", f.raw, err)
	}

	// To the idle users: Bo, whose first message it is — he did not get
	// Ada's.
	broadcast(t, base, map[string]any{"users": true, "filter": map[string]string{"status": "idle"}, "event": "notice", "data": json.RawMessage(idle)},
		map[string]uint64{boCh: 1})
	for name, c := range bo {
		expectNotice(t, "bo over "+name, c, boCh, 1, idle)
	}
	f, err = boWS.read(20 * time.Second)
	if envs, _ := f.envelopes(); err != nil || len(envs) != 1 || envs[0].Channel != boCh || string(envs[0].Data) != idle {
		t.Fatalf("bo's raw WebSocket: %s (%v), want his notice", f.raw, err)
	}

	// To every connected user: both.
	broadcast(t, base, map[string]any{"users": true, "event": "notice", "data": json.RawMessage(everyone)},
		map[string]uint64{adaCh: 2, boCh: 2})
	for name, c := range ada {
		expectNotice(t, "ada over "+name, c, adaCh, 2, everyone)
	}
	for name, c := range bo {
		expectNotice(t, "bo over "+name, c, boCh, 2, everyone)
	}

	// Ada's history holds hers, read with her own token; nobody else's.
	var page historyPage
	if code, raw := apiCall(t, http.MethodGet, base+"/api/history?channel="+adaCh, toks["ada"], nil, &page); code != 200 {
		t.Fatalf("ada's GET /api/history?channel=%s: %d %s", adaCh, code, raw)
	}
	var datas []string
	for _, m := range page.Messages {
		var e envelope
		_ = json.Unmarshal(m, &e)
		datas = append(datas, fmt.Sprintf("%s@%d %s", e.Event, e.Offset, e.Data))
	}
	if want := []string{"notice@1 " + active, "notice@2 " + everyone}; !slices.Equal(datas, want) {
		t.Errorf("ada's history: %v, want %v", datas, want)
	}
	for _, c := range []struct{ who, method, url string }{
		{"bo", http.MethodGet, base + "/api/history?channel=" + adaCh},
		{"ada", http.MethodGet, base + "/api/history?channel=" + boCh},
	} {
		if code, raw := apiCall(t, c.method, c.url, toks[c.who], nil, nil); code != 403 {
			t.Errorf("%s: %s %s: %d %s, want 403", c.who, c.method, c.url, code, raw)
		}
	}
	if code, raw := apiCall(t, http.MethodPost, base+"/api/publish", toks["ada"], map[string]any{"channel": adaCh, "data": 1}, nil); code != 403 {
		t.Errorf("ada publishing on her own system channel: %d %s, want 403 (only the API key publishes there)", code, raw)
	}

	// A resume from before the broadcasts brings them again.
	for _, d := range drivers {
		c := ada[d.name()]
		c.close()
		again := mustOpen(t, d, base, toks["ada"], []string{adaCh}, adaFrom[d.name()])
		expectNotice(t, "ada resuming over "+d.name(), again, adaCh, 1, active)
		expectNotice(t, "ada resuming over "+d.name(), again, adaCh, 2, everyone)
	}

	// To named channels: each stores it in its own log.
	broadcast(t, base, map[string]any{"channels": []string{"a", "b"}, "event": "notice", "data": json.RawMessage(`{"text":"to both"}`)},
		map[string]uint64{"a": 1, "b": 1})
	for _, ch := range []string{"a", "b"} {
		_, envs := history(t, base, ch)
		if len(envs) != 1 || envs[0].Event != "notice" || envs[0].Offset != 1 || string(envs[0].Data) != `{"text":"to both"}` {
			t.Errorf("history of %s: %+v, want the broadcast at offset 1", ch, envs)
		}
	}

	// Mistakes are refused with a reason.
	for _, c := range []struct {
		tok  string
		body map[string]any
		code int
	}{
		{apiKey, map[string]any{"users": true, "channels": []string{"a"}, "data": 1}, 400},
		{apiKey, map[string]any{"channels": []string{"a"}, "filter": map[string]string{"status": "idle"}, "data": 1}, 400},
		{apiKey, map[string]any{"data": 1}, 400},
		{toks["ada"], map[string]any{"users": true, "data": 1}, 403},
	} {
		code, raw := apiCall(t, http.MethodPost, base+"/api/broadcast", c.tok, c.body, nil)
		if e := errorOf(t, raw); code != c.code || e.Code != c.code || e.Message == "" {
			t.Errorf("POST /api/broadcast %v: %d %s, want %d with a message", c.body, code, raw, c.code)
		}
	}
}

// --- 6. moderation ---

// checkRefusedAsBanned opens SSE, a long poll, a WebSocket and a publish as
// tok and checks each is refused naming the ban. It returns how the
// WebSocket refusal looked, for the log.
func checkRefusedAsBanned(t *testing.T, base, tok, user, channel string) string {
	t.Helper()
	names := func(msg string) bool {
		return strings.Contains(msg, "banned") && strings.Contains(msg, fmt.Sprintf("%q", user))
	}
	s := dialSSE(t, base, "channel="+channel, tok, "", 0)
	if e := errorOf(t, s.body); s.status != 403 || e.Code != 403 || !names(e.Message) {
		t.Errorf("banned %s: GET /sse: %d %s, want 403 naming the ban", user, s.status, s.body)
	}
	code, _, raw := flowPoll(t, base, tok, url.Values{"channel": {channel}, "timeout": {"0"}})
	if e := errorOf(t, raw); code != 403 || e.Code != 403 || !names(e.Message) {
		t.Errorf("banned %s: GET /poll: %d %s, want 403 naming the ban", user, code, raw)
	}
	code, raw = apiCall(t, http.MethodPost, base+"/api/publish", tok, map[string]any{"channel": channel, "data": 1}, nil)
	if e := errorOf(t, raw); code != 403 || !names(e.Message) {
		t.Errorf("banned %s: POST /api/publish: %d %s, want 403 naming the ban", user, code, raw)
	}
	ws, resp, raw, err := dialWSRaw(t, base, tok, 0)
	if err != nil {
		if resp == nil || resp.StatusCode != 403 || !names(string(raw)) {
			t.Errorf("banned %s: GET /ws: %v (%v %s), want a refusal naming the ban", user, err, resp, raw)
		}
		return fmt.Sprintf("%d %s", resp.StatusCode, raw)
	}
	// Upgraded: the refusal is a close frame (credentials are checked
	// after the upgrade, PROTOCOL.md "Identity").
	_ = ws.SetReadDeadline(time.Now().Add(20 * time.Second))
	_, frame, err := ws.ReadMessage()
	var ce *websocket.CloseError
	if !errors.As(err, &ce) || (ce.Code != 4001 && ce.Code != 4008) || !names(ce.Text) {
		t.Errorf("banned %s: GET /ws upgraded, then %q / %v; want a close 4001 or 4008 naming the ban", user, frame, err)
		return fmt.Sprint(err)
	}
	return fmt.Sprintf("upgrade, then close %d %q", ce.Code, ce.Text)
}

// TestDisconnectAndBanOverEveryTransport: POST /api/disconnect ends every
// session of a user, on every transport, with the reason; POST /api/ban
// does too and refuses the user's new connections everywhere, across a
// SIGKILL and restart, until DELETE /api/ban. Another user is untouched.
func TestDisconnectAndBanOverEveryTransport(t *testing.T) {
	const room = "room"
	srv := startFlowServer(t, `channels:
  - pattern: "room"
    subscribe: ["authenticated"]
    publish: ["authenticated"]
`)
	base := srv.url()
	toks := permTokens(t, map[string][]string{"troll": {"--sub", "troll"}, "nice": {"--sub", "nice"}})
	nice := mustOpen(t, sseDriver{}, base, toks["nice"], []string{room}, nil)

	// The troll on every transport.
	sse, _, _ := openSSEStream(t, base, "channel="+room, toks["troll"], "", 0)
	ws := openWS(t, base, toks["troll"], 0)
	ws.subscribe(room, nil)
	code, first, raw := flowPoll(t, base, toks["troll"], url.Values{"channel": {room}, "timeout": {"0"}})
	if code != 200 {
		t.Fatalf("troll's first poll: %d %s", code, raw)
	}

	// Disconnect: all three end, told why; the poll session is gone.
	var dis struct {
		User           string `json:"user"`
		SessionsClosed int    `json:"sessions_closed"`
	}
	if code, raw := apiCall(t, http.MethodPost, base+"/api/disconnect", apiKey, map[string]any{"user": "troll"}, &dis); code != 200 || dis.User != "troll" || dis.SessionsClosed != 3 {
		t.Fatalf("POST /api/disconnect: %d %s, want the troll's 3 sessions closed", code, raw)
	}
	expectSSEDisconnect(t, sse, "troll's SSE stream", "disconnected", false)
	expectWSDisconnect(t, ws, "troll's WebSocket", 4008, "disconnected", false)
	code, next, raw := flowPoll(t, base, toks["troll"], url.Values{"channel": {room}, "cursor": {first.Cursor}, "session": {first.Session}, "timeout": {"0"}})
	if code != 200 || next.Session == first.Session {
		t.Fatalf("troll's poll after the disconnect: %d %s; want a new session (not %s)", code, raw, first.Session)
	}
	mustPublish(t, base, room, `{"i":1}`)
	expectMessage(t, nice, room, 1)

	// Ban: the open sessions end with reason banned, and every new
	// connection is refused naming the ban.
	sse, _, _ = openSSEStream(t, base, "channel="+room, toks["troll"], "", 0)
	ws = openWS(t, base, toks["troll"], 0)
	ws.subscribe(room, nil)
	var ban struct {
		User  string `json:"user"`
		Until string `json:"until"`
	}
	code, raw = apiCall(t, http.MethodPost, base+"/api/ban", apiKey, map[string]any{"user": "troll", "duration": "1h"}, &ban)
	until, err := time.Parse(time.RFC3339Nano, ban.Until)
	if code != 200 || ban.User != "troll" || err != nil || until.Before(time.Now().Add(59*time.Minute)) || until.After(time.Now().Add(61*time.Minute)) {
		t.Fatalf("POST /api/ban: %d %s, want the troll banned for an hour", code, raw)
	}
	expectSSEDisconnect(t, sse, "troll's SSE stream", "banned", false)
	expectWSDisconnect(t, ws, "troll's WebSocket", 4008, "banned", false)
	wsRefusal := checkRefusedAsBanned(t, base, toks["troll"], "troll", room)
	t.Logf("a banned user's WebSocket: %s", wsRefusal)
	mustPublish(t, base, room, `{"i":2}`)
	expectMessage(t, nice, room, 2)
	s := scrapeMetrics(t, base, "")
	for action, want := range map[string]float64{"disconnect": 1, "ban": 1} {
		if got := metricSum(s, "herald_moderation_total", map[string]string{"action": action}); got != want {
			t.Errorf(`herald_moderation_total{action=%q} is %g, want %g`, action, got, want)
		}
	}
	for _, line := range []string{`msg="user disconnected" user=troll`, `msg="user banned" user=troll`} {
		if !strings.Contains(srv.log.String(), line) {
			t.Errorf("the server log has no %s", line)
		}
	}

	// The ban is durable: still refused after SIGKILL and a restart.
	srv.kill()
	srv.restart()
	checkRefusedAsBanned(t, base, toks["troll"], "troll", room)
	mustOpen(t, sseDriver{}, base, toks["nice"], []string{room}, nil)

	// Lifted: allowed again everywhere.
	var unban struct {
		User   string `json:"user"`
		Banned bool   `json:"banned"`
	}
	if code, raw := apiCall(t, http.MethodDelete, base+"/api/ban", apiKey, map[string]any{"user": "troll"}, &unban); code != 200 || unban.User != "troll" || unban.Banned {
		t.Fatalf("DELETE /api/ban: %d %s", code, raw)
	}
	var back []conn
	for _, d := range drivers {
		back = append(back, mustOpen(t, d, base, toks["troll"], []string{room}, nil))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	res, _, err := apiPublish(ctx, base, toks["troll"], map[string]any{"channel": room, "data": map[string]int{"i": 3}})
	if err != nil || res.Offset != 3 {
		t.Fatalf("the troll publishing after the ban is lifted: %+v %v", res, err)
	}
	for _, c := range back {
		expectMessage(t, c, room, 3)
	}
}

// --- 7. connections per user ---

// TestConnectionLimitCloseOldest: with limits.max_connections_per_user 2,
// close_oldest makes a user's third session (any transport) close the
// oldest with herald.disconnect replaced; reject refuses the third with
// 429 (a WebSocket with close 4008) and leaves the two alone.
func TestConnectionLimitCloseOldest(t *testing.T) {
	config := func(mode string) string {
		return `channels:
  - pattern: "room"
    subscribe: ["authenticated"]
    publish: ["system"]
limits:
  max_connections_per_user: 2
  on_connection_limit: ` + mode + "\n"
	}
	toks := permTokens(t, map[string][]string{"multi": {"--sub", "multi"}})
	tok := toks["multi"]
	expectData := func(who string, s *rawSSE, data string) {
		t.Helper()
		ev := s.mustNext(who)
		var e envelope
		if err := json.Unmarshal([]byte(ev.data), &e); err != nil || string(e.Data) != data {
			t.Fatalf("%s: got %+v, want the message %s", who, ev, data)
		}
	}

	t.Run("close_oldest", func(t *testing.T) {
		srv := startFlowServer(t, config("close_oldest"))
		base := srv.url()
		first, _, _ := openSSEStream(t, base, "channel=room", tok, "", 0)
		second, _, _ := openSSEStream(t, base, "channel=room", tok, "", 0)
		third, _, _ := openSSEStream(t, base, "channel=room", tok, "", 0)
		expectSSEDisconnect(t, first, "the first stream", "replaced", false)
		mustPublish(t, base, "room", `{"i":1}`)
		expectData("the second stream", second, `{"i":1}`)
		expectData("the third stream", third, `{"i":1}`)

		// A WebSocket counts the same: it replaces the (now) oldest.
		ws := openWS(t, base, tok, 0)
		ws.subscribe("room", nil)
		expectSSEDisconnect(t, second, "the second stream", "replaced", false)
		mustPublish(t, base, "room", `{"i":2}`)
		expectData("the third stream", third, `{"i":2}`)
		if f, err := ws.read(20 * time.Second); err != nil || f.Type != "message" {
			t.Fatalf("the WebSocket: %s %v, want the message", f.raw, err)
		}
		if got := metric(t, base, "", "herald_sessions_closed_total", map[string]string{"reason": "replaced"}); got != 2 {
			t.Errorf(`herald_sessions_closed_total{reason="replaced"} is %g, want 2`, got)
		}
	})

	t.Run("reject", func(t *testing.T) {
		srv := startFlowServer(t, config("reject"))
		base := srv.url()
		first, _, _ := openSSEStream(t, base, "channel=room", tok, "", 0)
		second, _, _ := openSSEStream(t, base, "channel=room", tok, "", 0)

		limited := func(what string, code int, raw []byte) {
			t.Helper()
			e := errorOf(t, raw)
			if code != 429 || e.Code != 429 || e.RetryAfter < 1 || !strings.Contains(e.Message, "the limit is 2") {
				t.Errorf("a third session over %s: %d %s, want 429 with retry_after naming the limit", what, code, raw)
			}
		}
		third := dialSSE(t, base, "channel=room", tok, "", 0)
		limited("SSE", third.status, third.body)
		if third.header.Get("Retry-After") == "" {
			t.Errorf("the 429 of a third SSE stream has no Retry-After header")
		}
		code, _, raw := flowPoll(t, base, tok, url.Values{"channel": {"room"}, "timeout": {"0"}})
		limited("long polling", code, raw)
		ws, resp, raw, err := dialWSRaw(t, base, tok, 0)
		if err != nil {
			t.Fatalf("a third session over WebSocket: %v (%v %s)", err, resp, raw)
		}
		_ = ws.SetReadDeadline(time.Now().Add(20 * time.Second))
		_, frame, err := ws.ReadMessage()
		var ce *websocket.CloseError
		if !errors.As(err, &ce) || ce.Code != 4008 || !strings.Contains(ce.Text, "the limit is 2") {
			t.Errorf("a third session over WebSocket: %q / %v, want close 4008 naming the limit", frame, err)
		}

		// The two are untouched.
		mustPublish(t, base, "room", `{"i":1}`)
		expectData("the first stream", first, `{"i":1}`)
		expectData("the second stream", second, `{"i":1}`)
		if got := metric(t, base, "", "herald_sessions_closed_total", map[string]string{"reason": "replaced"}); got != 0 {
			t.Errorf(`herald_sessions_closed_total{reason="replaced"} is %g, want 0`, got)
		}
	})
}
