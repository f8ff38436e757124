package main

// `herald subscribe --transport ws`: one connection to GET /ws per
// attempt, under the same reconnect loop, tracker and output as SSE
// (subscribe.go, subscribe_tracker.go).
//
// An attempt waits for the connected push, then sends one subscribe op
// per channel, with since and epoch from the tracker: the --since/--epoch
// flags at first, then the offset and epoch of the last message printed
// (or of the last reset, or the head at the first subscribe). Every
// message, each message of a batch in order, and each reset goes through
// the tracker, which drops replays and breaks the connection on a gap.
// The attempt was a good connection (the backoff restarts) once every
// subscribe was answered ok. A refused subscribe stops the command,
// unless retrying can help (429, 503). The server's pings are answered;
// a ping op goes out every 15 s (or a third of --stall-timeout, when
// shorter), so a dead server shows up as silence: no frame and no ping for
// --stall-timeout ends the connection.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/gorilla/websocket"

	"github.com/heraldrt/herald/protocol"
)

// wsAttempt is the state of one WebSocket connection of the subscriber.
type wsAttempt struct {
	s         *subscriber
	c         *wsConn
	r         attemptResult
	connected bool              // got the connected push
	pending   map[uint64]string // subscribe op id → channel, until its reply
	// closeCode is sent when the client ends the connection; 0 when it
	// is broken or silent and is just dropped.
	closeCode int
}

// attemptWS runs one WebSocket connection and returns how it ended.
func (s *subscriber) attemptWS(ctx context.Context) attemptResult {
	c, err := dialWS(ctx, s.opts.wsDialer, s.opts.base, s.opts.token, maxEventBytes+64<<10)
	if err != nil {
		r := attemptResult{err: err}
		var ae *apiError
		var nw *notWebSocketError
		switch {
		case errors.As(err, &ae):
			r.fatal, r.retryAfter = !ae.retryable(), ae.RetryAfter
		case errors.As(err, &nw):
			r.fatal = true
		case ctx.Err() != nil:
			r.err = ctx.Err()
		}
		return r
	}
	a := &wsAttempt{s: s, c: c, pending: make(map[uint64]string), closeCode: websocket.CloseNormalClosure}
	a.loop(ctx)
	if a.r.broken && a.closeCode != 0 {
		a.closeCode = websocket.CloseProtocolError
	}
	c.close(a.closeCode)
	return a.r
}

// loop reads frames until the connection ends; a.r tells how.
func (a *wsAttempt) loop(ctx context.Context) {
	stall := a.s.opts.stall
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
		case <-ctx.Done():
			a.r.err = ctx.Err()
			return
		case <-stallC:
			a.r.err = fmt.Errorf("no frame and no ping for %s (--stall-timeout)", stall)
			a.closeCode = 0
			return
		case <-a.c.activity:
			alive()
		case <-pingC:
			if _, err := a.c.send(wsOp{Op: "ping"}); err != nil {
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
	e := wsReadEnd(err)
	a.r.err, a.r.fatal, a.r.retryAfter = e.err, e.fatal, e.retryAfter
	a.r.broken = e.protocol
	if !e.protocol {
		a.closeCode = 0
	}
}

// frame handles one frame and reports whether the connection ends.
func (a *wsAttempt) frame(f wsFrame) bool {
	s := a.s
	if f.OK != nil {
		return a.reply(f)
	}
	switch f.Type {
	case "connected":
		if a.connected {
			return false
		}
		a.connected = true
		s.t.session = f.Session
		if f.User != "" {
			s.debugf("connected: session %s, user %s", f.Session, f.User)
		} else {
			s.debugf("connected: session %s", f.Session)
		}
		return a.subscribe()
	case "message":
		return s.deliver(s.t.message(f.Message, false), &a.r)
	case "reset":
		return s.deliver(s.t.message(f.Message, true), &a.r)
	case "batch":
		for _, m := range f.Messages {
			if s.deliver(s.t.message(m, false), &a.r) {
				return true
			}
		}
	case "skip":
		return s.deliver(s.t.skip(f.Channel, f.Epoch, f.Offset), &a.r)
	case "unsubscribed":
		// Printed as SSE prints it: a herald.unsubscribed envelope.
		return s.deliver(s.t.message(unsubscribedEnvelope(f.Channel, f.Reason, time.Now()), false), &a.r)
	case "disconnect":
		return s.deliver(disconnectOutcome(f.Reason, f.Reconnect), &a.r)
	case "presence":
	default:
		s.debugf("ignored a push of type %q", f.Type)
	}
	return false
}

// subscribe sends one subscribe op per channel, each from the channel's
// tracked position.
func (a *wsAttempt) subscribe() bool {
	for _, ch := range a.s.opts.channels {
		op := wsOp{Op: "subscribe", Channel: ch}
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
func (a *wsAttempt) reply(f wsFrame) bool {
	s := a.s
	ch, isSubscribe := a.pending[f.ID]
	if !isSubscribe {
		if !*f.OK {
			s.debugf("error reply to op %d: %v", f.ID, replyError(f))
		}
		return false
	}
	delete(a.pending, f.ID)
	if !*f.OK {
		ae := replyError(f)
		a.r.err = fmt.Errorf("subscribe %q: %w", ch, ae)
		a.r.fatal, a.r.retryAfter = !ae.retryable(), ae.RetryAfter
		return true
	}
	s.t.atHead(ch, f.Epoch, f.Offset)
	s.debugf("subscribed %s: head %s", ch, posString(f.Epoch, f.Offset))
	if len(a.pending) == 0 {
		a.r.connected = true
	}
	return false
}

// unsubscribedEnvelope is the herald.unsubscribed envelope that SSE sends
// where the WebSocket transport sends an unsubscribed push.
func unsubscribedEnvelope(channel, reason string, now time.Time) []byte {
	type data struct {
		Reason string `json:"reason"`
	}
	b, _ := json.Marshal(struct {
		Channel string `json:"channel"`
		Event   string `json:"event"`
		Data    data   `json:"data"`
		Time    string `json:"time"`
	}{channel, protocol.EventUnsubscribed, data{reason}, now.UTC().Format("2006-01-02T15:04:05.000Z07:00")})
	return b
}
