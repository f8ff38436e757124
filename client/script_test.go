package client

// Scripted servers for the subscription tests: each serves its i-th
// request (or connection) with the i-th function of its script and
// records what the client sent, so a test plays one exchange exactly —
// cuts, half events, gaps, errors — and checks how the client resumed.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/heraldrt/herald/protocol"
)

// ---- messages ----

func envelopeJSON(channel, epoch string, offset int) string {
	return fmt.Sprintf(`{"channel":%q,"offset":%d,"epoch":%q,"id":"m_%d","event":"message_sent","data":{"n":%d},"time":"2026-11-26T16:52:20.123Z"}`,
		channel, offset, epoch, offset, offset)
}

func resetEnvelope(channel, epoch, reason string, resumeAfter, head int) string {
	return fmt.Sprintf(`{"channel":%q,"offset":0,"epoch":%q,"event":"herald.reset","data":{"reason":%q,"epoch":%q,"resume_after":%d,"head":%d},"time":"2026-11-26T16:52:20.123Z"}`,
		channel, epoch, reason, epoch, resumeAfter, head)
}

func jsonLines(ls ...string) string {
	if len(ls) == 0 {
		return ""
	}
	return strings.Join(ls, "\n") + "\n"
}

func join(l []string) string { return strings.Join(l, ",") }

// jsonError answers with Herald's JSON error.
func jsonError(code int, msg string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(code)
		fmt.Fprintf(w, `{"error":{"code":%d,"message":%q}}`+"\n", code, msg)
	}
}

// abortConn cuts the connection without ending the chunked body: the
// client sees an unexpected EOF.
func abortConn(t *testing.T, w http.ResponseWriter) {
	conn, _, err := http.NewResponseController(w).Hijack()
	if err != nil {
		t.Errorf("hijack: %v", err)
		return
	}
	conn.Close()
}

// ---- running a subscription ----

// subRun is how a subscription run by runSub went.
type subRun struct {
	out       string // the events' Raw, one line each
	kinds     []Kind
	log       string // the client's log, Debug and up
	err       error  // Subscribe's or Next's error; nil when max events came
	cursor    string // after the last event
	positions map[string]Position
	session   string
}

// runSub subscribes to url with opts (a tiny backoff unless set) and
// takes max events (0: until the subscription ends), within 10 s.
func runSub(t *testing.T, url string, opts SubscribeOptions, max int) subRun {
	t.Helper()
	var logBuf bytes.Buffer
	logger := slog.New(slog.NewTextHandler(&logBuf, &slog.HandlerOptions{Level: slog.LevelDebug}))
	c, err := New(url, Options{Token: "tok", Logger: logger})
	if err != nil {
		t.Fatal(err)
	}
	if opts.RetryMin == 0 {
		opts.RetryMin, opts.RetryMax = time.Millisecond, 5*time.Millisecond
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var run subRun
	sub, err := c.Subscribe(ctx, opts)
	if err != nil {
		if ctx.Err() != nil {
			t.Fatalf("no connection within the test's deadline; log:\n%s", logBuf.String())
		}
		run.err, run.log = err, logBuf.String()
		return run
	}
	var out strings.Builder
	for max == 0 || len(run.kinds) < max {
		ev, err := sub.Next(ctx)
		if err != nil {
			if ctx.Err() != nil {
				t.Fatalf("subscription still running after the test deadline; out:\n%s\nlog:\n%s", out.String(), logBuf.String())
			}
			run.err = err
			break
		}
		out.Write(ev.Raw)
		out.WriteByte('\n')
		run.kinds = append(run.kinds, ev.Kind)
	}
	sub.Close()
	run.out, run.log = out.String(), logBuf.String()
	run.cursor, run.positions, run.session = sub.Cursor(), sub.Positions(), sub.Session()
	return run
}

// ---- a scripted SSE server ----

// sseRequest is what the test server saw of one stream request.
type sseRequest struct {
	lastEventID string
	hasLEI      bool
	query       map[string][]string
	auth        string
}

// sseScript serves the i-th request with conns[i]; requests past the
// script hold the stream open until the client goes.
type sseScript struct {
	t     *testing.T
	conns []func(w http.ResponseWriter, r *http.Request)

	mu   sync.Mutex
	reqs []sseRequest
}

func newSSEServer(t *testing.T, conns ...func(w http.ResponseWriter, r *http.Request)) (*httptest.Server, *sseScript) {
	t.Helper()
	sc := &sseScript{t: t, conns: conns}
	srv := httptest.NewServer(sc)
	t.Cleanup(srv.Close)
	return srv, sc
}

func (sc *sseScript) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path != "/sse" || r.Method != http.MethodGet {
		sc.t.Errorf("request %s %s, want GET /sse", r.Method, r.URL.Path)
		http.NotFound(w, r)
		return
	}
	lei, has := r.Header["Last-Event-Id"]
	req := sseRequest{query: r.URL.Query(), auth: r.Header.Get("Authorization"), hasLEI: has}
	if has {
		req.lastEventID = lei[0]
	}
	sc.mu.Lock()
	i := len(sc.reqs)
	sc.reqs = append(sc.reqs, req)
	sc.mu.Unlock()
	if i < len(sc.conns) {
		sc.conns[i](w, r)
		return
	}
	startStream(w)
	<-r.Context().Done()
}

