package ws

import (
	"bytes"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"

	"github.com/heraldrt/herald/protocol"
	"github.com/heraldrt/herald/server"
	"github.com/heraldrt/herald/transports/internal/watch"
	"github.com/heraldrt/herald/transports/internal/writer"
)

// conn is one WebSocket connection and its session.
type conn struct {
	h       *Handler
	netConn net.Conn // the upgraded connection
	sess    *server.Session
	deflate bool // the client and the upgrader agreed on compression

	stream *writer.Stream              // the flusher's handle: Wake it for control frames
	watch  atomic.Pointer[watch.Watch] // the watcher's, once it watches

	ctrlMu sync.Mutex // guards ctrl
	ctrl   []byte     // control frames for the next turn (pongs, a close)

	readMu sync.Mutex  // held while frames are parsed (by the watcher, or a resume)
	frames frameReader // guarded by readMu
	ended  bool        // guarded by readMu: the client closed, or broke the protocol

	opsMu      sync.Mutex // guards the fields below
	ops        [][]byte   // frames read and not yet served, in order
	opsRunning bool       // a goroutine is serving ops
	readPaused bool       // maxOpsInFlight ops wait: reading waits for them
}

// maxOpsInFlight bounds the ops a connection may have read but not yet
// served: past it the connection is not read until they are served, and
// TCP slows the client down.
const maxOpsInFlight = 256

// read is told what the client sent (watch.OnRead): it parses the frames
// and reports whether to read on.
func (c *conn) read(p []byte, err error) bool {
	if err != nil {
		c.sess.Close(server.ReasonClientGone) // closed, reset: the client resumes
		return false
	}
	c.readMu.Lock()
	defer c.readMu.Unlock()
	return c.parseLocked(p)
}

// parseLocked feeds p to the frame reader and serves what completes:
// text messages become ops, pings get pongs, a close is answered. It
// reports whether to read on (false: the connection ended or waits for
// its ops).
func (c *conn) parseLocked(p []byte) bool {
	if c.ended {
		return false
	}
	c.stream.Touch()
	paused := false
	err := c.frames.feed(p, func(m message) bool {
		switch m.op {
		case opText:
			if !c.enqueue(bytes.Clone(m.payload)) {
				paused = true
				return false
			}
		case opPing:
			c.sendControl(opPong, m.payload)
		case opClose:
			code, err := closeReceived(m.payload)
			if err != nil {
				c.fault(err.(*readError))
				return false
			}
			c.sendClose(code, "") // the closing handshake's answer
			c.ended = true
			c.sess.Close(server.ReasonClientGone)
			return false
		}
		return true // a pong: the client is alive, which Touch noted
	})
	if err != nil {
		c.fault(err.(*readError))
	}
	return !c.ended && !paused
}

// fault ends a connection whose client broke the protocol (or sent a
// binary or oversized message): a close frame saying why, then the end.
func (c *conn) fault(e *readError) {
	c.ended = true
	c.sendClose(e.code, e.text)
	c.sess.Close(server.ReasonClientGone)
}

// resumeReading parses what waited while the ops were served, then reads
// the connection again.
func (c *conn) resumeReading() {
	c.readMu.Lock()
	more := c.parseLocked(nil)
	c.readMu.Unlock()
	if wt := c.watch.Load(); more && wt != nil {
		wt.Resume()
	}
}

// enqueue hands a frame to the op server: ops are served one after
// another, in order, on a goroutine that runs only while there are some.
// It reports false when maxOpsInFlight ops wait: reading pauses until the
// server has caught up.
func (c *conn) enqueue(frame []byte) bool {
	c.opsMu.Lock()
	defer c.opsMu.Unlock()
	c.ops = append(c.ops, frame)
	if !c.opsRunning {
		c.opsRunning = true
		if !c.h.conns.Go(c.serveOps) {
			c.opsRunning = false // shutting down: the session closes next
		}
	}
	if len(c.ops) >= maxOpsInFlight {
		c.readPaused = true
		return false
	}
	return true
}

// serveOps serves queued ops until none is left. It takes every op
// waiting at once, so a paused connection is read again as soon as they
// are taken: at most maxOpsInFlight ops wait and as many are being served.
// Publish ops that come one after another are served together
// (publishRun), so a client that sends many publishes without waiting for
// each acknowledgement has them committed together, and replies still
// follow op order.
func (c *conn) serveOps() {
	var frames [][]byte
	for {
		c.opsMu.Lock()
		if len(c.ops) == 0 {
			c.opsRunning = false
			c.opsMu.Unlock()
			return
		}
		frames = append(frames[:0], c.ops...)
		clear(c.ops)
		c.ops = c.ops[:0]
		resume := c.readPaused
		c.readPaused = false
		c.opsMu.Unlock()
		if resume {
			c.resumeReading()
		}
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
		}
		c.publishRun(run)
		clear(frames)
	}
}

// readFirst reads the connection's first message, before the session
// exists (a connection without credentials authenticates with it),
// answering pings and a close itself. It gives up at the deadline.
func (c *conn) readFirst(deadline time.Time) ([]byte, error) {
	if err := c.netConn.SetReadDeadline(deadline); err != nil {
		return nil, err
	}
	defer c.netConn.SetReadDeadline(time.Time{}) //nolint:errcheck // the watcher reads without one
	buf := make([]byte, 4<<10)
	var first []byte
	var ferr error
	for first == nil {
		n, err := c.netConn.Read(buf)
		if n > 0 {
			c.readMu.Lock()
			perr := c.frames.feed(buf[:n], func(m message) bool {
				switch m.op {
				case opText:
					first = bytes.Clone(m.payload)
					return false // the rest waits for the session
				case opPing:
					c.writeNow(appendHeader(nil, opPong, len(m.payload), false), m.payload)
				case opClose:
					ferr = errClientClosed
					if code, err := closeReceived(m.payload); err == nil {
						c.closeWith(code, "")
					}
					return false
				}
				return true
			})
			c.readMu.Unlock()
			if perr != nil {
				e := perr.(*readError)
				c.closeWith(e.code, e.text)
				return nil, perr
			}
			if ferr != nil {
				return nil, ferr
			}
		}
		if err != nil && first == nil {
			return nil, err
		}
	}
	return first, nil
}

var errClientClosed = &readError{code: websocket.CloseNormalClosure, text: "the client closed the connection"}

// writeNow writes frames before the connection's stream starts (a
// refused connection's close, a pong during authentication).
func (c *conn) writeNow(frames ...[]byte) {
	_ = c.netConn.SetWriteDeadline(time.Now().Add(c.h.opts.WriteTimeout))
	for _, f := range frames {
		if _, err := c.netConn.Write(f); err != nil {
			return
		}
	}
	_ = c.netConn.SetWriteDeadline(time.Time{})
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
