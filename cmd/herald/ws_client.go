package main

// The WebSocket client under `herald subscribe --transport ws` and
// `herald publish --transport ws`: the frames of transports/PROTOCOL.md
// ("WebSocket"), dialing GET /ws, and one reader goroutine per connection
// that hands decoded frames to the command's own loop. The command's
// goroutine is the only writer; the reader answers the server's pings
// (gorilla's default handler, which may run beside a write).

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"sync"
	"time"

	"github.com/gorilla/websocket"
)

const (
	// wsHandshakeTimeout bounds the upgrade (the TCP and TLS handshakes
	// and the HTTP answer).
	wsHandshakeTimeout = 30 * time.Second
	// wsWriteTimeout bounds one frame write, as the server's ws.write_timeout.
	wsWriteTimeout = 10 * time.Second
	// wsPingEvery is how often a subscriber sends a ping op, so a dead
	// server shows up as a stall (the reply is a frame).
	wsPingEvery = 15 * time.Second
	// wsCloseWait bounds the close handshake when the client ends a
	// connection.
	wsCloseWait = time.Second
	// wsPolicyRetry is the wait after a 4008 close (a limit was exceeded:
	// "later").
	wsPolicyRetry = 5 * time.Second
)

// Close codes of PROTOCOL.md beyond gorilla's named ones.
const (
	closeUnauthorized = 4001
	closePolicy       = 4008
	closeSlowConsumer = 4009
	closeTokenExpired = 4010
)

var closeNames = map[int]string{
	websocket.CloseNormalClosure:     "normal closure",
	websocket.CloseGoingAway:         "going away",
	websocket.CloseUnsupportedData:   "binary frame refused",
	websocket.CloseAbnormalClosure:   "abnormal closure",
	websocket.CloseMessageTooBig:     "frame too big",
	websocket.CloseInternalServerErr: "internal error",
	websocket.CloseServiceRestart:    "server restarting",
	closeUnauthorized:                "unauthorized",
	closePolicy:                      "policy: a limit was exceeded",
	closeSlowConsumer:                "slow consumer",
	closeTokenExpired:                "token expired",
}

// wsOp is a client → server frame.
type wsOp struct {
	ID             uint64          `json:"id"`
	Op             string          `json:"op"`
	Channel        string          `json:"channel,omitempty"`
	Since          *uint64         `json:"since,omitempty"`
	Epoch          string          `json:"epoch,omitempty"`
	Event          string          `json:"event,omitempty"`
	Data           json.RawMessage `json:"data,omitempty"`
	IdempotencyKey string          `json:"idempotency_key,omitempty"`
	ExcludeSelf    bool            `json:"exclude_self,omitempty"`
	Ephemeral      bool            `json:"ephemeral,omitempty"`
}

// wsFrame is a server → client frame: a reply to an op (OK set) or a push
// (Type set). The fields are the union of both.
type wsFrame struct {
	ID    uint64   `json:"id"`
	OK    *bool    `json:"ok"`
	Error *wsError `json:"error"`

	Type     string            `json:"type"`
	Message  json.RawMessage   `json:"message"`  // message, reset
	Messages []json.RawMessage `json:"messages"` // batch

	Channel   string `json:"channel"`
	Epoch     string `json:"epoch"`
	Offset    uint64 `json:"offset"`
	MessageID string `json:"message_id"`
	Duplicate bool   `json:"duplicate"`
	Ephemeral bool   `json:"ephemeral"`
	Session   string `json:"session"`
	User      string `json:"user"`
	Code      int    `json:"code"`
	Reason    string `json:"reason"`
	Reconnect bool   `json:"reconnect"`
}

// wsError is the error object of an ok:false reply.
type wsError struct {
	Code       int    `json:"code"`
	Message    string `json:"message"`
	Channel    string `json:"channel"`
	RetryAfter int    `json:"retry_after"`
}

