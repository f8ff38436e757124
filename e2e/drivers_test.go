package e2e

// Transport drivers for the conformance suite (conformance_test.go): each
// driver speaks one transport's wire protocol (transports/PROTOCOL.md) as
// a plain client would, and hides it behind the same small interface, so
// the scenarios are written once. Drivers stay thin: they frame, parse and
// keep the position a client keeps; every assertion about the server's
// behaviour is in the scenarios.
//
// The long-poll driver fits the same mould: open issues the first poll, a
// reader goroutine polls on and queues what the answers bring, mark is the
// cursor of the last answer recv has handed out in full, drop abandons the
// session and the poll in flight, passedOver waits for an answer whose
// cursor moved with no message.

import (
	"bufio"
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/heraldrt/herald/protocol"
)

// drivers are the transports every conformance scenario runs over.
var drivers = []driver{sseDriver{}, wsDriver{}, pollDriver{}}

// position is a client's place in one channel: the offset of the last
// message it handled and that offset's epoch.
type position struct {
	offset uint64
	epoch  string
}

// mark is where a client resumes from. Each transport resumes by its own
// means, and a driver fills what its transport uses; scenarios treat a
// mark as opaque.
type mark struct {
	// cursor is the stream's resume cursor (SSE's last id:, the cursor
	// of a poll answer).
	cursor string
	// channels holds per-channel positions (WebSocket: subscribe with
	// since and epoch).
	channels map[string]position
	// session (WebSocket) is the session to continue, passed back as
	// ?session= (SSE and long polling carry it in the cursor).
	session string
	// redeliver (long polling) holds the messages handed out after cursor:
	// a poll cursor covers a whole answer, and the client handled only the
	// start of the last one. A resume from cursor brings these again
	// first; the driver checks that it does and drops them.
	redeliver []envelope
}

func (m *mark) String() string {
	if m == nil {
		return "<from now>"
	}
	if len(m.redeliver) > 0 {
		return fmt.Sprintf("cursor=%q channels=%v redeliver=%v", m.cursor, m.channels, envOffsets(m.redeliver))
	}
	return fmt.Sprintf("cursor=%q channels=%v", m.cursor, m.channels)
}

type driver interface {
	name() string
	// open subscribes to channels as tok (the API key, a user token, or
	// "" for anonymous) from the positions in from (nil: from now). It
	// returns once every channel is subscribed, so whatever is published
	// afterwards is delivered. A refused subscription is an *openError.
	// The connection is closed at the end of the test.
	open(t *testing.T, base, tok string, channels []string, from *mark) (conn, error)
}

type conn interface {
	// recv returns the next message or herald.reset envelope, waiting up
	// to timeout. Transport chatter (heartbeats, herald.connected, SSE
	// id-only events) is consumed on the way, moving the position as a
	// client's would. Once the connection is gone it returns an error
	// wrapping errEnded; a frame that breaks the protocol is an error too.
	recv(timeout time.Duration) (envelope, error)
	// mark is where this client would resume from now: what it has
	// handled through recv (and passedOver), nothing it has not.
	mark() *mark
	// session is the session id the server gave this connection.
	session() string
	// publishSelfExcluded publishes data on channel so that this session
	// does not get it: SSE through POST /api/publish with session and
	// exclude_sender, long polling with exclude_session, WebSocket with
	// the publish op's exclude_self.
	publishSelfExcluded(t *testing.T, channel, data string) publishResult
	// passedOver waits for the transport's sign that a message this
	// session excluded itself from was passed over, and consumes it: SSE
	// sends an event with only an id: line, WebSocket a skip push, long
	// polling an answer with no message and a new cursor. Transports whose
	// protocol sends no such sign return false at once.
	passedOver(t *testing.T) bool
	// drop cuts the connection abruptly, with no close handshake.
	drop()
	// close ends the connection cleanly. It is idempotent.
	close()
}

// subscriber is a connection that takes more subscriptions after it
// opened (WebSocket). A refused one is an *openError and leaves the
// connection usable.
type subscriber interface {
	subscribe(channel string, from *position) error
}

// errEnded is wrapped by recv once the connection has ended.
var errEnded = errors.New("connection ended")

// errTimeout is wrapped by recv when nothing arrives in time.
var errTimeout = errors.New("nothing received")

// openError is a refused subscription: an HTTP error answer before any
// stream, or an ok:false reply to a subscribe op.
type openError struct {
	code    int
	message string
	channel string
	raw     string
}

func (e *openError) Error() string { return fmt.Sprintf("refused with %d: %s", e.code, e.raw) }

// resumeConn reconnects c's client to channels from where c is.
func resumeConn(t *testing.T, d driver, base, tok string, channels []string, c conn) conn {
	t.Helper()
	m := c.mark()
	c.close()
	nc, err := d.open(t, base, tok, channels, m)
	if err != nil {
		t.Fatalf("%s: resume from %v: %v", d.name(), m, err)
	}
	return nc
}

