package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// ---- a scripted WebSocket server ----

// wsScript serves the i-th connection to <prefix>/ws with conns[i];
// connections past the script are refused with 503 (the client retries,
// and the test fails on the extra connection). When a script returns, the
// connection is read (pings answered, nothing else) until the client goes.
type wsScript struct {
	t      *testing.T
	prefix string
	conns  []func(c *wsTestConn)

	wg   sync.WaitGroup
	mu   sync.Mutex
	reqs []wsRequest
	open []*websocket.Conn
}

// wsRequest is what the test server saw of one connection.
type wsRequest struct {
	auth string
	// end is how the client ended the connection, as the server read it
	// once the script was done: a close code, or -1 when it was dropped.
	end int
}

func newWSServer(t *testing.T, prefix string, conns ...func(c *wsTestConn)) (*httptest.Server, *wsScript) {
	t.Helper()
	sc := &wsScript{t: t, prefix: prefix, conns: conns}
	srv := httptest.NewServer(sc)
	t.Cleanup(func() {
		srv.Close()
		// Hijacked connections outlive srv.Close: end them and wait for
		// their handlers, which may still report.
		sc.mu.Lock()
		for _, c := range sc.open {
			c.NetConn().Close()
		}
		sc.mu.Unlock()
		sc.wg.Wait()
	})
	return srv, sc
}

func (sc *wsScript) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	sc.wg.Add(1)
	defer sc.wg.Done()
	if r.URL.Path != sc.prefix+"/ws" || r.Method != http.MethodGet {
		sc.t.Errorf("request %s %s, want GET %s/ws", r.Method, r.URL.Path, sc.prefix)
		http.NotFound(w, r)
		return
	}
	sc.mu.Lock()
	i := len(sc.reqs)
	sc.reqs = append(sc.reqs, wsRequest{auth: r.Header.Get("Authorization"), end: -1})
	sc.mu.Unlock()
	if i >= len(sc.conns) {
		sc.t.Errorf("connection %d: the script has %d", i+1, len(sc.conns))
		jsonError(http.StatusServiceUnavailable, "past the script")(w, r)
		return
	}
	c := &wsTestConn{t: sc.t, sc: sc, w: w, r: r}
	sc.conns[i](c)
	if c.c == nil {
		return // refused
	}
	end := c.drain()
	sc.mu.Lock()
	sc.reqs[i].end = end
	sc.mu.Unlock()
	c.c.Close()
}

// requests returns what the server saw, once every connection's handler
// is done: call it after the client has returned (its connections are
// closed by then, so the handlers end).
func (sc *wsScript) requests() []wsRequest {
	sc.wg.Wait()
	sc.mu.Lock()
	defer sc.mu.Unlock()
	return append([]wsRequest(nil), sc.reqs...)
}

// wsTestConn is one connection as a script drives it. The upgrade happens
// on first use, so a script may refuse it instead.
type wsTestConn struct {
	t  *testing.T
	sc *wsScript
	w  http.ResponseWriter
	r  *http.Request
	c  *websocket.Conn
}

func (c *wsTestConn) conn() *websocket.Conn {
	if c.c == nil {
		up := websocket.Upgrader{}
		conn, err := up.Upgrade(c.w, c.r, nil)
		if err != nil {
			c.t.Errorf("upgrade: %v", err)
			panic(http.ErrAbortHandler)
		}
		c.c = conn
		c.sc.mu.Lock()
		c.sc.open = append(c.sc.open, conn)
		c.sc.mu.Unlock()
	}
	return c.c
}

// refuse answers the upgrade request with a JSON error.
func (c *wsTestConn) refuse(code int, msg string) { jsonError(code, msg)(c.w, c.r) }

// send writes frames, one text frame each.
func (c *wsTestConn) send(frames ...string) {
	for _, f := range frames {
		if err := c.conn().WriteMessage(websocket.TextMessage, []byte(f)); err != nil {
			c.t.Errorf("server write: %v", err)
			return
		}
	}
}