func (sc *sseScript) requests() []sseRequest {
	sc.mu.Lock()
	defer sc.mu.Unlock()
	return append([]sseRequest(nil), sc.reqs...)
}

func startStream(w http.ResponseWriter) {
	w.Header().Set("Content-Type", "text/event-stream; charset=utf-8")
	w.Header().Set("Cache-Control", "no-cache")
	w.WriteHeader(http.StatusOK)
	sendSSE(w, "retry: 2000\n\n")
}

func sendSSE(w http.ResponseWriter, s string) {
	_, _ = io.WriteString(w, s)
	w.(http.Flusher).Flush()
}

// connectedEvent is herald.connected with heads "A@e1:0".
func connectedEvent(cursor string, heads ...string) string {
	var chans []string
	for _, h := range heads {
		ch, rest, _ := strings.Cut(h, "@")
		epoch, off, _ := strings.Cut(rest, ":")
		chans = append(chans, fmt.Sprintf(`{"channel":%q,"epoch":%q,"offset":%s}`, ch, epoch, off))
	}
	return fmt.Sprintf("event: herald.connected\ndata: {\"session\":\"s_test\",\"channels\":[%s]}\nid: %s\n\n", strings.Join(chans, ","), cursor)
}

// messageEvent is a stored message framed like the server does: event:,
// data:, id: last.
func messageEvent(channel, epoch string, offset int, cursor string) string {
	return "event: message_sent\ndata: " + envelopeJSON(channel, epoch, offset) + "\nid: " + cursor + "\n\n"
}

// ---- a scripted /poll server ----

// pollRequest is what the test server saw of one poll.
type pollRequest struct {
	method      string
	contentType string
	auth        string
	channels    []string
	cursor      string
	session     string
	timeout     string
	since       []string
	epoch       []string
}

// pollScript answers the i-th poll with answers[i]; polls past the script
// are held until the client goes.
type pollScript struct {
	t       *testing.T
	answers []http.HandlerFunc

	mu   sync.Mutex
	reqs []pollRequest
}

func newPollServer(t *testing.T, answers ...http.HandlerFunc) (*httptest.Server, *pollScript) {
	t.Helper()
	sc := &pollScript{t: t, answers: answers}
	srv := httptest.NewServer(sc)
	t.Cleanup(srv.Close)
	return srv, sc
}