// nextMessage returns c's next message or reset envelope, failing the test when
// none comes within 20 s.
func nextMessage(t testing.TB, c conn) envelope {
	t.Helper()
	env, err := c.recv(20 * time.Second)
	if err != nil {
		t.Fatalf("next message: %v", err)
	}
	return env
}

// --- a received-items queue shared by the drivers ---

// item is one thing a connection received, in order.
type item struct {
	event string   // SSE event name / WebSocket: the envelope's event
	data  string   // the envelope as sent ("" for an SSE id-only event)
	id    string   // SSE: the id: field ("" when absent)
	env   envelope // data decoded
	err   error    // data that failed to decode
}

// inbox queues what a connection's reader goroutine receives for the
// test goroutine, and keeps the last frames sent and received for failure
// reports.
type inbox struct {
	mu    sync.Mutex
	items []item
	ended error
	more  chan struct{}
	trace []string
}

const traceFrames = 60

// note records a frame for the trace ("→ " sent, "← " received).
func (b *inbox) note(frame string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.trace) == traceFrames {
		copy(b.trace, b.trace[1:])
		b.trace = b.trace[:traceFrames-1]
	}
	b.trace = append(b.trace, frame)
}

// logTraceOnFailure logs the connection's last frames at the end of a
// failed test (of every test with HERALD_E2E_TRACE=1).
func (b *inbox) logTraceOnFailure(t *testing.T, what string) {
	t.Cleanup(func() {
		if !t.Failed() && os.Getenv("HERALD_E2E_TRACE") == "" {
			return
		}
		b.mu.Lock()
		defer b.mu.Unlock()
		t.Logf("%s: last %d frames:\n%s", what, len(b.trace), strings.Join(b.trace, "\n"))
	})
}

func newInbox() *inbox { return &inbox{more: make(chan struct{}, 1)} }

func (b *inbox) signal() {
	select {
	case b.more <- struct{}{}:
	default:
	}
}

func (b *inbox) put(it item) {
	b.mu.Lock()
	b.items = append(b.items, it)
	b.mu.Unlock()
	b.signal()
}

func (b *inbox) end(err error) {
	b.mu.Lock()
	if b.ended == nil {
		if err == nil {
			err = io.EOF
		}
		b.ended = err
	}
	b.mu.Unlock()
	b.signal()
}

// take returns the next item, waiting until deadline.
func (b *inbox) take(deadline time.Time) (item, error) {
	for {
		b.mu.Lock()
		if len(b.items) > 0 {
			it := b.items[0]
			b.items[0] = item{}
			b.items = b.items[1:]
			b.mu.Unlock()
			return it, nil
		}
		ended := b.ended
		b.mu.Unlock()
		if ended != nil {
			return item{}, fmt.Errorf("%w: %v", errEnded, ended)
		}
		wait := time.Until(deadline)
		if wait <= 0 {
			return item{}, errTimeout
		}
		timer := time.NewTimer(wait)
		select {
		case <-b.more:
		case <-timer.C:
		}
		timer.Stop()
	}
}

// endErr says why the connection ended (nil while it has not).
func (b *inbox) endErr() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.ended
}

func decodeItem(it item) item {
	if it.data != "" {
		it.err = json.Unmarshal([]byte(it.data), &it.env)
	}
	return it
}

// apiPublish posts body to /api/publish as tok.
func apiPublish(ctx context.Context, base, tok string, body map[string]any) (publishResult, int, error) {
	raw, _ := json.Marshal(body)
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, base+"/api/publish", bytes.NewReader(raw))
	req.Header.Set("Authorization", "Bearer "+tok)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return publishResult{}, 0, err
	}
	defer resp.Body.Close()
	ans, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		return publishResult{}, resp.StatusCode, fmt.Errorf("publish: %d %s", resp.StatusCode, ans)
	}
	var res publishResult
	if err := json.Unmarshal(ans, &res); err != nil {
		return publishResult{}, 200, fmt.Errorf("publish answer %s: %w", ans, err)
	}
	return res, 200, nil
}

// parseErrorBody reads {"error":{"code","message","channel"}}; ok is
// false when raw is anything else.
func parseErrorBody(raw []byte) (e openError, ok bool) {
	var body map[string]json.RawMessage
	if json.Unmarshal(raw, &body) != nil || len(body) != 1 || body["error"] == nil {
		return e, false
	}
	var fields protocol.ErrorDetail
	if json.Unmarshal(body["error"], &fields) != nil {
		return e, false
	}
	return openError{code: fields.Code, message: fields.Message, channel: fields.Channel, raw: string(raw)}, true
}

// --- Server-Sent Events ---

type sseDriver struct{}

func (sseDriver) name() string { return "sse" }

