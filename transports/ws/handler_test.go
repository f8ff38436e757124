package ws

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/gorilla/websocket"
	"github.com/julienschmidt/httprouter"

	"github.com/heraldrt/herald/protocol"
	"github.com/heraldrt/herald/server"
	"github.com/heraldrt/herald/server/servertest"
	"github.com/heraldrt/herald/store"
)

const (
	apiKey = "ws-test-api-key-0123456789"
	secret = "ws-test-jwt-secret-0123456789abcdef0123"
)

type fixture struct {
	srv  *server.Server
	http *httptest.Server
	logs *syncBuffer
}

// syncBuffer collects the server's log and signals every write.
type syncBuffer struct {
	mu      sync.Mutex
	b       bytes.Buffer
	written chan struct{}
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	select {
	case s.written <- struct{}{}:
	default:
	}
	return s.b.Write(p)
}

// waitFor waits until the log holds text.
func (s *syncBuffer) waitFor(t *testing.T, text string) {
	t.Helper()
	deadline := time.After(20 * time.Second)
	for !strings.Contains(s.String(), text) {
		select {
		case <-s.written:
		case <-deadline:
			t.Fatalf("the log never said %q", text)
		}
	}
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func newFixture(t *testing.T, cfg server.Config, opts Options) *fixture {
	t.Helper()
	cfg.APIKey, cfg.JWTSecret = apiKey, secret
	logs := &syncBuffer{written: make(chan struct{}, 1)}
	cfg.Logger = slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	t.Cleanup(func() { // runs after the fixture's own cleanup
		if t.Failed() {
			t.Logf("server log:\n%s", logs.String())
		}
	})
	f := servertest.Start(t, cfg, store.Options{}, func(srv *server.Server, r *httprouter.Router) func(context.Context) error {
		h, err := New(srv, opts)
		if err != nil {
			t.Fatal(err)
		}
		r.Handler(http.MethodGet, "/ws", h)
		return h.Wait
	})
	return &fixture{srv: f.Srv, http: f.HTTP, logs: logs}
}

func token(t *testing.T, sub string, exp time.Duration) string {
	t.Helper()
	c := server.Claims{RegisteredClaims: jwt.RegisteredClaims{Subject: sub}}
	if exp != 0 {
		c.ExpiresAt = jwt.NewNumericDate(time.Now().Add(exp))
	}
	tok, err := server.MintToken(secret, c)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// client is a test WebSocket client that reads every frame into a channel.
type client struct {
	t      *testing.T
	ws     *websocket.Conn
	frames chan map[string]any
	closed chan *websocket.CloseError // the close the server sent, if any
	nextID uint64
}

func (f *fixture) dial(t *testing.T, header http.Header, query string) *client {
	t.Helper()
	c, resp, err := f.tryDial(header, query, nil)
	if err != nil {
		t.Fatalf("dial: %v (%v)", err, resp)
	}
	return f.wrap(t, c)
}

func (f *fixture) tryDial(header http.Header, query string, dialer *websocket.Dialer) (*websocket.Conn, *http.Response, error) {
	if dialer == nil {
		dialer = websocket.DefaultDialer
	}
	if header == nil {
		header = http.Header{"Authorization": {"Bearer " + apiKey}}
	}
	u := "ws" + strings.TrimPrefix(f.http.URL, "http") + "/ws" + query
	return dialer.Dial(u, header)
}

func (f *fixture) wrap(t *testing.T, c *websocket.Conn) *client {
	cl := &client{t: t, ws: c, frames: make(chan map[string]any, 4096), closed: make(chan *websocket.CloseError, 1)}
	go func() {
		defer close(cl.frames)
		for {
			_, data, err := c.ReadMessage()
			if err != nil {
				if ce, ok := err.(*websocket.CloseError); ok {
					cl.closed <- ce
				}
				close(cl.closed)
				return
			}
			var m map[string]any
			if err := json.Unmarshal(data, &m); err != nil {
				t.Errorf("server sent a frame that is not JSON: %q", data)
				continue
			}
			cl.frames <- m
		}
	}()
	t.Cleanup(func() { c.Close() })
	return cl
}

func (c *client) send(v map[string]any) uint64 {
	c.t.Helper()
	c.nextID++
	if _, ok := v["id"]; !ok {
		v["id"] = c.nextID
	}
	if err := c.ws.WriteJSON(v); err != nil {
		c.t.Fatal(err)
	}
	return c.nextID
}

func (c *client) next() map[string]any {
	c.t.Helper()
	select {
	case m, ok := <-c.frames:
		if !ok {
			c.t.Fatal("connection closed")
		}
		return m
	case <-time.After(10 * time.Second):
		c.t.Fatal("no frame within 10s")
	}
	return nil
}

// reply waits for the reply to id, returning pushes seen before it.
func (c *client) reply(id uint64) (map[string]any, []map[string]any) {
	c.t.Helper()
	var before []map[string]any
	for {
		m := c.next()
		if v, ok := m["id"]; ok && uint64(v.(float64)) == id {
			return m, before
		}
		before = append(before, m)
	}
}

// call sends an op and returns its reply.
func (c *client) call(v map[string]any) map[string]any {
	c.t.Helper()
	r, _ := c.reply(c.send(v))
	return r
}

// messages reads pushes until n messages arrived (batches unpacked).
func (c *client) messages(n int) []map[string]any {
	c.t.Helper()
	var out []map[string]any
	for len(out) < n {
		m := c.next()
		switch m["type"] {
		case "message", "reset":
			out = append(out, m["message"].(map[string]any))
		case "batch":
			for _, x := range m["messages"].([]any) {
				out = append(out, x.(map[string]any))
			}
		}
	}
	return out
}

// closeCode waits for the server's close frame.
func (c *client) closeCode() (int, string) {
	c.t.Helper()
	select {
	case ce, ok := <-c.closed:
		if !ok {
			c.t.Fatal("connection ended without a close frame")
		}
		return ce.Code, ce.Text
	case <-time.After(10 * time.Second):
		c.t.Fatal("no close within 10s")
	}
	return 0, ""
}

func (f *fixture) publish(t *testing.T, channel, data string) {
	t.Helper()
	if _, err := f.srv.Publish(context.Background(), server.Identity{System: true}, server.PublishRequest{Channel: channel, Data: json.RawMessage(data)}); err != nil {
		t.Fatal(err)
	}
}

func offsetOf(m map[string]any) uint64 { return uint64(m["offset"].(float64)) }

func TestSubscribeReplyComesBeforeReplayAndLiveFollows(t *testing.T) {
	t.Parallel()
	f := newFixture(t, server.Config{}, Options{})
	for i := 1; i <= 5; i++ {
		f.publish(t, "chat_room_7", fmt.Sprint(i))
	}
	c := f.dial(t, nil, "")
	if m := c.next(); m["type"] != "connected" || !strings.HasPrefix(m["session"].(string), "s_") {
		t.Fatalf("first frame %v", m)
	}
	id := c.send(map[string]any{"op": "subscribe", "channel": "chat_room_7", "since": 2})
	r, before := c.reply(id)
	if len(before) != 0 || r["ok"] != true || r["channel"] != "chat_room_7" || r["offset"].(float64) != 5 || len(r["epoch"].(string)) != 12 {
		t.Fatalf("reply %v after %v", r, before)
	}
	replay := c.messages(3)
	for i, m := range replay {
		if offsetOf(m) != uint64(i+3) {
			t.Fatalf("replay %d: %v", i, m)
		}
	}
	f.publish(t, "chat_room_7", "6")
	if m := c.messages(1)[0]; offsetOf(m) != 6 {
		t.Fatalf("live %v", m)
	}
	// A fresh subscribe starts at the head.
	r = c.call(map[string]any{"op": "subscribe", "channel": "news"})
	if r["ok"] != true || r["offset"].(float64) != 0 {
		t.Fatalf("fresh subscribe %v", r)
	}
}

func TestOpsOverOneConnection(t *testing.T) {
	t.Parallel()
	f := newFixture(t, server.Config{Dev: true}, Options{})
	a := f.dial(t, http.Header{"Authorization": {"Bearer " + token(t, "17", time.Hour)}}, "")
	b := f.dial(t, nil, "")
	a.next()
	b.next()
	for _, c := range []*client{a, b} {
		if r := c.call(map[string]any{"op": "subscribe", "channel": "room"}); r["ok"] != true {
			t.Fatal(r)
		}
	}
	r := a.call(map[string]any{"op": "publish", "channel": "room", "event": "message_sent", "data": map[string]any{"text": "hi"}, "exclude_self": true})
	if r["ok"] != true || r["offset"].(float64) != 1 || !strings.HasPrefix(r["message_id"].(string), "m_") {
		t.Fatalf("publish reply %v", r)
	}
	got := b.messages(1)[0]
	if got["event"] != "message_sent" || got["from"] == nil {
		t.Fatalf("b got %v", got)
	}
	if from := got["from"].(map[string]any); from["user"] != "17" || !strings.HasPrefix(from["session"].(string), "s_") {
		t.Fatalf("from %v", from)
	}
	r = b.call(map[string]any{"op": "publish", "channel": "room", "data": "typing", "ephemeral": true})
	if r["ok"] != true || r["ephemeral"] != true {
		t.Fatalf("ephemeral reply %v", r)
	}
	// a excluded itself from #1: the first thing it sees is b's ephemeral.
	if m := a.messages(1)[0]; m["data"] != "typing" || m["offset"] != nil {
		t.Fatalf("a got %v", m)
	}
	h := a.call(map[string]any{"op": "history", "channel": "room", "since": 0, "limit": 10})
	if h["ok"] != true || h["head"].(float64) != 1 || len(h["messages"].([]any)) != 1 {
		t.Fatalf("history %v", h)
	}
	if r := a.call(map[string]any{"op": "unsubscribe", "channel": "room"}); r["ok"] != true {
		t.Fatal(r)
	}
	if r := a.call(map[string]any{"op": "unsubscribe", "channel": "room"}); r["ok"] != false || !strings.Contains(r["error"].(map[string]any)["message"].(string), "not subscribed") {
		t.Fatal(r)
	}
	if r := a.call(map[string]any{"op": "ping"}); r["ok"] != true {
		t.Fatal(r)
	}
}

func TestHostileInputGetsClearErrorsAndHurtsNobodyElse(t *testing.T) {
	t.Parallel()
	f := newFixture(t, server.Config{}, Options{MaxFrameBytes: 4096})
	bystander := f.dial(t, nil, "")
	bystander.next()
	bystander.call(map[string]any{"op": "subscribe", "channel": "calm"})

	errOf := func(m map[string]any) string {
		if m["ok"] != false {
			t.Fatalf("accepted: %v", m)
		}
		e := m["error"].(map[string]any)
		return fmt.Sprintf("%v %v", e["code"], e["message"])
	}
	c := f.dial(t, nil, "")
	c.next()
	for _, tc := range []struct {
		frame string
		want  string
	}{
		{`garbage`, "400 frame is not valid JSON"},
		{`{"id":1,"op":"dance"}`, `400 unknown op "dance"`},
		{`{"id":2}`, `400 frame has no "op"`},
		{`{"id":3,"op":"subscribe","channel":"a b"}`, `400 channel name "a b" has the character " " at position 2`},
		{`{"id":4,"op":"subscribe","chanel":"a"}`, `400 unknown field "chanel"`},
		{`{"id":5,"op":"publish","channel":"a","data":{"x":}`, "400 frame is not valid JSON"},
		{`{"id":6,"op":"publish","channel":"a","event":"herald.x","data":1}`, "400 event name \"herald.x\" is reserved"},
		{`{"id":7,"op":"subscribe","channel":7}`, `400 field "channel" must be string`},
		{`[1,2]`, "400 frame is not a JSON object"},
		{`{"id":8,"op":"history","channel":"a","limit":5000}`, "400 limit 5000 is over the limit of 1000"},
		{`{"id":9,"op":"history","channel":"a","limit":0}`, "400 limit must be at least 1"},
	} {
		if err := c.ws.WriteMessage(websocket.TextMessage, []byte(tc.frame)); err != nil {
			t.Fatal(err)
		}
		if got := errOf(c.next()); !strings.HasPrefix(got, tc.want) {
			t.Errorf("%s → %q, want %q", tc.frame, got, tc.want)
		}
	}
	// 1,000 subscribes as fast as they go: at most 128 are held, every
	// other one is refused with a clear error (the subscription limit, or
	// the op rate when the API key is not the caller), and the connection
	// stays.
	ok, refused := 0, 0
	for i := 0; i < 1000; i++ {
		c.send(map[string]any{"op": "subscribe", "channel": fmt.Sprintf("ch_%d", i)})
	}
	for ok+refused < 1000 {
		m := c.next()
		if _, isReply := m["id"]; !isReply {
			continue
		}
		if m["ok"] == true {
			ok++
		} else if e := errOf(m); strings.Contains(e, "128 subscriptions") || strings.HasPrefix(e, "429 ") {
			refused++
		} else {
			t.Fatalf("unexpected refusal %s", e)
		}
	}
	if ok != 128 || refused != 872 {
		t.Fatalf("%d subscribes accepted, %d refused", ok, refused)
	}
	if r := c.call(map[string]any{"op": "ping"}); r["ok"] != true {
		t.Fatal(r)
	}
	f.publish(t, "calm", `"still here"`)
	if m := bystander.messages(1)[0]; m["data"] != "still here" {
		t.Fatal(m)
	}

	// Binary and oversized frames close the offender with 1003 and 1009.
	bin := f.dial(t, nil, "")
	bin.next()
	bin.ws.WriteMessage(websocket.BinaryMessage, []byte{1, 2, 3})
	if code, text := bin.closeCode(); code != websocket.CloseUnsupportedData || !strings.Contains(text, "binary") {
		t.Fatalf("binary frame: close %d %q", code, text)
	}
	big := f.dial(t, nil, "")
	big.next()
	big.ws.WriteMessage(websocket.TextMessage, []byte(`{"op":"ping","pad":"`+strings.Repeat("x", 5000)+`"}`))
	if code, text := big.closeCode(); code != websocket.CloseMessageTooBig {
		t.Fatalf("oversized frame: close %d %q", code, text)
	}
	f.publish(t, "calm", `"after"`)
	if m := bystander.messages(1)[0]; m["data"] != "after" {
		t.Fatal(m)
	}
}

func TestSlowReaderIsDisconnectedWhileOthersKeepReceiving(t *testing.T) {
	t.Parallel()
	f := newFixture(t, server.Config{Limits: server.Limits{QueueMessages: 32}}, Options{WriteTimeout: 300 * time.Millisecond})
	// A client that never reads, with a tiny receive buffer.
	dialer := &websocket.Dialer{NetDialContext: (&net.Dialer{Control: func(_, _ string, rc syscall.RawConn) error {
		var serr error
		err := rc.Control(func(fd uintptr) { serr = setRcvBuf(fd, 2048) })
		if err != nil {
			return err
		}
		return serr
	}}).DialContext}
	slowWS, _, err := f.tryDial(nil, "", dialer)
	if err != nil {
		t.Fatal(err)
	}
	defer slowWS.Close()
	if err := slowWS.WriteJSON(map[string]any{"id": 1, "op": "subscribe", "channel": "firehose"}); err != nil {
		t.Fatal(err)
	}
	// It reads up to its subscribe reply, then stops reading for good.
	for {
		var m map[string]any
		if err := slowWS.ReadJSON(&m); err != nil {
			t.Fatal(err)
		}
		if m["id"] != nil {
			break
		}
	}
	fast := f.dial(t, nil, "")
	fast.next()
	fast.call(map[string]any{"op": "subscribe", "channel": "firehose"})
	// 300 messages of 30 KB overflow the kernel's buffers (up to 4 MiB
	// each way) and then the slow session's queue of 32.
	data := `"` + strings.Repeat("x", 30_000) + `"`
	const n = 300
	for i := 1; i <= n; i++ {
		f.publish(t, "firehose", data)
		if i%20 == 0 {
			fast.messages(20) // the fast reader keeps up
		}
	}
	f.logs.waitFor(t, "reason=slow_consumer")
	if r := fast.call(map[string]any{"op": "ping"}); r["ok"] != true {
		t.Fatal("the fast reader was hurt", r)
	}
}

func TestAuthFirstFrameAndUnauthorizedCloses(t *testing.T) {
	t.Parallel()
	// The clients below send their first frame at once; the auth timeout
	// they must beat is long next to that on a busy machine. Only the
	// silent client, which sends nothing, meets a short one.
	rules := []server.RuleConfig{{Pattern: "public", Subscribe: []string{"everyone"}}}
	f := newFixture(t, server.Config{Rules: rules}, Options{AuthTimeout: 10 * time.Second})
	quick := newFixture(t, server.Config{Rules: rules}, Options{AuthTimeout: 300 * time.Millisecond})

	noHeader := http.Header{}
	c := f.dial(t, noHeader, "")
	r := c.call(map[string]any{"op": "auth", "token": token(t, "17", time.Hour)})
	if r["ok"] != true || r["user"] != "17" {
		t.Fatalf("auth reply %v", r)
	}
	if m := c.next(); m["type"] != "connected" || m["user"] != "17" {
		t.Fatalf("after auth %v", m)
	}

	anon := f.dial(t, noHeader, "")
	if r := anon.call(map[string]any{"op": "subscribe", "channel": "public"}); r["ok"] != true {
		t.Fatalf("anonymous subscribe to an open channel: %v", r)
	}
	if r := anon.call(map[string]any{"op": "subscribe", "channel": "private"}); r["ok"] != false || r["error"].(map[string]any)["code"].(float64) != 401 {
		t.Fatalf("anonymous subscribe to a closed channel: %v", r)
	}

	q := f.dial(t, noHeader, "?token="+token(t, "18", time.Hour))
	if m := q.next(); m["type"] != "connected" || m["user"] != "18" {
		t.Fatalf("query token %v", m)
	}

	for name, tc := range map[string]struct {
		header http.Header
		first  string
		want   string
	}{
		"silent":       {noHeader, "", "no credentials and no frame"},
		"bad header":   {http.Header{"Authorization": {"Bearer nope"}}, "", "neither the API key nor"},
		"bad auth op":  {noHeader, `{"id":1,"op":"auth","token":"x.y.z"}`, "malformed"},
		"expired":      {http.Header{"Authorization": {"Bearer " + token(t, "17", -time.Hour)}}, "", "expired"},
		"binary first": {noHeader, "\x00binary", "binary"},
	} {
		fx := f
		if tc.first == "" && len(tc.header) == 0 {
			fx = quick // silent: closed by the auth timeout
		}
		c := fx.dial(t, tc.header, "")
		if tc.first != "" {
			typ := websocket.TextMessage
			if strings.HasPrefix(tc.first, "\x00") {
				typ = websocket.BinaryMessage
			}
			c.ws.WriteMessage(typ, []byte(tc.first))
		}
		code, text := c.closeCode()
		if want := protocol.CloseUnauthorized; name == "binary first" {
			want = websocket.CloseUnsupportedData
			if code != want {
				t.Errorf("%s: close %d %q", name, code, text)
			}
		} else if code != want || !strings.Contains(text, tc.want) {
			t.Errorf("%s: close %d %q, want %d containing %q", name, code, text, want, tc.want)
		}
	}
}

func TestTokenRefreshAndExpiry(t *testing.T) {
	t.Parallel()
	f := newFixture(t, server.Config{Dev: true, JWTLeeway: 10 * time.Millisecond}, Options{})
	c := f.dial(t, http.Header{"Authorization": {"Bearer " + token(t, "17", time.Hour)}}, "")
	c.next()
	r := c.call(map[string]any{"op": "refresh", "token": token(t, "17", 2*time.Hour)})
	if r["ok"] != true || r["expires"] == nil {
		t.Fatalf("refresh %v", r)
	}
	r = c.call(map[string]any{"op": "refresh", "token": token(t, "18", time.Hour)})
	if r["ok"] != false || r["error"].(map[string]any)["code"].(float64) != 403 {
		t.Fatalf("refresh as another user %v", r)
	}
	// A token that expires closes the connection with 4010 after a push.
	// exp is in whole seconds (rounded down), so a 3 s token has 2 to 3
	// left: time for the dial on a busy machine.
	short := f.dial(t, http.Header{"Authorization": {"Bearer " + token(t, "17", 3*time.Second)}}, "")
	short.next()
	var push map[string]any
	for push == nil || push["type"] != "disconnect" {
		push = short.next()
	}
	if push["code"].(float64) != protocol.CloseTokenExpired || push["reason"] != "token_expired" || push["reconnect"] != true {
		t.Fatalf("push %v", push)
	}
	if code, _ := short.closeCode(); code != protocol.CloseTokenExpired {
		t.Fatalf("close %d", code)
	}
}

func TestShutdownPushesDisconnectAndCloses1012(t *testing.T) {
	t.Parallel()
	f := newFixture(t, server.Config{}, Options{})
	c := f.dial(t, nil, "")
	c.next()
	f.srv.Shutdown()
	m := c.next()
	if m["type"] != "disconnect" || m["code"].(float64) != websocket.CloseServiceRestart || m["reason"] != "shutdown" || m["reconnect"] != true {
		t.Fatalf("push %v", m)
	}
	if code, _ := c.closeCode(); code != websocket.CloseServiceRestart {
		t.Fatalf("close %d", code)
	}
}

func TestOriginIsChecked(t *testing.T) {
	t.Parallel()
	f := newFixture(t, server.Config{CORS: server.CORSConfig{AllowedOrigins: []string{"https://app.example.com"}}}, Options{})
	h := http.Header{"Authorization": {"Bearer " + apiKey}, "Origin": {"https://evil.example"}}
	if _, resp, err := f.tryDial(h, "", nil); err == nil || resp == nil || resp.StatusCode != http.StatusForbidden {
		t.Fatalf("foreign origin: %v %v", err, resp)
	}
	h.Set("Origin", "https://app.example.com")
	c, _, err := f.tryDial(h, "", nil)
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
}

func TestOpsOfAUserAreRateLimited(t *testing.T) {
	t.Parallel()
	f := newFixture(t, server.Config{Dev: true, Limits: server.Limits{OpsPerSecond: 10, OpsBurst: 20}}, Options{})
	c := f.dial(t, http.Header{"Authorization": {"Bearer " + token(t, "17", time.Hour)}}, "")
	c.next()
	for i := 0; i < 50; i++ {
		c.send(map[string]any{"op": "ping"})
	}
	ok, limited := 0, 0
	for ok+limited < 50 {
		m := c.next()
		if m["ok"] == true {
			ok++
			continue
		}
		e := m["error"].(map[string]any)
		if e["code"].(float64) != 429 || e["retry_after"].(float64) < 1 || !strings.Contains(e["message"].(string), "10 ops per second") {
			t.Fatalf("refusal %v", e)
		}
		limited++
	}
	if ok < 20 || ok > 25 || limited == 0 {
		t.Fatalf("%d ops served, %d limited; want the burst of 20 (and what refilled meanwhile) served", ok, limited)
	}
}

func TestRepliesKeepHTMLCharactersLiteral(t *testing.T) {
	t.Parallel()
	f := newFixture(t, server.Config{}, Options{})
	ws, _, err := f.tryDial(nil, "", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ws.Close()
	if err := ws.WriteMessage(websocket.TextMessage, []byte(`{"id":1,"op":"subscribe","channel":"a<b>&c"}`)); err != nil {
		t.Fatal(err)
	}
	_ = ws.SetReadDeadline(time.Now().Add(10 * time.Second))
	for {
		_, frame, err := ws.ReadMessage()
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.HasPrefix(frame, []byte(`{"id":1,`)) {
			continue // the connected push
		}
		if !bytes.Contains(frame, []byte(`channel name \"a<b>&c\" has the character \"<\" at position 2`)) ||
			bytes.Contains(frame, []byte(`\u003c`)) || bytes.HasSuffix(frame, []byte("\n")) {
			t.Fatalf("reply %q, want the name quoted with literal characters, no trailing newline", frame)
		}
		return
	}
}

// TestRepliesComeInOpOrder: a subscribe with a catch-up, then three
// publishes to the same channel, sent at once: the replies come 1, 2, 3,
// 4, and the subscribe reply before every message of the channel.
func TestRepliesComeInOpOrder(t *testing.T) {
	t.Parallel()
	// Small catch-up pages and a long coalescing pause: the replies of the
	// publishes are queued while the catch-up is still going on.
	f := newFixture(t, server.Config{CatchUpPage: 10}, Options{Coalesce: 50 * time.Millisecond})
	for i := 1; i <= 100; i++ {
		f.publish(t, "room", fmt.Sprint(i))
	}
	c := f.dial(t, nil, "")
	c.next() // connected
	c.send(map[string]any{"op": "subscribe", "channel": "room", "since": 0})
	for i := 2; i <= 4; i++ {
		c.send(map[string]any{"op": "publish", "channel": "room", "data": i})
	}
	var replies []uint64
	var messages int
	for len(replies) < 4 || messages < 103 {
		m := c.next()
		if id, ok := m["id"]; ok {
			if m["ok"] != true {
				t.Fatalf("reply %v", m)
			}
			replies = append(replies, uint64(id.(float64)))
			continue
		}
		switch m["type"] {
		case "message":
			messages++
		case "batch":
			messages += len(m["messages"].([]any))
		default:
			t.Fatalf("push %v", m)
		}
		if len(replies) == 0 {
			t.Fatalf("a message of the channel came before the subscribe reply: %v", m)
		}
	}
	if fmt.Sprint(replies) != "[1 2 3 4]" {
		t.Fatalf("replies in the order %v, want [1 2 3 4]", replies)
	}
}

// TestPipelinedPublishesAreAnsweredInOpOrder: a client sends a hundred
// publishes to two channels, a bad one and a ping among them, without
// waiting for any acknowledgement: every op is answered, in op order, the
// bad one with its error in its place, and each channel's offsets follow
// the order of its ops. limits.max_batch_messages is small, so the run is
// served in several batches.
func TestPipelinedPublishesAreAnsweredInOpOrder(t *testing.T) {
	t.Parallel()
	f := newFixture(t, server.Config{Dev: true, Limits: server.Limits{OpsPerSecond: 10000, OpsBurst: 10000, MaxBatchMessages: 7}}, Options{})
	c := f.dial(t, nil, "")
	c.next() // connected
	const ops = 100
	for i := 1; i <= ops; i++ {
		switch i {
		case 50:
			c.send(map[string]any{"op": "publish", "channel": "bad#", "data": i})
		case 60:
			c.send(map[string]any{"op": "ping"})
		default:
			c.send(map[string]any{"op": "publish", "channel": fmt.Sprint("ch", i%2), "data": i})
		}
	}
	next := map[string]float64{"ch0": 1, "ch1": 1}
	for i := 1; i <= ops; i++ {
		r := c.next()
		if id := r["id"].(float64); id != float64(i) {
			t.Fatalf("reply to op %v where op %d's was due", id, i)
		}
		switch i {
		case 50:
			if e, _ := r["error"].(map[string]any); r["ok"] != false || e["code"].(float64) != 400 {
				t.Fatalf("the bad publish: %v", r)
			}
		case 60:
			if r["ok"] != true {
				t.Fatalf("the ping: %v", r)
			}
		default:
			ch := fmt.Sprint("ch", i%2)
			if r["ok"] != true || r["channel"] != ch || r["offset"].(float64) != next[ch] {
				t.Fatalf("op %d: %v, want offset %v of %s", i, r, next[ch], ch)
			}
			next[ch]++
		}
	}
}
