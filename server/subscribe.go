package server

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/heraldrt/herald/protocol"
	"github.com/heraldrt/herald/store"
)

// Position is where a client stands on one channel: the last offset it
// holds and the epoch that offset belongs to.
type Position struct {
	// Since is the last offset the client holds; 0 (without Epoch)
	// replays all that is kept, with no herald.reset for what was trimmed.
	Since uint64
	// Epoch is the epoch Since refers to; "" when the client does not know
	// it (the position is then trusted as is).
	Epoch string
}

// SubscribeRequest asks for one channel on a session.
type SubscribeRequest struct {
	Channel string
	// From is the client's position. Nil starts at the channel's head:
	// only messages published from now on.
	From *Position
	// Ack, when set, makes the frame that acknowledges the subscribe (a
	// WebSocket reply). Subscribe queues it on the session's queue before
	// it returns — after the frames Sent before, ahead of those Sent
	// after — and before anything of the subscription.
	Ack func(SubscribeResult) []byte
}

// SubscribeResult describes a new subscription: the channel's epoch and
// head when it started (the wire shape, whose home is protocol).
type SubscribeResult = protocol.SubscribeResult

// Subscribe adds a channel to a session. Messages after the client's
// position are replayed from the store, then live ones follow with no gap
// and no duplicate at the hand-over; if the history no longer reaches back
// (trimmed, or a new epoch) a herald.reset comes first.
func (s *Server) Subscribe(ctx context.Context, sess *Session, req SubscribeRequest) (SubscribeResult, error) {
	if err := ValidateChannel(req.Channel); err != nil {
		return SubscribeResult{}, err
	}
	cr := s.rules.lookup(req.Channel)
	return s.subscribe(ctx, sess, req, &cr)
}

// subscribe is Subscribe on a valid channel whose rule is looked up: the
// one match of the subscribe, carried through authorisation, the
// subscriber cap, batching and presence.
func (s *Server) subscribe(ctx context.Context, sess *Session, req SubscribeRequest, cr *channelRule) (SubscribeResult, error) {
	if err := s.authorize(sess.Identity(), ActionSubscribe, cr); err != nil {
		return SubscribeResult{}, err
	}
	sess.mu.Lock()
	switch {
	case sess.closed:
		sess.mu.Unlock()
		return SubscribeResult{}, ErrClosed
	case sess.findLocked(req.Channel) != nil:
		sess.mu.Unlock()
		return SubscribeResult{}, invalidf("already subscribed to channel %q", req.Channel)
	case len(sess.subs) >= s.cfg.Limits.MaxSubscriptions:
		sess.mu.Unlock()
		return SubscribeResult{}, invalidf("a session may hold %d subscriptions", s.cfg.Limits.MaxSubscriptions)
	}
	sess.mu.Unlock()

	if err := checkCapacity(s.hub, cr); err != nil {
		return SubscribeResult{}, err
	}

	// The name lives as long as the subscription (and the channel, and
	// the store's entry for it): a copy of its own, not a piece of the
	// request it came in (an SSE query string, a WebSocket frame).
	req.Channel = strings.Clone(req.Channel)

	// Register first, then read the head: every message committed after
	// the head read is fanned out after registration and lands in
	// sub.pending; everything up to the head is in the store. The union
	// has no gap; the drainer drops the overlap.
	ch := s.hub.acquire(req.Channel)
	sub := &subscription{sess: sess, ch: ch, name: req.Channel, index: -1, muted: req.Ack != nil, rule: cr.rule}
	ch.add(sub)
	head, err := s.engine.Head(ctx, req.Channel)
	if from := req.From; err == nil && from != nil && from.Since > head.Head && (from.Epoch == "" || from.Epoch == head.Epoch) {
		head, err = s.headReaching(ctx, req.Channel, from.Since, head)
	}
	if err != nil {
		ch.remove(sub)
		s.hub.release(ch)
		return SubscribeResult{}, fmt.Errorf("subscribe %q: %w", req.Channel, err)
	}

	sub.epoch = head.Epoch
	res := SubscribeResult{Channel: req.Channel, Epoch: head.Epoch, Head: head.Head}
	switch from := req.From; {
	case from == nil:
		sub.since = head.Head
		sub.pos = cursorEntry{channel: req.Channel, epoch: head.Epoch, offset: head.Head}
		sub.atHead = true
	case from.Epoch != "" && from.Epoch != head.Epoch:
		// The client's offsets belong to a lost log: replay what is kept.
		sub.pos = cursorEntry{channel: req.Channel, epoch: from.Epoch, offset: from.Since}
		sub.resetReason = resetEpochChanged
	case from.Since > head.Head:
		sub.pos = cursorEntry{channel: req.Channel, epoch: from.Epoch, offset: from.Since}
		sub.resetReason = resetAhead
	default:
		sub.since = from.Since
		sub.pos = cursorEntry{channel: req.Channel, epoch: head.Epoch, offset: from.Since}
		// Since 0 without an epoch asks for all that is kept. With an
		// epoch it is a position held (the client saw the channel empty):
		// if the history no longer starts at 1, the client missed some.
		sub.fromOldest = from.Since == 0 && from.Epoch == ""
	}
	sub.pos.hash = channelHash(req.Channel)

	// The reply goes on the session's queue now, in line with the
	// caller's other frames (a WebSocket connection serves its ops one
	// after another and queues each reply as its op ends), and before the
	// subscription is put in catchingUp, where the drainer finds it. It
	// stays ahead of every message of the subscription:
	//   - stored ones: the subscription is not live, so the hub parks them
	//     in sub.pending; they reach the drainer only through catchUp,
	//     which runs for a subscription found in catchingUp, after the
	//     drain of the queue that holds the reply (see DrainLimit);
	//   - ephemeral ones: the hub skips a muted subscription; queueAck
	//     queues the reply and unmutes it under ch.mu, which the hub holds
	//     while it fans out (lock order channel → queue, hub.go).
	//
	// Presence counts the member before the reply can be written: a
	// client that has its subscribe acknowledged and asks who is there
	// finds itself (its own join event is not sent to it).
	s.presence.join(sess, sub)
	if req.Ack != nil && !queueAck(sub, req.Ack(res)) {
		s.drop(sess, sub)
		return SubscribeResult{}, ErrClosed
	}

	sess.mu.Lock()
	if sess.closed {
		sess.mu.Unlock()
		s.drop(sess, sub)
		return SubscribeResult{}, ErrClosed
	}
	sess.subs = append(sess.subs, sub)
	sess.wideCursor = wideHashes(sess.subs)
	sess.catchingUp = append(sess.catchingUp, sub)
	sess.mu.Unlock()
	sess.q.signal()
	return res, nil
}