// open sends GET /sse with the channels, resuming with Last-Event-ID when
// from holds a cursor, and returns after herald.connected. A non-200
// answer must be nothing but a JSON error (no stream bytes).
func (sseDriver) open(t *testing.T, base, tok string, channels []string, from *mark) (conn, error) {
	t.Helper()
	q := url.Values{"channel": channels}
	ctx, cancel := context.WithCancel(context.Background())
	c := &sseConn{base: base, tok: tok, in: newInbox(), cancel: cancel}
	// One TCP connection per stream, kept so drop can cut it.
	dialer := &net.Dialer{Timeout: 10 * time.Second}
	client := &http.Client{Transport: &http.Transport{
		DisableKeepAlives: true,
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			nc, err := dialer.DialContext(ctx, network, addr)
			if err == nil {
				c.mu.Lock()
				c.tcp = nc
				c.mu.Unlock()
			}
			return nc, err
		},
	}}
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, base+"/sse?"+q.Encode(), nil)
	if tok != "" {
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	if from != nil && from.cursor != "" {
		req.Header.Set("Last-Event-ID", from.cursor)
	}
	resp, err := client.Do(req)
	if err != nil {
		cancel()
		return nil, err
	}
	if resp.StatusCode != 200 {
		defer cancel()
		defer resp.Body.Close()
		raw, _ := io.ReadAll(resp.Body)
		e, ok := parseErrorBody(raw)
		if ct := resp.Header.Get("Content-Type"); !ok || !strings.HasPrefix(ct, "application/json") || e.code != resp.StatusCode {
			return nil, fmt.Errorf("GET /sse answered %d (%s) %q: want a JSON error body with the same code", resp.StatusCode, ct, raw)
		}
		return nil, &e
	}
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/event-stream") {
		cancel()
		resp.Body.Close()
		return nil, fmt.Errorf("GET /sse: Content-Type %q", ct)
	}
	c.body = resp.Body
	t.Cleanup(c.close)
	c.in.logTraceOnFailure(t, fmt.Sprintf("sse %v", channels))
	go c.read()

	it, err := c.in.take(time.Now().Add(20 * time.Second))
	if err != nil {
		c.close()
		return nil, fmt.Errorf("waiting for herald.connected: %w", err)
	}
	var info struct {
		Session string `json:"session"`
	}
	if it.event != protocol.EventConnected || json.Unmarshal([]byte(it.data), &info) != nil || info.Session == "" || it.id == "" {
		c.close()
		return nil, fmt.Errorf("first event %+v, want herald.connected with a session and an id", it)
	}
	c.sess, c.cursor = info.Session, it.id
	return c, nil
}

type sseConn struct {
	base, tok string
	in        *inbox
	cancel    context.CancelFunc
	body      io.ReadCloser
	sess      string
	cursor    string // the last id: handed out (test goroutine only)

	mu        sync.Mutex
	tcp       net.Conn
	closeOnce sync.Once
}

// read parses the stream as an EventSource does: fields accumulate until
// a blank line; data: lines join with LF; an event with no data is not
// dispatched, but its id: still sets the last event id.
func (c *sseConn) read() {
	sc := bufio.NewScanner(c.body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	var ev item
	var data []string
	var raw []string
	for sc.Scan() {
		line := sc.Text()
		if line != "" {
			raw = append(raw, line)
		} else if raw != nil {
			c.in.note("← " + strings.Join(raw, " ⏎ "))
			raw = nil
		}
		if line == "" {
			switch {
			case data != nil:
				ev.data = strings.Join(data, "\n")
				c.in.put(decodeItem(ev))
			case ev.id != "":
				c.in.put(ev) // id-only: moves the cursor
			}
			ev, data = item{}, nil
			continue
		}
		if strings.HasPrefix(line, ":") {
			continue // comment: heartbeat
		}
		field, value, _ := strings.Cut(line, ":")
		value = strings.TrimPrefix(value, " ")
		switch field {
		case "event":
			ev.event = value
		case "data":
			data = append(data, value)
		case "id":
			ev.id = value
		}
	}
	c.in.end(sc.Err())
}

func (c *sseConn) recv(timeout time.Duration) (envelope, error) {
	deadline := time.Now().Add(timeout)
	for {
		it, err := c.in.take(deadline)
		if err != nil {
			return envelope{}, err
		}
		if it.id != "" {
			c.cursor = it.id
		}
		switch {
		case it.data == "":
			continue // id-only: a message this session excluded itself from
		case it.event == protocol.EventConnected || it.event == protocol.EventDisconnect:
			continue // the stream's own events; the end of the stream follows a disconnect
		case it.err != nil:
			return envelope{}, fmt.Errorf("event %q data %q: %v", it.event, it.data, it.err)
		case it.event != it.env.Event && !(it.event == "" && it.env.Event == "message"):
			return envelope{}, fmt.Errorf("event: %q but the envelope says %q (%s)", it.event, it.env.Event, it.data)
		}
		return it.env, nil
	}
}

func (c *sseConn) mark() *mark { return &mark{cursor: c.cursor} }

func (c *sseConn) session() string { return c.sess }

func (c *sseConn) publishSelfExcluded(t *testing.T, channel, data string) publishResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	// The seed's exclude_sender: the publish names its session and
	// excludes it (the long-poll driver uses exclude_session instead).
	res, _, err := apiPublish(ctx, c.base, c.tok, map[string]any{
		"channel": channel, "data": json.RawMessage(data), "session": c.sess, "exclude_sender": true})
	if err != nil {
		t.Fatal(err)
	}
	return res
}

