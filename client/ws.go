package client

// One WebSocket connection to GET /ws (PROTOCOL.md, "WebSocket"): the
// upgrade, one reader goroutine that hands decoded frames to the
// connection's user, and how a connection's end is judged. The user's
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

	"github.com/heraldrt/herald/protocol"
)

const (
	// wsHandshakeTimeout bounds the upgrade (the TCP and TLS handshakes
	// and the HTTP answer).
	wsHandshakeTimeout = 30 * time.Second
	// wsWriteTimeout bounds one frame write, as the server's ws.write_timeout.
	wsWriteTimeout = 10 * time.Second
	// wsCloseWait bounds the close handshake when the client ends a
	// connection.
	wsCloseWait = time.Second
	// wsPolicyRetry is the wait after a 4008 close (a limit was exceeded:
	// "later").
	wsPolicyRetry = 5 * time.Second
)

// notWebSocketError is an upgrade answered with something else than 101
// and not an HTTP error: the URL points at something else.
type notWebSocketError struct{ status int }

func (e *notWebSocketError) Error() string {
	return fmt.Sprintf("the server answered %d %s instead of upgrading to a WebSocket; is the URL a Herald server with the WebSocket transport?",
		e.status, http.StatusText(e.status))
}

// errBadFrame marks a frame that breaks the protocol (binary, not JSON).
var errBadFrame = errors.New("bad frame")