// replyError turns an ok:false reply into an *apiError, so that a refusal
// reads, and is retried or not, the same on every transport.
func replyError(f wsFrame) *apiError {
	if f.Error == nil || f.Error.Code == 0 {
		msg := "an error reply without an error code"
		if f.Error != nil && f.Error.Message != "" {
			msg = f.Error.Message
		}
		return &apiError{Status: http.StatusInternalServerError, Code: http.StatusInternalServerError, Msg: msg}
	}
	e := f.Error
	return &apiError{Status: e.Code, Code: e.Code, Msg: e.Message, Channel: e.Channel,
		RetryAfter: time.Duration(e.RetryAfter) * time.Second}
}

// wsEndpoint is base's /ws with the scheme mapped (http → ws, https →
// wss); a path prefix is kept.
func wsEndpoint(base *url.URL) string {
	u := apiEndpoint(base, "ws")
	if u.Scheme == "https" {
		u.Scheme = "wss"
	} else {
		u.Scheme = "ws"
	}
	return u.String()
}

func newWSDialer() *websocket.Dialer {
	return &websocket.Dialer{Proxy: http.ProxyFromEnvironment, HandshakeTimeout: wsHandshakeTimeout}
}

// notWebSocketError is an upgrade answered with something else than 101
// and not an HTTP error: the URL points at something else.
type notWebSocketError struct{ status int }

func (e *notWebSocketError) Error() string {
	return fmt.Sprintf("the server answered %d %s instead of upgrading to a WebSocket; is --server a Herald server with the WebSocket transport?",
		e.status, http.StatusText(e.status))
}

// errBadFrame marks a frame that breaks the protocol (binary, not JSON).
var errBadFrame = errors.New("bad frame")

// wsRead is one frame, or the error that ended the reading.
type wsRead struct {
	f   wsFrame
	err error
}

// wsConn is one WebSocket connection to the server.
type wsConn struct {
	c *websocket.Conn
	// frames carries what the reader read; after an error it is not
	// written again.
	frames chan wsRead
	// activity gets a signal for every ping of the server (pings carry no
	// frame, but show the server is alive).
	activity   chan struct{}
	done       chan struct{} // closed when the connection is being closed
	readerDone chan struct{}
	lastID     uint64
	closeOnce  sync.Once
}

// dialWS opens a connection to base's /ws with the bearer token. A refused
// upgrade is an *apiError (the server's JSON error, with its status) or a
// *notWebSocketError.
func dialWS(ctx context.Context, d *websocket.Dialer, base *url.URL, token string, readLimit int64) (*wsConn, error) {
	if d == nil {
		d = newWSDialer()
	}
	h := http.Header{}
	setAuth(h, token)
	endpoint := wsEndpoint(base)
	c, resp, err := d.DialContext(ctx, endpoint, h)
	if err != nil {
		if resp != nil && errors.Is(err, websocket.ErrBadHandshake) {
			defer resp.Body.Close()
			if resp.StatusCode < 400 {
				return nil, &notWebSocketError{resp.StatusCode}
			}
			return nil, readAPIError(resp)
		}
		return nil, fmt.Errorf("connect to %s: %w", endpoint, err)
	}
	c.SetReadLimit(readLimit)
	w := &wsConn{
		c:          c,
		frames:     make(chan wsRead),
		activity:   make(chan struct{}, 1),
		done:       make(chan struct{}),
		readerDone: make(chan struct{}),
	}
	pong := c.PingHandler() // gorilla's: answers with a pong
	c.SetPingHandler(func(data string) error {
		select {
		case w.activity <- struct{}{}:
		default:
		}
		return pong(data)
	})
	go w.read()
	return w, nil
}

// read is the reader goroutine: it decodes every frame and hands it over
// until the connection ends. Once the connection is being closed it
// drops what it reads, so the close handshake can finish.
func (w *wsConn) read() {
	defer close(w.readerDone)
	for {
		typ, data, err := w.c.ReadMessage()
		r := wsRead{err: err}
		switch {
		case err != nil:
		case typ != websocket.TextMessage:
			r.err = fmt.Errorf("%w: a binary frame, the protocol has text frames only", errBadFrame)
		default:
			if jerr := json.Unmarshal(data, &r.f); jerr != nil {
				r.err = fmt.Errorf("%w: not a JSON object: %v: %s", errBadFrame, jerr, bodySnippet(data))
			}
		}
		select {
		case w.frames <- r:
		case <-w.done:
		}
		if r.err != nil {
			return
		}
	}
}