// passedOver consumes the next event, which must be id-only.
func (c *sseConn) passedOver(t *testing.T) bool {
	t.Helper()
	it, err := c.in.take(time.Now().Add(20 * time.Second))
	if err != nil {
		t.Fatalf("waiting for the id-only event of an excluded message: %v", err)
	}
	if it.data != "" || it.id == "" {
		t.Fatalf("got %+v, want an event with only an id: line", it)
	}
	c.cursor = it.id
	return true
}

func (c *sseConn) drop() {
	c.mu.Lock()
	tcp := c.tcp
	c.mu.Unlock()
	if tcp != nil {
		if tc, ok := tcp.(*net.TCPConn); ok {
			_ = tc.SetLinger(0) // a reset, not an orderly shutdown
		}
		_ = tcp.Close()
	}
	c.close()
}

func (c *sseConn) close() {
	c.closeOnce.Do(func() {
		c.cancel()
		if c.body != nil {
			_ = c.body.Close()
		}
	})
}

// --- WebSocket ---

type wsDriver struct{}

func (wsDriver) name() string { return "ws" }

// open upgrades GET /ws with the token in the Authorization header, waits
// for the connected push, then subscribes to each channel in turn: with
// since and epoch where from holds a position, else from the head.
func (wsDriver) open(t *testing.T, base, tok string, channels []string, from *mark) (conn, error) {
	t.Helper()
	h := http.Header{}
	if tok != "" {
		h.Set("Authorization", "Bearer "+tok)
	}
	dialer := websocket.Dialer{HandshakeTimeout: 10 * time.Second}
	target := "ws" + strings.TrimPrefix(base, "http") + "/ws"
	if from != nil && from.session != "" {
		target += "?session=" + url.QueryEscape(from.session)
	}
	ws, resp, err := dialer.Dial(target, h)
	if err != nil {
		if resp != nil && resp.StatusCode != http.StatusSwitchingProtocols {
			raw, _ := io.ReadAll(resp.Body)
			if e, ok := parseErrorBody(raw); ok && e.code == resp.StatusCode {
				return nil, &e
			}
			return nil, fmt.Errorf("GET /ws answered %d %q", resp.StatusCode, raw)
		}
		return nil, err
	}
	c := &wsConn{base: base, ws: ws, in: newInbox(), replies: map[int64]chan wsReply{},
		connected: make(chan struct{}), pos: map[string]position{}}
	t.Cleanup(c.close)
	c.in.logTraceOnFailure(t, fmt.Sprintf("ws %v", channels))
	go c.read()
	select {
	case <-c.connected:
	case <-time.After(20 * time.Second):
		c.close()
		return nil, errors.New("no connected push within 20s")
	}
	if c.session() == "" {
		c.close()
		return nil, fmt.Errorf("connection ended before the connected push: %v", c.in.endErr())
	}
	for _, ch := range channels {
		var p *position
		if from != nil {
			if at, ok := from.channels[ch]; ok {
				p = &at
			}
		}
		if err := c.subscribe(ch, p); err != nil {
			c.close()
			return nil, err
		}
	}
	return c, nil
}

type wsConn struct {
	base string
	ws   *websocket.Conn
	in   *inbox

	lastID    atomic.Int64
	writeMu   sync.Mutex
	connected chan struct{}
	closeOnce sync.Once

	mu      sync.Mutex
	replies map[int64]chan wsReply
	sess    string
	pos     map[string]position // per channel: the last offset handed out
}

// wsReply is the answer to one op: the reply's id, ok and error, and
// the fields of a subscribe or publish reply.
type wsReply struct {
	raw []byte
	protocol.Reply
	Channel   string `json:"channel"`
	Epoch     string `json:"epoch"`
	Offset    uint64 `json:"offset"`
	MessageID string `json:"message_id"`
}

