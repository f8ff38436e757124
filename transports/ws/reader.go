package ws

import (
	"errors"
	"sync"
	"time"

	"github.com/gorilla/websocket"

	"github.com/heraldrt/herald/protocol"
	"github.com/heraldrt/herald/server"
	"github.com/heraldrt/herald/transports/internal/writer"
)

// conn is one WebSocket connection and its session.
type conn struct {
	h    *Handler
	ws   *websocket.Conn
	sess *server.Session

	stream  *writer.Stream // the flusher's handle: Wake it for control frames
	deflate bool           // the client and the upgrader agreed on compression

	ctrlMu sync.Mutex // guards ctrl
	ctrl   []byte     // control frames for the next turn (pongs, a close)

	// slots bounds the ops read but not yet served: when they are all
	// taken the reader stops reading, and TCP slows the client down.
	slots chan struct{}

	opsMu      sync.Mutex // guards ops and opsRunning
	ops        [][]byte   // frames read and not yet served, in order
	opsRunning bool       // a goroutine is serving ops
}

// maxOpsInFlight bounds the ops a connection may have read but not yet
// served.
const maxOpsInFlight = 256

// readLoop reads frames until the connection ends and turns each op into
// a core call. It closes the session when it returns, which stops the
// writer.
func (c *conn) readLoop(pending []byte) {
	defer c.sess.Close(server.ReasonClientGone)
	alive := c.h.opts.PingInterval + c.h.opts.PongTimeout
	extend := func(string) error { return c.ws.SetReadDeadline(time.Now().Add(alive)) }
	_ = extend("")
	c.ws.SetPongHandler(extend)
	if pending != nil && !c.enqueue(pending) {
		return
	}
	for {
		typ, frame, err := c.ws.ReadMessage()
		if err != nil {
			if errors.Is(err, websocket.ErrReadLimit) {
				c.sendClose(websocket.CloseMessageTooBig, c.tooBig())
			}
			return // closed, timed out (no pong), or broken: the client resumes
		}
		if typ != websocket.TextMessage {
			c.sendClose(websocket.CloseUnsupportedData, binaryRefused)
			return
		}
		_ = extend("")
		if !c.enqueue(frame) {
			return
		}
	}
}

// enqueue hands a frame to the op server: ops are served one after
// another, in order, on a goroutine that runs only while there are some.
// The reader itself only reads, so its goroutine stays small while the
// connection idles. It waits while maxOpsInFlight ops are waiting, and
// reports false when the session closed meanwhile.
func (c *conn) enqueue(frame []byte) bool {
	select {
	case c.slots <- struct{}{}:
	case <-c.sess.Done():
		return false
	}
	c.opsMu.Lock()
	defer c.opsMu.Unlock()
	c.ops = append(c.ops, frame)
	if !c.opsRunning {
		c.opsRunning = true
		if !c.h.conns.Go(c.serveOps) {
			c.opsRunning = false // shutting down: the session closes next
		}
	}
	return true
}

// serveOps serves queued ops until none is left.
func (c *conn) serveOps() {
	for {
		c.opsMu.Lock()
		if len(c.ops) == 0 {
			c.ops, c.opsRunning = nil, false
			c.opsMu.Unlock()
			return
		}
		frame := c.ops[0]
		c.ops[0] = nil
		c.ops = c.ops[1:]
		c.opsMu.Unlock()
		c.handle(frame)
		<-c.slots
	}
}

// handle serves one op. Every outcome is a reply on the session's queue;
// a bad op never ends the connection.
func (c *conn) handle(frame []byte) {
	req, err := decodeRequest(frame)
	if err != nil {
		c.sess.Send(badRequest(req.ID, "%v", err))
		return
	}
	if err := c.h.srv.AllowOp(c.sess); err != nil {
		c.sess.Send(errorReply(req.ID, err))
		return
	}
	var out []byte
	switch req.Op {
	case protocol.OpSubscribe:
		out = c.subscribe(req)
	case protocol.OpUnsubscribe:
		out = c.unsubscribe(req)
	case protocol.OpPublish:
		out = c.publish(req)
	case protocol.OpHistory:
		out = c.history(req)
	case protocol.OpRefresh:
		out = c.refresh(req)
	case protocol.OpPresence:
		out = c.presence(req)
	case protocol.OpSignal:
		out = c.signal(req)
	case protocol.OpPing:
		out = okReply(req.ID)
	case protocol.OpAuth:
		out = badRequest(req.ID, "auth is only accepted as the first frame of a connection without credentials; use refresh to change tokens")
	default:
		out = badRequest(req.ID, "unknown op %q; want subscribe, unsubscribe, publish, history, presence, signal, refresh or ping", req.Op)
	}
	if out != nil {
		c.sess.Send(out)
	}
}