// send writes one op with the next id and returns the id.
func (w *wsConn) send(op wsOp) (uint64, error) {
	w.lastID++
	op.ID = w.lastID
	if err := w.c.SetWriteDeadline(time.Now().Add(wsWriteTimeout)); err != nil {
		return 0, err
	}
	if err := w.c.WriteJSON(op); err != nil {
		return 0, fmt.Errorf("send %s: %w", op.Op, err)
	}
	return op.ID, nil
}

// close ends the connection. With a code, it first sends a close frame
// and waits a moment for the server's; with 0 (the connection is already
// broken, or the server silent) it just drops it. It waits for the reader.
func (w *wsConn) close(code int) {
	w.closeOnce.Do(func() {
		close(w.done)
		if code != 0 && w.c.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(code, ""), time.Now().Add(wsCloseWait)) == nil {
			t := time.NewTimer(wsCloseWait)
			select {
			case <-w.readerDone:
			case <-t.C:
			}
			t.Stop()
		}
		w.c.Close()
		<-w.readerDone
	})
}

// await reads frames until match takes one (or fails), ignoring the
// others. It fails when ctx ends, timeout passes or the connection ends.
func (w *wsConn) await(ctx context.Context, timeout time.Duration, match func(wsFrame) (bool, error)) (wsFrame, error) {
	t := time.NewTimer(timeout)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return wsFrame{}, ctx.Err()
		case <-t.C:
			return wsFrame{}, fmt.Errorf("no answer from the server within %s", timeout)
		case r := <-w.frames:
			if r.err != nil {
				return wsFrame{}, wsReadEnd(r.err).err
			}
			if ok, err := match(r.f); ok || err != nil {
				return r.f, err
			}
		}
	}
}

// wsEnd is how a connection's reading ended, and what to do about it.
type wsEnd struct {
	err        error
	fatal      bool          // reconnecting cannot help
	protocol   bool          // the server broke the protocol
	retryAfter time.Duration // wait at least this long before reconnecting
}

// wsReadEnd judges the error that ended a connection's reading: close
// codes 4001 (unauthorized), 1003 and 1009 (fix the client), a frame over
// the read limit are fatal; 4008 is retried later; everything else (1011,
// 1012, 4009, 4010, an abnormal close, a network error) is reconnected.
func wsReadEnd(err error) wsEnd {
	var ce *websocket.CloseError
	switch {
	case errors.Is(err, errBadFrame):
		return wsEnd{err: err, protocol: true}
	case errors.Is(err, websocket.ErrReadLimit):
		return wsEnd{err: fmt.Errorf("the server sent a frame over %d bytes", maxEventBytes), fatal: true}
	case errors.As(err, &ce) && ce.Code == websocket.CloseAbnormalClosure:
		return wsEnd{err: fmt.Errorf("connection lost: %s", ce.Text)}
	case errors.As(err, &ce):
		e := wsEnd{err: fmt.Errorf("the server closed the connection: %s", closeText(ce))}
		switch ce.Code {
		case closeUnauthorized, websocket.CloseUnsupportedData, websocket.CloseMessageTooBig:
			e.fatal = true
		case closePolicy:
			e.retryAfter = wsPolicyRetry
		}
		return e
	default:
		return wsEnd{err: fmt.Errorf("connection lost: %w", err)}
	}
}

// closeText is a close frame for a message: "4001 unauthorized: token is
// expired".
func closeText(ce *websocket.CloseError) string {
	s := fmt.Sprint(ce.Code)
	if name := closeNames[ce.Code]; name != "" {
		s += " " + name
	}
	if ce.Text != "" {
		s += ": " + ce.Text
	}
	return s
}