// queueAck queues a subscription's reply frame and lets the subscription
// receive ephemeral messages from then on. It reports false when the
// session's queue refused the frame: the session is closed, or is closed
// now as a slow consumer.
func queueAck(sub *subscription, frame []byte) bool {
	sub.ch.mu.Lock()
	ok := sub.sess.q.push(Item{Kind: KindFrame, Raw: frame})
	sub.muted = false
	sub.ch.mu.Unlock()
	if !ok {
		sub.sess.fail(ReasonSlowConsumer)
	}
	return ok
}

// Unsubscribe removes a channel from a session. It reports whether the
// session was subscribed.
func (s *Server) Unsubscribe(sess *Session, channel string) bool {
	sess.mu.Lock()
	var sub *subscription
	for i, x := range sess.subs {
		if x.name == channel {
			sub = x
			sess.subs = append(sess.subs[:i:i], sess.subs[i+1:]...)
			sess.wideCursor = wideHashes(sess.subs)
			break
		}
	}
	for i, x := range sess.catchingUp {
		if x == sub {
			sess.catchingUp = append(sess.catchingUp[:i:i], sess.catchingUp[i+1:]...)
			break
		}
	}
	sess.mu.Unlock()
	if sub == nil {
		return false
	}
	s.drop(sess, sub)
	return true
}

// drop unregisters a subscription the session no longer holds.
func (s *Server) drop(sess *Session, sub *subscription) {
	sub.ch.remove(sub)
	s.hub.release(sub.ch)
	s.presence.leave(sess, sub)
}

// catchUp appends the next page of sub's history to dst. done reports
// that the subscription went live: everything up to the hand-over was
// appended, and later messages arrive through the queue.
func (sub *subscription) catchUp(ctx context.Context, dst []Item, pageSize int) (_ []Item, done bool, _ error) {
	srv := sub.sess.srv
	var page store.Page
	if sub.atHead {
		sub.atHead = false
		page = store.Page{Epoch: sub.epoch, Head: sub.since, First: sub.since + 1}
	} else {
		var err error
		if page, err = sub.readPage(ctx, pageSize); errors.Is(err, errFetching) {
			return dst, false, err
		} else if err != nil {
			return dst, false, fmt.Errorf("read %q after %d: %w", sub.name, sub.since, err)
		}
	}
	if page.Epoch != "" && page.Epoch != sub.epoch {
		// The log was reset under us: what we hold means nothing now.
		sub.epoch, sub.since, sub.resetReason = page.Epoch, 0, resetEpochChanged
		return dst, false, nil
	}
	reason := sub.resetReason
	sub.resetReason = ""
	if page.Trimmed {
		if reason == "" && !(sub.fromOldest && sub.since == 0) {
			reason = resetTrimmed
		}
		sub.since = page.First - 1
	}
	if reason != "" {
		dst = append(dst, resetItem(sub.name, page.Epoch, reason, sub.since, page.Head, srv.now()))
	}
	for _, e := range page.Entries {
		m, err := newMessage(sub.name, e.Offset, page.Epoch, e.Payload)
		if err != nil {
			return dst, false, err
		}
		kind := KindMessage
		if m.excludeSession == sub.sess.ID {
			kind = KindSkip // as live delivery does
		}
		dst = append(dst, Item{Kind: kind, Msg: m})
		sub.since = e.Offset
	}
	if len(page.Entries) >= pageSize {
		return dst, false, nil
	}

	// Reached the head as of the read: merge what arrived live meanwhile.
	ch := sub.ch
	ch.mu.Lock()
	defer ch.mu.Unlock()
	if sub.overflow {
		sub.overflow, sub.pending = false, nil
		return dst, false, nil
	}
	for _, m := range sub.pending {
		if m.Offset <= sub.since {
			continue
		}
		if m.Offset != sub.since+1 {
			// Committed after our read but fanned out before we parked:
			// impossible with an ordered feed; read the store again.
			sub.pending = nil
			return dst, false, nil
		}
		sub.since = m.Offset
		kind := KindMessage
		if m.excludeSession == sub.sess.ID {
			kind = KindSkip
		}
		dst = append(dst, Item{Kind: kind, Msg: m})
	}
	sub.pending = nil
	sub.last = sub.since
	sub.live = true
	return dst, true, nil
}