// connected sends the connected push.
func (c *wsTestConn) connected() { c.send(`{"type":"connected","session":"s_test","user":"17"}`) }

// next reads the next op as it is.
func (c *wsTestConn) next() (wsOp, map[string]json.RawMessage, bool) {
	typ, data, err := c.conn().ReadMessage()
	if err != nil {
		c.t.Errorf("server read: %v", err)
		return wsOp{}, nil, false
	}
	if typ != websocket.TextMessage {
		c.t.Errorf("client sent frame type %d, want text", typ)
	}
	var op wsOp
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(data, &op); err != nil || json.Unmarshal(data, &fields) != nil {
		c.t.Errorf("client sent %q: %v", data, err)
	}
	return op, fields, true
}

// expect reads ops, answering pings, until one that is not a ping, which
// must be want.
func (c *wsTestConn) expect(want string) (wsOp, map[string]json.RawMessage) {
	for {
		op, fields, ok := c.next()
		if !ok {
			return wsOp{}, nil
		}
		if op.Op == "ping" {
			c.reply(op.ID, "")
			continue
		}
		if op.Op != want {
			c.t.Errorf("client sent op %q, want %q", op.Op, want)
		}
		return op, fields
	}
}

// expectSubscribe reads a subscribe op and checks its channel, since and
// epoch ("-" for an absent since).
func (c *wsTestConn) expectSubscribe(channel, since, epoch string) wsOp {
	op, fields := c.expect("subscribe")
	got := "-"
	if op.Since != nil {
		got = fmt.Sprint(*op.Since)
	}
	if op.Channel != channel || got != since || op.Epoch != epoch {
		c.t.Errorf("subscribe channel=%q since=%s epoch=%q, want channel=%q since=%s epoch=%q", op.Channel, got, op.Epoch, channel, since, epoch)
	}
	if _, ok := fields["epoch"]; ok && epoch == "" {
		c.t.Errorf("subscribe sent an empty epoch")
	}
	return op
}

// reply sends an ok reply with more fields (`"a":1,"b":2`).
func (c *wsTestConn) reply(id uint64, more string) {
	if more != "" {
		more = "," + more
	}
	c.send(fmt.Sprintf(`{"id":%d,"ok":true%s}`, id, more))
}

// subscribed answers a subscribe with the channel's epoch and head.
func (c *wsTestConn) subscribed(op wsOp, epoch string, head int) {
	c.reply(op.ID, fmt.Sprintf(`"channel":%q,"epoch":%q,"offset":%d`, op.Channel, epoch, head))
}

// replyError sends an ok:false reply.
func (c *wsTestConn) replyError(id uint64, code int, msg string) {
	c.send(fmt.Sprintf(`{"id":%d,"ok":false,"error":{"code":%d,"message":%q}}`, id, code, msg))
}

// abort drops the TCP connection without a close frame: an abnormal
// close, as a killed server or a cut network.
func (c *wsTestConn) abort() { c.conn().NetConn().Close() }

// closeWith sends a close frame.
func (c *wsTestConn) closeWith(code int, text string) {
	err := c.conn().WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(code, text), time.Now().Add(5*time.Second))
	if err != nil {
		c.t.Errorf("server close: %v", err)
	}
}

// silent reads until the connection ends and answers nothing: a server
// that has gone quiet.
func (c *wsTestConn) silent() {
	for {
		if _, _, err := c.conn().ReadMessage(); err != nil {
			return
		}
	}
}

// drain reads until the connection ends, answering ping ops, and returns
// the client's close code (-1 when there was none).
func (c *wsTestConn) drain() int {
	for {
		_, data, err := c.c.ReadMessage()
		if err != nil {
			var ce *websocket.CloseError
			if errors.As(err, &ce) && ce.Code != websocket.CloseAbnormalClosure {
				return ce.Code
			}
			return -1
		}
		var op wsOp
		if json.Unmarshal(data, &op) == nil && op.Op == "ping" {
			if c.c.WriteMessage(websocket.TextMessage, fmt.Appendf(nil, `{"id":%d,"ok":true}`, op.ID)) != nil {
				return -1
			}
		}
	}
}