func (c *wsConn) read() {
	defer func() {
		c.mu.Lock()
		for id, ch := range c.replies {
			close(ch)
			delete(c.replies, id)
		}
		c.mu.Unlock()
		select {
		case <-c.connected:
		default:
			close(c.connected)
		}
	}()
	for {
		kind, raw, err := c.ws.ReadMessage()
		if err != nil {
			c.in.note(fmt.Sprintf("← (%v)", err))
			c.in.end(err)
			return
		}
		c.in.note("← " + string(raw))
		if kind != websocket.TextMessage {
			c.in.end(fmt.Errorf("a non-text frame (type %d)", kind))
			return
		}
		var f protocol.Frame // a reply (ok) or a push (type)
		if err := json.Unmarshal(raw, &f); err != nil {
			c.in.end(fmt.Errorf("frame %q: %v", raw, err))
			return
		}
		switch {
		case f.OK != nil:
			var r wsReply
			if f.Type != "" || json.Unmarshal(raw, &r) != nil {
				c.in.end(fmt.Errorf("frame %q is neither a push nor a reply", raw))
				return
			}
			r.raw = raw
			c.mu.Lock()
			ch := c.replies[int64(f.ID)]
			delete(c.replies, int64(f.ID))
			c.mu.Unlock()
			if ch == nil {
				c.in.end(fmt.Errorf("reply %s answers no op in flight", raw))
				return
			}
			ch <- r
		case f.Type == protocol.PushConnected:
			c.mu.Lock()
			c.sess = f.Session
			c.mu.Unlock()
			select {
			case <-c.connected:
			default:
				close(c.connected)
			}
		case f.Type == protocol.PushMessage || f.Type == protocol.PushReset || f.Type == protocol.PushPresence:
			c.in.put(decodeItem(item{data: string(f.Message)}))
		case f.Type == protocol.PushBatch:
			for _, m := range f.Messages {
				c.in.put(decodeItem(item{data: string(m)}))
			}
		case f.Type == protocol.PushSkip:
			c.in.put(item{event: "skip", env: envelope{Channel: f.Channel, Offset: f.Offset, Epoch: f.Epoch}})
		case f.Type == protocol.PushUnsubscribed:
			b, _ := json.Marshal(map[string]any{"channel": f.Channel, "event": protocol.EventUnsubscribed,
				"data": map[string]string{"reason": f.Reason}})
			c.in.put(decodeItem(item{data: string(b)}))
		case f.Type == protocol.PushDisconnect:
			// The close follows; ReadMessage reports it.
		default:
			c.in.end(fmt.Errorf("unknown push %s", raw))
			return
		}
	}
}

// call sends one op and waits for its reply.
func (c *wsConn) call(op map[string]any) (wsReply, error) {
	id := c.lastID.Add(1)
	op["id"] = id
	reply := make(chan wsReply, 1)
	c.mu.Lock()
	c.replies[id] = reply
	c.mu.Unlock()
	frame, _ := json.Marshal(op)
	c.in.note("→ " + string(frame))
	c.writeMu.Lock()
	_ = c.ws.SetWriteDeadline(time.Now().Add(10 * time.Second))
	err := c.ws.WriteMessage(websocket.TextMessage, frame)
	c.writeMu.Unlock()
	if err != nil {
		return wsReply{}, fmt.Errorf("sending %v: %w", op, err)
	}
	select {
	case r, ok := <-reply:
		if !ok {
			return wsReply{}, fmt.Errorf("%w before the reply to %v: %v", errEnded, op, c.in.endErr())
		}
		return r, nil
	case <-time.After(20 * time.Second):
		return wsReply{}, fmt.Errorf("no reply to %v within 20s", op)
	}
}

func (c *wsConn) subscribe(channel string, from *position) error {
	op := map[string]any{"op": protocol.OpSubscribe, "channel": channel}
	if from != nil {
		op["since"] = from.offset
		if from.epoch != "" {
			op["epoch"] = from.epoch
		}
	}
	r, err := c.call(op)
	if err != nil {
		return err
	}
	if !r.OK {
		if r.Error == nil {
			return fmt.Errorf("subscribe reply %s: ok:false without an error", r.raw)
		}
		return &openError{code: r.Error.Code, message: r.Error.Message, channel: r.Error.Channel, raw: string(r.raw)}
	}
	if r.Channel != channel || r.Epoch == "" {
		return fmt.Errorf("subscribe %s: reply %s", channel, r.raw)
	}
	c.mu.Lock()
	if from != nil {
		c.pos[channel] = *from
	} else {
		c.pos[channel] = position{offset: r.Offset, epoch: r.Epoch}
	}
	c.mu.Unlock()
	return nil
}