func (sc *pollScript) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path != "/poll" {
		sc.t.Errorf("request %s %s, want /poll", r.Method, r.URL.Path)
		http.NotFound(w, r)
		return
	}
	req := pollRequest{method: r.Method, contentType: r.Header.Get("Content-Type"), auth: r.Header.Get("Authorization")}
	switch r.Method {
	case http.MethodGet:
		q := r.URL.Query()
		req.channels, req.cursor, req.session, req.timeout = q["channel"], q.Get("cursor"), q.Get("session"), q.Get("timeout")
		req.since, req.epoch = q["since"], q["epoch"]
	case http.MethodPost:
		var b protocol.PollRequest
		dec := json.NewDecoder(r.Body)
		dec.DisallowUnknownFields() // as the server does
		if err := dec.Decode(&b); err != nil {
			sc.t.Errorf("POST /poll body: %v", err)
		}
		req.channels, req.cursor, req.session, req.since, req.epoch = b.Channels, b.Cursor, b.Session, b.Since, b.Epoch
		if b.Timeout != nil {
			req.timeout = fmt.Sprint(*b.Timeout)
		}
	default:
		sc.t.Errorf("request %s /poll, want GET or POST", r.Method)
	}
	sc.mu.Lock()
	i := len(sc.reqs)
	sc.reqs = append(sc.reqs, req)
	sc.mu.Unlock()
	if i < len(sc.answers) {
		sc.answers[i](w, r)
		return
	}
	<-r.Context().Done()
}

func (sc *pollScript) requests() []pollRequest {
	sc.mu.Lock()
	defer sc.mu.Unlock()
	return append([]pollRequest(nil), sc.reqs...)
}

// pollOK answers a poll with envelopes, a cursor and a session, as the
// server does.
func pollOK(cursor, session string, envelopes ...string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Cache-Control", "no-store")
		fmt.Fprintf(w, `{"messages":[%s],"cursor":%q,"session":%q}`+"\n", strings.Join(envelopes, ","), cursor, session)
	}
}

// abortPoll cuts the connection without an answer.
func abortPoll(t *testing.T) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) { abortConn(t, w) }
}

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
	auth    string
	session string // the ?session= of the upgrade
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
	sc.reqs = append(sc.reqs, wsRequest{auth: r.Header.Get("Authorization"), session: r.URL.Query().Get("session"), end: -1})
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
func (c *wsTestConn) next() (protocol.Request, map[string]json.RawMessage, bool) {
	typ, data, err := c.conn().ReadMessage()
	if err != nil {
		c.t.Errorf("server read: %v", err)
		return protocol.Request{}, nil, false
	}
	if typ != websocket.TextMessage {
		c.t.Errorf("client sent frame type %d, want text", typ)
	}
	var op protocol.Request
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(data, &op); err != nil || json.Unmarshal(data, &fields) != nil {
		c.t.Errorf("client sent %q: %v", data, err)
	}
	return op, fields, true
}

// expect reads ops, answering pings, until one that is not a ping, which
// must be want.
func (c *wsTestConn) expect(want string) (protocol.Request, map[string]json.RawMessage) {
	for {
		op, fields, ok := c.next()
		if !ok {
			return protocol.Request{}, nil
		}
		if op.Op == protocol.OpPing {
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
func (c *wsTestConn) expectSubscribe(channel, since, epoch string) protocol.Request {
	op, fields := c.expect(protocol.OpSubscribe)
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
func (c *wsTestConn) subscribed(op protocol.Request, epoch string, head int) {
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
		var op protocol.Request
		if json.Unmarshal(data, &op) == nil && op.Op == protocol.OpPing {
			if c.c.WriteMessage(websocket.TextMessage, fmt.Appendf(nil, `{"id":%d,"ok":true}`, op.ID)) != nil {
				return -1
			}
		}
	}
}

func msgPush(env string) string { return protocol.MessagePrefix + env + `}` }

func batchPush(envs ...string) string {
	return protocol.BatchPrefix + strings.Join(envs, ",") + `]}`
}