func msgPush(env string) string { return `{"type":"message","message":` + env + `}` }

func batchPush(envs ...string) string {
	return `{"type":"batch","messages":[` + strings.Join(envs, ",") + `]}`
}

// runWSSub runs the subscriber over ws against srv (at prefix).
func runWSSub(t *testing.T, srv *httptest.Server, prefix string, args ...string) (string, string, error) {
	t.Helper()
	return runSub(t, srv.URL+prefix, append([]string{"--transport", "ws"}, args...)...)
}

// ---- unit tests of the pieces ----

func TestWSEndpoint(t *testing.T) {
	cases := map[string]string{
		"http://127.0.0.1:8080":           "ws://127.0.0.1:8080/ws",
		"https://example.com":             "wss://example.com/ws",
		"https://example.com/herald/":     "wss://example.com/herald/ws",
		"http://127.0.0.1:8080/a/b":       "ws://127.0.0.1:8080/a/b/ws",
		"HTTPS://EXAMPLE.com:8443/herald": "wss://EXAMPLE.com:8443/herald/ws",
	}
	for in, want := range cases {
		u, err := url.Parse(in)
		if err != nil {
			t.Fatal(err)
		}
		if got := wsEndpoint(u); got != want {
			t.Errorf("wsEndpoint(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestWSReadEnd(t *testing.T) {
	cases := []struct {
		err        error
		fatal      bool
		retryAfter time.Duration
		msg        string
	}{
		{&websocket.CloseError{Code: 4001, Text: "token is expired"}, true, 0, "the server closed the connection: 4001 unauthorized: token is expired"},
		{&websocket.CloseError{Code: 1003}, true, 0, "1003 binary frame refused"},
		{&websocket.CloseError{Code: 1009}, true, 0, "1009 frame too big"},
		{&websocket.CloseError{Code: 1012, Text: "shutdown"}, false, 0, "1012 server restarting: shutdown"},
		{&websocket.CloseError{Code: 1011}, false, 0, "1011 internal error"},
		{&websocket.CloseError{Code: 4009}, false, 0, "4009 slow consumer"},
		{&websocket.CloseError{Code: 4010}, false, 0, "4010 token expired"},
		{&websocket.CloseError{Code: 4008, Text: "too many connections"}, false, wsPolicyRetry, "4008 policy"},
		{&websocket.CloseError{Code: 1006, Text: "unexpected EOF"}, false, 0, "connection lost: unexpected EOF"},
		{io.ErrUnexpectedEOF, false, 0, "connection lost"},
		{websocket.ErrReadLimit, true, 0, "a frame over"},
	}
	for _, tc := range cases {
		e := wsReadEnd(tc.err)
		if e.fatal != tc.fatal || e.retryAfter != tc.retryAfter || !strings.Contains(e.err.Error(), tc.msg) {
			t.Errorf("%v: fatal %t, retryAfter %s, %q; want %t, %s, %q", tc.err, e.fatal, e.retryAfter, e.err, tc.fatal, tc.retryAfter, tc.msg)
		}
	}
}

func TestWSPingInterval(t *testing.T) {
	for stall, want := range map[time.Duration]time.Duration{
		0:                wsPingEvery,
		defaultStall:     wsPingEvery,
		30 * time.Second: 10 * time.Second,
		time.Nanosecond:  time.Millisecond,
	} {
		if got := wsPingInterval(stall); got != want {
			t.Errorf("wsPingInterval(%s) = %s, want %s", stall, got, want)
		}
	}
}

func TestUnsubscribedEnvelope(t *testing.T) {
	got := string(unsubscribedEnvelope("A", "revoked", time.Date(2026, 11, 26, 16, 52, 20, 123e6, time.UTC)))
	want := `{"channel":"A","event":"herald.unsubscribed","data":{"reason":"revoked"},"time":"2026-11-26T16:52:20.123Z"}`
	if got != want {
		t.Errorf("got %s\nwant %s", got, want)
	}
}