func (c *wsConn) recv(timeout time.Duration) (envelope, error) {
	it, err := c.in.take(time.Now().Add(timeout))
	for err == nil && it.event == "skip" { // consumed on the way, like SSE's id-only events
		c.mu.Lock()
		c.pos[it.env.Channel] = position{offset: it.env.Offset, epoch: it.env.Epoch}
		c.mu.Unlock()
		it, err = c.in.take(time.Now().Add(timeout))
	}
	if err != nil {
		return envelope{}, err
	}
	if it.err != nil {
		return envelope{}, fmt.Errorf("message %q: %v", it.data, it.err)
	}
	env := it.env
	c.mu.Lock()
	defer c.mu.Unlock()
	switch {
	case env.Event == protocol.EventReset:
		var d protocol.ResetData
		if err := json.Unmarshal(env.Data, &d); err != nil {
			return envelope{}, fmt.Errorf("reset %q: %v", it.data, err)
		}
		c.pos[env.Channel] = position{offset: d.ResumeAfter, epoch: d.Epoch}
	case env.Offset > 0:
		c.pos[env.Channel] = position{offset: env.Offset, epoch: env.Epoch}
	}
	return env, nil
}

func (c *wsConn) mark() *mark {
	c.mu.Lock()
	defer c.mu.Unlock()
	m := &mark{channels: make(map[string]position, len(c.pos)), session: c.sess}
	for ch, p := range c.pos {
		m.channels[ch] = p
	}
	return m
}

func (c *wsConn) session() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.sess
}

func (c *wsConn) publishSelfExcluded(t *testing.T, channel, data string) publishResult {
	t.Helper()
	r, err := c.call(map[string]any{"op": protocol.OpPublish, "channel": channel, "data": json.RawMessage(data), "exclude_self": true})
	if err != nil {
		t.Fatal(err)
	}
	if !r.OK || r.Channel != channel || r.Offset == 0 || r.MessageID == "" {
		t.Fatalf("publish reply %s", r.raw)
	}
	return publishResult{Channel: r.Channel, Offset: r.Offset, Epoch: r.Epoch, ID: r.MessageID}
}

// passedOver consumes the next push, which must be the skip of an
// excluded message; the position moves past it.
func (c *wsConn) passedOver(t *testing.T) bool {
	t.Helper()
	it, err := c.in.take(time.Now().Add(20 * time.Second))
	if err != nil {
		t.Fatalf("waiting for the skip of an excluded message: %v", err)
	}
	if it.event != "skip" {
		t.Fatalf("got %+v, want a skip push", it)
	}
	c.mu.Lock()
	c.pos[it.env.Channel] = position{offset: it.env.Offset, epoch: it.env.Epoch}
	c.mu.Unlock()
	return true
}

func (c *wsConn) drop() {
	if tc, ok := c.ws.UnderlyingConn().(*net.TCPConn); ok {
		_ = tc.SetLinger(0)
	}
	_ = c.ws.UnderlyingConn().Close()
	c.close()
}

func (c *wsConn) close() {
	c.closeOnce.Do(func() {
		c.writeMu.Lock()
		_ = c.ws.WriteControl(websocket.CloseMessage,
			websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""), time.Now().Add(time.Second))
		c.writeMu.Unlock()
		_ = c.ws.Close()
	})
}

// --- Long polling ---

type pollDriver struct {
	// pause is how long the client waits between an answer and its next
	// poll (a client that polls now and then); meanwhile messages queue
	// on the server and come in one answer. 0: poll again at once.
	pause time.Duration
	// timeout is the wait, in whole seconds, each poll after the first
	// asks for; 0: pollTimeout. An abandoned session lingers on the
	// server for its last poll's timeout plus poll.grace.
	timeout int
	// nodes, when set, are the servers of a cluster: each poll goes to
	// the next one (no sticky sessions), instead of to open's base.
	nodes []string
}

func (pollDriver) name() string { return "poll" }

// pollTimeout is the wait the driver's polls ask for: short, so a test
// that stops reading does not keep a request in flight for long, and far
// under any proxy's read timeout.
const pollTimeout = 5

// pollAnswer is the body of a 200 answer to /poll.
type pollAnswer = protocol.PollAnswer

