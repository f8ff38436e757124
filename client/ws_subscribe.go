package client

// The WebSocket subscriber: one connection to GET /ws per attempt, under
// the same reconnect loop and tracker as SSE.
//
// An attempt dials with the session to continue (?session=, once there
// is one), waits for the connected push, then sends one subscribe op per
// channel with since and epoch from the tracker: the given Positions at
// first, then the offset and epoch of the last message handed out (or of
// the last reset or skip, or the head at the first subscribe). Every
// message, each message of a batch in order, and each reset goes through
// the tracker, which drops replays and breaks the connection on a gap.
// The attempt was a good connection (the backoff restarts) once every
// subscribe was answered ok. A refused subscribe ends the subscription,
// unless retrying can help (429, 503). The server's pings are answered;
// a ping op goes out every 15 s (or a third of the stall timeout, when
// shorter), so a dead server shows up as silence: no frame and no ping for
// the stall timeout ends the connection.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/heraldrt/herald/protocol"
)

// wsPingEvery is how often a subscriber sends a ping op, so a dead server
// shows up as a stall (the reply is a frame).
const wsPingEvery = 15 * time.Second

// wsReadLimit bounds a frame of a subscription (a batch of envelopes).
const wsReadLimit = maxEventBytes + 64<<10

// wsAttempt is the state of one WebSocket connection of the subscriber.
type wsAttempt struct {
	s         *Subscription
	ctx       context.Context
	c         *wsConn
	r         attemptResult
	connected bool              // got the connected push
	pending   map[uint64]string // subscribe op id → channel, until its reply
	// closeCode is sent when the client ends the connection; 0 when it
	// is broken or silent and is just dropped.
	closeCode int
}

// attemptWS runs one WebSocket connection and returns how it ended.
func (s *Subscription) attemptWS(ctx context.Context) attemptResult {
	c, err := s.c.dialWS(ctx, s.t.session, wsReadLimit)
	if err != nil {
		r := attemptResult{err: err}
		var ae *APIError
		var nw *notWebSocketError
		switch {
		case errors.As(err, &ae):
			r.fatal, r.retryAfter = !ae.Retryable(), ae.RetryAfter
			if r.fatal {
				r.err = refused(err)
			}
		case errors.As(err, &nw):
			r.fatal, r.err = true, refused(err)
		case ctx.Err() != nil:
			r.err = ctx.Err()
		}
		return r
	}
	a := &wsAttempt{s: s, ctx: ctx, c: c, pending: make(map[uint64]string), closeCode: protocol.CloseNormal}
	a.loop()
	if a.r.broken && a.closeCode != 0 {
		a.closeCode = protocol.CloseProtocolError
	}
	c.close(a.closeCode)
	return a.r
}

// loop reads frames until the connection ends; a.r tells how.
func (a *wsAttempt) loop() {
	stall := a.s.opts.StallTimeout
	var stallC, pingC <-chan time.Time
	var stallT *time.Timer
	if stall > 0 {
		stallT = time.NewTimer(stall)
		defer stallT.Stop()
		stallC = stallT.C
	}
	alive := func() {
		if stallT != nil {
			stallT.Reset(stall)
		}
	}
	for {
		select {
		case <-a.ctx.Done():
			a.r.err = a.ctx.Err()
			return
		case <-stallC:
			a.r.err = fmt.Errorf("no frame and no ping for %s (stall timeout)", stall)
			a.closeCode = 0
			return
		case <-a.c.activity:
			alive()
		case <-pingC:
			if _, err := a.c.send(protocol.Request{Op: protocol.OpPing}); err != nil {
				a.r.err, a.closeCode = err, 0
				return
			}
		case rd := <-a.c.frames:
			alive()
			if rd.err != nil {
				a.readEnded(rd.err)
				return
			}
			if a.frame(rd.f) {
				return
			}
			if a.connected && pingC == nil {
				t := time.NewTicker(wsPingInterval(stall))
				defer t.Stop()
				pingC = t.C
			}
		}
	}
}

// wsPingInterval is how often the subscriber sends a ping op: every
// wsPingEvery, or often enough that a live but quiet server answers within
// the stall timeout.
func wsPingInterval(stall time.Duration) time.Duration {
	d := wsPingEvery
	if stall > 0 && stall/3 < d {
		d = max(stall/3, time.Millisecond)
	}
	return d
}