// wsRead is one frame, or the error that ended the reading.
type wsRead struct {
	f   protocol.Frame
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

// wsURL is the client's /ws with the scheme mapped (http → ws, https →
// wss) and, when not empty, the session to continue.
func (c *Client) wsURL(session string) string {
	u := c.URL("ws")
	if u.Scheme == "https" {
		u.Scheme = "wss"
	} else {
		u.Scheme = "ws"
	}
	if session != "" {
		u.RawQuery = url.Values{"session": {session}}.Encode()
	}
	return u.String()
}

// dialWS opens a connection to /ws with the client's token, continuing
// session when not empty. A refused upgrade is an *APIError (the server's
// JSON error, with its status) or a *notWebSocketError.
func (c *Client) dialWS(ctx context.Context, session string, readLimit int64) (*wsConn, error) {
	h := http.Header{}
	c.setAuth(h)
	endpoint := c.wsURL(session)
	conn, resp, err := c.opts.Dialer.DialContext(ctx, endpoint, h)
	if err != nil {
		if resp != nil && errors.Is(err, websocket.ErrBadHandshake) {
			defer resp.Body.Close()
			if resp.StatusCode < 400 {
				return nil, &notWebSocketError{resp.StatusCode}
			}
			return nil, ErrorFromResponse(resp)
		}
		return nil, fmt.Errorf("connect to %s: %w", endpoint, err)
	}
	conn.SetReadLimit(readLimit)
	w := &wsConn{
		c:          conn,
		frames:     make(chan wsRead),
		activity:   make(chan struct{}, 1),
		done:       make(chan struct{}),
		readerDone: make(chan struct{}),
	}
	pong := conn.PingHandler() // gorilla's: answers with a pong
	conn.SetPingHandler(func(data string) error {
		select {
		case w.activity <- struct{}{}:
		default:
		}
		return pong(data)
	})
	go w.read()
	return w, nil
}

// read is the reader goroutine, owned by the wsConn (close waits for it):
// it decodes every frame and hands it over until the connection ends.
// Once the connection is being closed it drops what it reads, so the
// close handshake can finish.
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
func (w *wsConn) send(op protocol.Request) (uint64, error) {
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
func (w *wsConn) await(ctx context.Context, timeout time.Duration, match func(protocol.Frame) (bool, error)) (protocol.Frame, error) {
	t := time.NewTimer(timeout)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return protocol.Frame{}, ctx.Err()
		case <-t.C:
			return protocol.Frame{}, fmt.Errorf("no answer from the server within %s", timeout)
		case r := <-w.frames:
			if r.err != nil {
				return protocol.Frame{}, wsReadEnd(r.err, 0).err
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
func wsReadEnd(err error, readLimit int64) wsEnd {
	var ce *websocket.CloseError
	switch {
	case errors.Is(err, errBadFrame):
		return wsEnd{err: err, protocol: true}
	case errors.Is(err, websocket.ErrReadLimit):
		return wsEnd{err: fmt.Errorf("the server sent a frame over %d bytes", readLimit), fatal: true}
	case errors.As(err, &ce) && ce.Code == protocol.CloseAbnormal:
		return wsEnd{err: fmt.Errorf("connection lost: %s", ce.Text)}
	case errors.As(err, &ce):
		e := wsEnd{err: fmt.Errorf("the server closed the connection: %s", closeText(ce))}
		switch ce.Code {
		case protocol.CloseUnauthorized:
			e.err, e.fatal = refused(e.err), true
		case protocol.CloseUnsupportedData, protocol.CloseMessageTooBig:
			e.fatal = true
		case protocol.ClosePolicy:
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
	if name := protocol.CloseName(ce.Code); name != "" {
		s += " " + name
	}
	if ce.Text != "" {
		s += ": " + ce.Text
	}
	return s
}

// disconnected is the error of a disconnect push: the server is about to
// close the connection, so no reply is coming.
func disconnected(f protocol.Frame) error {
	if f.Type != protocol.PushDisconnect {
		return nil
	}
	return fmt.Errorf("the server closed the connection: %s (close code %d)", f.Reason, f.Code)
}

// Conn is one WebSocket connection for publishing: each Publish sends a
// publish op and waits for its acknowledgement (durable, for a stored
// message), so messages published one after another on a Conn are stored
// in that order. Pushes the server sends on it are ignored; to receive,
// use Subscribe. A Conn is safe for concurrent use; its calls are served
// one at a time. To publish many messages fast, use PublishMany.
type Conn struct {
	mu      sync.Mutex
	c       *wsConn
	session string
	user    string
}

// maxReplyBytes bounds a reply frame on a Conn.
const maxReplyBytes = 64 << 10

// Dial opens a WebSocket connection and waits for the server's connected
// push, so bad credentials fail here, before anything is sent.
func (c *Client) Dial(ctx context.Context) (*Conn, error) {
	w, err := c.dialWS(ctx, "", maxReplyBytes)
	if err != nil {
		return nil, err
	}
	f, err := w.await(ctx, DefaultTimeout, func(f protocol.Frame) (bool, error) {
		return f.Type == protocol.PushConnected, disconnected(f)
	})
	if err != nil {
		w.close(0)
		return nil, err
	}
	return &Conn{c: w, session: f.Session, user: f.User}, nil
}

// Session is the connection's session id: what exclude_session names.
func (c *Conn) Session() string { return c.session }

// Publish sends one publish op and returns its acknowledgement in the
// shape of the HTTP API's. req.ExcludeSender sends the op's exclude_self:
// the message is not pushed back to this connection. The op has no
// session of its own to name, so req.Session and req.ExcludeSession must
// be empty. An ok:false reply is an *APIError.
func (c *Conn) Publish(ctx context.Context, req protocol.PublishRequest) (protocol.PublishResult, error) {
	if req.Session != "" || req.ExcludeSession != "" {
		return protocol.PublishResult{}, errors.New("client: a publish on a Conn is from its own session: leave Session and ExcludeSession empty (ExcludeSender leaves this connection out)")
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	id, err := c.c.send(protocol.Request{
		Op:             protocol.OpPublish,
		Channel:        req.Channel,
		Event:          req.Event,
		Data:           req.Data,
		IdempotencyKey: req.IdempotencyKey,
		ExcludeSelf:    req.ExcludeSender,
		Ephemeral:      req.Ephemeral,
	})
	if err != nil {
		return protocol.PublishResult{}, err
	}
	f, err := c.c.await(ctx, DefaultTimeout, func(f protocol.Frame) (bool, error) {
		return f.OK != nil && f.ID == id, disconnected(f)
	})
	if err != nil {
		return protocol.PublishResult{}, err
	}
	if !*f.OK {
		return protocol.PublishResult{}, replyError(f)
	}
	res := protocol.PublishResult{Channel: f.Channel, Offset: f.Offset, Epoch: f.Epoch, ID: f.MessageID,
		Duplicate: f.Duplicate, Ephemeral: f.Ephemeral}
	if res.Channel == "" {
		res.Channel = req.Channel
	}
	return res, nil
}

// PublishWindow is how many publish ops PublishMany keeps in flight on a
// Conn: enough for the server to commit them in batches, few enough that
// its replies never wait on a client that is still sending.
const PublishWindow = 64

// PublishMany publishes msgs on the connection without waiting for each
// acknowledgement: it keeps up to PublishWindow publish ops in flight and
// takes their replies, which come in op order. The server serves
// publishes that arrive together as one batch, committed with one disk
// sync, so this is much faster than calling Publish for each. It returns
// one result per message, in order, each once durable; a message the
// server refused has its Error set and stops nothing. The rules of
// Publish apply to each message. The error ends the call (the connection
// failed, or ctx ended): the results returned are those of the messages
// acknowledged before it, and the rest may or may not have been
// published (send them again with an idempotency key to be sure).
func (c *Conn) PublishMany(ctx context.Context, msgs []protocol.PublishRequest) ([]protocol.BatchPublishResult, error) {
	for i, req := range msgs {
		if req.Session != "" || req.ExcludeSession != "" {
			return nil, fmt.Errorf("client: message %d: a publish on a Conn is from its own session: leave Session and ExcludeSession empty (ExcludeSender leaves this connection out)", i)
		}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]protocol.BatchPublishResult, 0, len(msgs))
	ids := make([]uint64, 0, min(len(msgs), PublishWindow))
	for sent := 0; len(out) < len(msgs); {
		for sent < len(msgs) && sent-len(out) < PublishWindow {
			req := msgs[sent]
			id, err := c.c.send(protocol.Request{
				Op:             protocol.OpPublish,
				Channel:        req.Channel,
				Event:          req.Event,
				Data:           req.Data,
				IdempotencyKey: req.IdempotencyKey,
				ExcludeSelf:    req.ExcludeSender,
				Ephemeral:      req.Ephemeral,
			})
			if err != nil {
				return out, err
			}
			ids = append(ids, id)
			sent++
		}
		id := ids[0]
		ids = ids[1:]
		f, err := c.c.await(ctx, DefaultTimeout, func(f protocol.Frame) (bool, error) {
			return f.OK != nil && f.ID == id, disconnected(f)
		})
		if err != nil {
			return out, err
		}
		req := msgs[len(out)]
		res := protocol.BatchPublishResult{Channel: f.Channel, Offset: f.Offset, Epoch: f.Epoch, ID: f.MessageID,
			Duplicate: f.Duplicate, Ephemeral: f.Ephemeral}
		if res.Channel == "" {
			res.Channel = req.Channel
		}
		if !*f.OK {
			e := replyError(f)
			res.Error = &protocol.ErrorDetail{Code: e.Code, Message: e.Message, Channel: e.Channel, RetryAfter: int(e.RetryAfter / time.Second)}
		}
		out = append(out, res)
	}
	return out, nil
}

// Close ends the connection with a normal close.
func (c *Conn) Close() error {
	c.c.close(protocol.CloseNormal)
	return nil
}