// open sends a first GET /poll with timeout=0, from the mark's cursor
// (or its per-channel positions as since/epoch), to learn the session
// and the cursor; then a reader goroutine polls in a loop. A non-200
// answer to the first poll must be a JSON error with the same code.
func (d pollDriver) open(t *testing.T, base, tok string, channels []string, from *mark) (conn, error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	c := &pollConn{base: base, nodes: d.nodes, tok: tok, channels: channels, pause: d.pause, timeout: cmp.Or(d.timeout, pollTimeout),
		in: newInbox(), ctx: ctx, cancel: cancel,
		done: make(chan struct{}),
		client: &http.Client{
			// A poll that outlasts its timeout by this much is a hung server.
			Timeout:   (pollTimeout + 15) * time.Second,
			Transport: &http.Transport{DialContext: (&net.Dialer{Timeout: 10 * time.Second}).DialContext},
		}}
	q := url.Values{"channel": channels, "timeout": {"0"}}
	if from != nil {
		if from.cursor != "" {
			q.Set("cursor", from.cursor)
		}
		if len(from.channels) > 0 {
			for _, ch := range channels {
				since, epoch := "", ""
				if p, ok := from.channels[ch]; ok {
					since, epoch = fmt.Sprint(p.offset), p.epoch
				}
				q.Add("since", since)
				q.Add("epoch", epoch)
			}
		}
	}
	ans, code, raw, err := c.poll(q)
	if err != nil {
		c.stop()
		return nil, err
	}
	if code != 200 {
		c.stop()
		e, ok := parseErrorBody(raw)
		if !ok || e.code != code {
			return nil, fmt.Errorf("GET /poll answered %d %q: want a JSON error body with the same code", code, raw)
		}
		return nil, &e
	}
	if ans.Session == "" || ans.Cursor == "" {
		c.stop()
		return nil, fmt.Errorf("first poll answered %s: want a session and a cursor", raw)
	}
	c.sess, c.cursor = ans.Session, ans.Cursor
	if len(ans.Messages) > 0 {
		// The client is where it started until recv has handed them out.
		c.cursor = ""
		if from != nil {
			c.cursor = from.cursor
		}
	}
	if from != nil && len(from.redeliver) > 0 {
		c.expect = map[string][]envelope{}
		for _, e := range from.redeliver {
			c.expect[e.Channel] = append(c.expect[e.Channel], e)
		}
	}
	c.queue(ans, ans.Cursor)
	t.Cleanup(c.close)
	c.in.logTraceOnFailure(t, fmt.Sprintf("poll %v", channels))
	go c.read(ans.Cursor, ans.Session)
	return c, nil
}

type pollConn struct {
	base, tok string
	nodes     []string // polled in turn when set (pollDriver.nodes)
	polls     int      // polls sent: picks the node
	channels  []string
	pause     time.Duration
	timeout   int // seconds each poll after the first asks for
	in        *inbox
	client    *http.Client
	ctx       context.Context // ends the poll in flight
	cancel    context.CancelFunc
	done      chan struct{} // closed when read returns

	// Test goroutine only:
	cursor string                // the cursor of the last answer recv finished
	tail   []envelope            // handed out since that answer (see mark.redeliver)
	expect map[string][]envelope // per channel: what a resume must bring again first

	mu        sync.Mutex
	sess      string // the session of the last answer
	closeOnce sync.Once
}

// poll sends one GET /poll with q. err is a transport error or an
// undecodable 200 answer; any other status is returned with its body.
func (c *pollConn) poll(q url.Values) (ans pollAnswer, code int, raw []byte, err error) {
	base := c.base
	if len(c.nodes) > 0 {
		base = c.nodes[c.polls%len(c.nodes)]
	}
	c.polls++
	req, _ := http.NewRequestWithContext(c.ctx, http.MethodGet, base+"/poll?"+q.Encode(), nil)
	if c.tok != "" {
		req.Header.Set("Authorization", "Bearer "+c.tok)
	}
	c.in.note("→ GET " + base + "/poll?" + q.Encode())
	resp, err := c.client.Do(req)
	if err != nil {
		c.in.note(fmt.Sprintf("← (%v)", err))
		return ans, 0, nil, err
	}
	defer resp.Body.Close()
	raw, err = io.ReadAll(resp.Body)
	if err != nil {
		c.in.note(fmt.Sprintf("← %d (reading the body: %v)", resp.StatusCode, err))
		return ans, resp.StatusCode, raw, fmt.Errorf("reading the answer: %w", err)
	}
	c.in.note(fmt.Sprintf("← %d %s", resp.StatusCode, abbreviate(raw, 400)))
	if resp.StatusCode != 200 {
		return ans, resp.StatusCode, raw, nil
	}
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		return ans, 200, raw, fmt.Errorf("GET /poll: Content-Type %q", ct)
	}
	if cc := resp.Header.Get("Cache-Control"); cc != "no-store" {
		return ans, 200, raw, fmt.Errorf("GET /poll: Cache-Control %q, want no-store", cc)
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&ans); err != nil {
		return ans, 200, raw, fmt.Errorf("answer %q: %v", abbreviate(raw, 400), err)
	}
	return ans, 200, raw, nil
}

func abbreviate(b []byte, n int) string {
	if len(b) <= n {
		return strings.TrimSpace(string(b))
	}
	return fmt.Sprintf("%s… (%d bytes)", b[:n], len(b))
}

// queue hands an answer's messages to the inbox. The answer's cursor
// rides on its last message, so the position moves only once recv has
// handed out everything the answer brought (as SSE's id: lines do); an
// answer with no message whose cursor moved (messages this session
// excluded itself from) becomes an id-only item.
func (c *pollConn) queue(ans pollAnswer, prev string) {
	for i, m := range ans.Messages {
		it := decodeItem(item{data: string(m)})
		it.event = it.env.Event
		if i == len(ans.Messages)-1 {
			it.id = ans.Cursor
		}
		c.in.put(it)
	}
	if len(ans.Messages) == 0 && ans.Cursor != prev {
		c.in.put(item{id: ans.Cursor})
	}
}

