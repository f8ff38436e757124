package e2e

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/textproto"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

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
