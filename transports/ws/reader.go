package ws

import (
	"errors"
	"sync"
	"time"

	"github.com/gorilla/websocket"

	"github.com/heraldrt/herald/protocol"
	"github.com/heraldrt/herald/server"
)

// conn is one WebSocket connection and its session.
type conn struct {
	h    *Handler
	ws   *websocket.Conn
	sess *server.Session

	items []server.Item // the writer's, used by one writer at a time

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
				c.closeWith(websocket.CloseMessageTooBig, c.tooBig())
			}
			return // closed, timed out (no pong), or broken: the client resumes
		}
		if typ != websocket.TextMessage {
			c.closeWith(websocket.CloseUnsupportedData, binaryRefused)
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

// serveOps serves queued ops until none is left. Publish ops that come
// one after another are served together (publishRun), so a client that
// sends many publishes without waiting for each acknowledgement has them
// committed together, and replies still follow op order.
func (c *conn) serveOps() {
	var frames [][]byte
	for {
		c.opsMu.Lock()
		if len(c.ops) == 0 {
			c.ops, c.opsRunning = nil, false
			c.opsMu.Unlock()
			return
		}
		frames = append(frames[:0], c.ops...)
		clear(c.ops)
		c.ops = c.ops[:0]
		c.opsMu.Unlock()
		var run []protocol.Request
		for _, frame := range frames {
			req, err := decodeRequest(frame)
			if err == nil && req.Op == protocol.OpPublish {
				run = append(run, req)
				continue
			}
			c.publishRun(run)
			run = run[:0]
			if err != nil {
				c.sess.Send(badRequest(req.ID, "%v", err))
			} else {
				c.handle(req)
			}
			<-c.slots
		}
		c.publishRun(run)
		clear(frames)
	}
}

// handle serves one op. Every outcome is a reply on the session's queue;
// a bad op never ends the connection.
func (c *conn) handle(req protocol.Request) {
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

// publishRun serves consecutive publish ops: the core publishes them as
// one batch (server.PublishBatch: each judged on its own, the stored ones
// committed together), and each op is answered, in op order, once every
// stored one is durable. An op refused by the ops limit is answered in
// its place.
func (c *conn) publishRun(run []protocol.Request) {
	for limit := c.h.maxBatch; len(run) > limit; run = run[limit:] {
		c.publishBatch(run[:limit])
	}
	c.publishBatch(run)
}

// publishBatch serves up to limits.max_batch_messages publish ops of a run.
func (c *conn) publishBatch(run []protocol.Request) {
	if len(run) == 0 {
		return
	}
	prs := make([]server.PublishRequest, 0, len(run))
	allowed := make([]error, len(run))
	for i, req := range run {
		if allowed[i] = c.h.srv.AllowOp(c.sess); allowed[i] != nil {
			continue
		}
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
		prs = append(prs, pr)
	}
	var outcomes []server.PublishOutcome
	var err error
	if len(prs) > 0 {
		outcomes, err = c.h.srv.PublishBatch(c.sess.Context(), c.sess.Identity(), prs)
	}
	j := 0
	for i, req := range run {
		switch {
		case allowed[i] != nil:
			c.sess.Send(errorReply(req.ID, allowed[i]))
			<-c.slots
			continue
		case err != nil:
			c.sess.Send(errorReply(req.ID, err))
		case outcomes[j].Err != nil:
			c.sess.Send(errorReply(req.ID, outcomes[j].Err))
		default:
			res := outcomes[j].Result
			c.sess.Send(encode(protocol.PublishReply{Reply: protocol.Reply{ID: req.ID, OK: true}, Channel: res.Channel,
				Offset: res.Offset, Epoch: res.Epoch, MessageID: res.ID, Duplicate: res.Duplicate, Ephemeral: res.Ephemeral}))
		}
		j++
		<-c.slots
	}
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