// read polls in a loop, bringing back the last cursor and session, until
// the connection is closed or a poll fails (the server went away or broke
// the protocol): then the inbox ends.
func (c *pollConn) read(cursor, sess string) {
	defer close(c.done)
	for {
		q := url.Values{"channel": c.channels, "cursor": {cursor}, "session": {sess},
			"timeout": {fmt.Sprint(c.timeout)}}
		ans, code, raw, err := c.poll(q)
		switch {
		case c.ctx.Err() != nil:
			c.in.end(errors.New("closed by the client"))
			return
		case err != nil:
			c.in.end(err)
			return
		case code != 200:
			c.in.end(fmt.Errorf("GET /poll answered %d %s", code, raw))
			return
		case ans.Cursor == "" || ans.Session == "":
			c.in.end(fmt.Errorf("answer %s: want a cursor and a session", raw))
			return
		}
		c.queue(ans, cursor)
		cursor = ans.Cursor
		c.mu.Lock()
		c.sess = ans.Session
		c.mu.Unlock()
		if c.pause > 0 {
			select {
			case <-time.After(c.pause):
			case <-c.ctx.Done():
			}
		}
	}
}

func (c *pollConn) recv(timeout time.Duration) (envelope, error) {
	deadline := time.Now().Add(timeout)
	for {
		it, err := c.in.take(deadline)
		if err != nil {
			return envelope{}, err
		}
		if it.err != nil {
			return envelope{}, fmt.Errorf("message %q: %v", it.data, it.err)
		}
		if it.data != "" {
			again, err := c.redelivered(it.env)
			if err != nil {
				return envelope{}, err
			}
			c.tail = append(c.tail, it.env)
			if again {
				it.data = "" // handled before the resume: consumed, not handed out
			}
		}
		if it.id != "" {
			c.cursor, c.tail = it.id, nil
		}
		if it.data == "" {
			continue // id-only: a message this session excluded itself from
		}
		return it.env, nil
	}
}

// redelivered reports whether env is the next message a resume had to
// bring again (the handled start of an answer the mark's cursor does not
// cover). Anything else on that channel before those is an error, except
// a herald.reset: the history no longer holds them.
func (c *pollConn) redelivered(env envelope) (bool, error) {
	want := c.expect[env.Channel]
	if len(want) == 0 {
		return false, nil
	}
	w := want[0]
	if env.Event == w.Event && env.Offset == w.Offset && env.Epoch == w.Epoch && env.ID == w.ID &&
		(env.Offset > 0 || bytes.Equal(env.Data, w.Data)) {
		c.expect[env.Channel] = want[1:]
		return true, nil
	}
	if env.Event == protocol.EventReset {
		delete(c.expect, env.Channel)
		return false, nil
	}
	return false, fmt.Errorf("resumed from a cursor before %s offsets %v, handled already: the server must bring them again first, but sent %s offset %d (id %s)",
		env.Channel, envOffsets(want), env.Event, env.Offset, env.ID)
}

// mark is the cursor of the last answer handed out in full, and what was
// handled beyond it: what recv handed out since, and what a resume has
// yet to bring again.
func (c *pollConn) mark() *mark {
	m := &mark{cursor: c.cursor, redeliver: append([]envelope(nil), c.tail...)}
	for _, ch := range c.channels {
		m.redeliver = append(m.redeliver, c.expect[ch]...)
	}
	return m
}

func (c *pollConn) session() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.sess
}

func (c *pollConn) publishSelfExcluded(t *testing.T, channel, data string) publishResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	res, _, err := apiPublish(ctx, c.base, c.tok, map[string]any{
		"channel": channel, "data": json.RawMessage(data), "exclude_session": c.session()})
	if err != nil {
		t.Fatal(err)
	}
	return res
}

// passedOver consumes the next item, which must be an answer with no
// message whose cursor moved.
func (c *pollConn) passedOver(t *testing.T) bool {
	t.Helper()
	it, err := c.in.take(time.Now().Add(20 * time.Second))
	if err != nil {
		t.Fatalf("waiting for a poll answer that passes over an excluded message: %v", err)
	}
	if it.data != "" || it.id == "" {
		t.Fatalf("got %+v, want an answer with no message and a new cursor", it)
	}
	c.cursor, c.tail = it.id, nil
	return true
}

// drop abandons the session: the poll in flight is cancelled (its
// connection closed) and no other is sent.
func (c *pollConn) drop() { c.close() }

// stop ends the poll in flight and frees the client's connections.
func (c *pollConn) stop() {
	c.cancel()
	c.client.CloseIdleConnections()
}

func (c *pollConn) close() {
	c.closeOnce.Do(func() {
		c.stop()
		<-c.done
		c.client.CloseIdleConnections()
	})
}