func (a *wsAttempt) readEnded(err error) {
	e := wsReadEnd(err, wsReadLimit)
	a.r.err, a.r.fatal, a.r.retryAfter = e.err, e.fatal, e.retryAfter
	a.r.broken = e.protocol
	if !e.protocol {
		a.closeCode = 0
	}
}

// frame handles one frame and reports whether the connection ends.
func (a *wsAttempt) frame(f protocol.Frame) bool {
	s, t := a.s, a.s.t
	if f.OK != nil {
		return a.reply(f)
	}
	switch f.Type {
	case protocol.PushConnected:
		if a.connected {
			return false
		}
		a.connected = true
		t.session = f.Session
		s.log.Debug("connected", "session", f.Session, "user", f.User)
		s.moved()
		return a.subscribe()
	case protocol.PushMessage:
		return s.deliver(a.ctx, t.message(f.Message, false), &a.r)
	case protocol.PushReset:
		return s.deliver(a.ctx, t.message(f.Message, true), &a.r)
	case protocol.PushBatch:
		for _, m := range f.Messages {
			if s.deliver(a.ctx, t.message(m, false), &a.r) {
				return true
			}
		}
	case protocol.PushSkip:
		return s.deliver(a.ctx, t.skip(f.Channel, f.Epoch, f.Offset), &a.r)
	case protocol.PushUnsubscribed:
		// Handed out as SSE sends it: a herald.unsubscribed envelope.
		return s.deliver(a.ctx, t.message(unsubscribedEnvelope(f.Channel, f.Reason, time.Now()), false), &a.r)
	case protocol.PushPresence:
		// Handed out as SSE and long polling do: the herald.join, leave,
		// state, online or offline envelope.
		if len(f.Message) > 0 {
			return s.deliver(a.ctx, t.message(f.Message, false), &a.r)
		}
	case protocol.PushDisconnect:
		return s.deliver(a.ctx, disconnectOutcome(f.Reason, f.Reconnect), &a.r)
	default:
		s.log.Debug("ignored a push", "type", f.Type)
	}
	return false
}

// subscribe sends one subscribe op per channel, each from the channel's
// tracked position.
func (a *wsAttempt) subscribe() bool {
	for _, ch := range a.s.opts.Channels {
		op := protocol.Request{Op: protocol.OpSubscribe, Channel: ch}
		if off, epoch, ok := a.s.t.resumeFrom(ch); ok {
			op.Since, op.Epoch = &off, epoch
		}
		id, err := a.c.send(op)
		if err != nil {
			a.r.err, a.closeCode = err, 0
			return true
		}
		a.pending[id] = ch
	}
	return false
}

// reply handles a reply: to a subscribe (the channel's head, or a
// refusal), or to a ping.
func (a *wsAttempt) reply(f protocol.Frame) bool {
	s := a.s
	ch, isSubscribe := a.pending[f.ID]
	if !isSubscribe {
		if !*f.OK {
			s.log.Debug("error reply", "op", f.ID, "err", replyError(f))
		}
		return false
	}
	delete(a.pending, f.ID)
	if !*f.OK {
		ae := replyError(f)
		a.r.err = fmt.Errorf("subscribe %q: %w", ch, ae)
		a.r.fatal, a.r.retryAfter = !ae.Retryable(), ae.RetryAfter
		if a.r.fatal {
			a.r.err = refused(a.r.err)
		}
		return true
	}
	s.t.atHead(ch, f.Epoch, f.Offset)
	s.log.Debug("subscribed", "channel", ch, "head", posString(f.Epoch, f.Offset))
	s.moved()
	if len(a.pending) == 0 {
		a.r.connected = true
		s.markReady()
	}
	return false
}

// unsubscribedEnvelope is the herald.unsubscribed envelope that SSE sends
// where the WebSocket transport sends an unsubscribed push.
func unsubscribedEnvelope(channel, reason string, now time.Time) []byte {
	b, _ := json.Marshal(struct {
		Channel string                    `json:"channel"`
		Event   string                    `json:"event"`
		Data    protocol.UnsubscribedData `json:"data"`
		Time    string                    `json:"time"`
	}{channel, protocol.EventUnsubscribed, protocol.UnsubscribedData{Reason: reason}, now.UTC().Format("2006-01-02T15:04:05.000Z07:00")})
	return b
}