// subscribe adds a channel. The core queues its reply (the Ack) in op
// order and ahead of the channel's first message, so it returns nil on
// success.
func (c *conn) subscribe(req protocol.Request) []byte {
	if req.Channel == "" {
		return badRequest(req.ID, `subscribe needs a "channel"`)
	}
	if req.Since == nil && req.Epoch != "" {
		return badRequest(req.ID, `"epoch" is given without "since"`)
	}
	sr := server.SubscribeRequest{
		Channel: req.Channel,
		Ack: func(res server.SubscribeResult) []byte {
			return encode(protocol.SubscribeReply{Reply: protocol.Reply{ID: req.ID, OK: true}, SubscribeResult: res})
		},
	}
	if req.Since != nil {
		sr.From = &server.Position{Since: *req.Since, Epoch: req.Epoch}
	}
	if _, err := c.h.srv.Subscribe(c.sess.Context(), c.sess, sr); err != nil {
		return errorReply(req.ID, err)
	}
	return nil
}

func (c *conn) unsubscribe(req protocol.Request) []byte {
	if req.Channel == "" {
		return badRequest(req.ID, `unsubscribe needs a "channel"`)
	}
	if !c.h.srv.Unsubscribe(c.sess, req.Channel) {
		return badRequest(req.ID, "not subscribed to channel %q", req.Channel)
	}
	return okReply(req.ID)
}

// publish runs the core's publish pipeline and answers once the message is
// durable. Publishes of one connection are served one after another, so
// their order is kept.
func (c *conn) publish(req protocol.Request) []byte {
	pr := server.PublishRequest{
		Channel:        req.Channel,
		Event:          req.Event,
		Data:           req.Data,
		IdempotencyKey: req.IdempotencyKey,
		Ephemeral:      req.Ephemeral,
		Session:        c.sess.ID,
	}
	if req.ExcludeSelf {
		pr.ExcludeSession = c.sess.ID
	}
	res, err := c.h.srv.Publish(c.sess.Context(), c.sess.Identity(), pr)
	if err != nil {
		return errorReply(req.ID, err)
	}
	return encode(protocol.PublishReply{Reply: protocol.Reply{ID: req.ID, OK: true}, Channel: res.Channel, Offset: res.Offset,
		Epoch: res.Epoch, MessageID: res.ID, Duplicate: res.Duplicate, Ephemeral: res.Ephemeral})
}

// history reads a page of a channel's history; the core checks since and
// limit, as it does for the API.
func (c *conn) history(req protocol.Request) []byte {
	var since uint64
	if req.Since != nil {
		since = *req.Since
	}
	page, err := c.h.srv.History(c.sess.Context(), c.sess.Identity(),
		server.HistoryRequest{Channel: req.Channel, Since: since, Limit: req.Limit})
	if err != nil {
		return errorReply(req.ID, err)
	}
	return encode(protocol.HistoryReply{Reply: protocol.Reply{ID: req.ID, OK: true}, HistoryPage: page})
}

// presence answers who is in a channel (stats: counts only).
func (c *conn) presence(req protocol.Request) []byte {
	info, err := c.h.srv.Presence(c.sess.Identity(), req.Channel, req.Stats)
	if err != nil {
		return errorReply(req.ID, err)
	}
	return encode(protocol.PresenceReply{Reply: protocol.Reply{ID: req.ID, OK: true}, Presence: info})
}

// signal sets or clears the caller's short-lived state in a channel.
func (c *conn) signal(req protocol.Request) []byte {
	err := c.h.srv.Signal(c.sess.Identity(), server.SignalRequest{Channel: req.Channel, State: req.State, TTL: req.TTL})
	if err != nil {
		return errorReply(req.ID, err)
	}
	return okReply(req.ID)
}

// refresh swaps the session's token for a fresh one of the same user.
func (c *conn) refresh(req protocol.Request) []byte {
	if req.Token == "" {
		return badRequest(req.ID, `refresh needs a "token"`)
	}
	id, err := c.h.srv.Identify(req.Token)
	if err == nil {
		err = c.h.srv.Refresh(c.sess, id)
	}
	if err != nil {
		return errorReply(req.ID, err)
	}
	out := protocol.RefreshReply{Reply: protocol.Reply{ID: req.ID, OK: true}}
	if !id.Expires.IsZero() {
		out.Expires = id.Expires.UTC().Format(time.RFC3339)
	}
	return encode(out)
}