// headReaching is called with a head read behind the client's position
// (of the same epoch). On an engine whose reads are remote it reads the
// head again, a few times over about a second and a half, until it
// reaches since: there a read can lag what was acknowledged (a stream
// leader just elected has not applied every committed record yet), and a
// client that saw a record through another node is not ahead of the log.
// What it returns is the head to go by: one still behind means the
// client is ahead (it is reset). An embedded engine's head is exact: it
// is returned as it is.
func (s *Server) headReaching(ctx context.Context, channel string, since uint64, head store.Position) (store.Position, error) {
	if s.reads == nil {
		return head, nil
	}
	for wait := 50 * time.Millisecond; head.Head < since && wait <= 800*time.Millisecond; wait *= 2 {
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return head, ctx.Err()
		case <-t.C:
		}
		h, err := s.engine.Head(ctx, channel)
		if err != nil {
			return head, err
		}
		head = h
	}
	return head, nil
}

// Why a herald.reset is sent.
const (
	resetTrimmed      = protocol.ResetTrimmed         // the history no longer reaches back that far
	resetEpochChanged = protocol.ResetEpochChanged    // the channel's log was reset
	resetAhead        = protocol.ResetUnknownPosition // the client is ahead of the log
)

// resetItem builds a herald.reset: the client's position on channel is no
// longer covered by the history; what is kept follows, starting after
// offset to.
func resetItem(channel, epoch, reason string, to, head uint64, now time.Time) Item {
	b := make([]byte, 0, 160)
	b = append(b, `"event":"`+protocol.EventReset+`","data":{"reason":"`...)
	b = append(b, reason...)
	b = append(b, `","epoch":"`...)
	b = append(b, epoch...)
	b = append(b, `","resume_after":`...)
	b = strconv.AppendUint(b, to, 10)
	b = append(b, `,"head":`...)
	b = strconv.AppendUint(b, head, 10)
	b = append(b, `},"time":"`...)
	b = now.UTC().AppendFormat(b, timeFormat)
	b = append(b, `"}`...)
	m := &Message{
		Channel: channel,
		Epoch:   epoch,
		Event:   protocol.EventReset,
		Raw:     buildEnvelope(channel, 0, epoch, b),
		resetTo: to,
	}
	return Item{Kind: KindReset, Msg: m}
}

// ParsePositions reads per-channel positions given as parallel lists, the
// i-th since (and epoch, when given) belonging to the i-th channel: the
// way a client that kept per-channel offsets resumes on SSE and long
// polling. An empty since means "from the head". It returns nil when no
// since is given.
func ParsePositions(since, epochs []string, channels int) ([]*Position, error) {
	if len(since) == 0 {
		if len(epochs) > 0 {
			return nil, invalidf("epoch is given without since")
		}
		return nil, nil
	}
	if len(since) != channels {
		return nil, invalidf("%d since values for %d channels: give one per channel, in the same order (empty for \"from now\")", len(since), channels)
	}
	if len(epochs) > 0 && len(epochs) != channels {
		return nil, invalidf("%d epoch values for %d channels: give one per channel, in the same order, or none", len(epochs), channels)
	}
	out := make([]*Position, channels)
	for i, v := range since {
		if v == "" {
			continue
		}
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			return nil, invalidf("since %q (position %d) is not a non-negative integer", v, i+1)
		}
		p := &Position{Since: n}
		if len(epochs) > 0 {
			p.Epoch = epochs[i]
		}
		out[i] = p
	}
	return out, nil
}
