package server

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"time"

	"github.com/heraldrt/herald/protocol"
	"github.com/heraldrt/herald/store"
)

// Session is one client identity across one connection (SSE, WebSocket)
// or a series of polls. It owns its subscriptions and its outbound queue;
// publishing and authorising belong to the Server.
//
// One writer at a time — the transport's goroutine, or a writer it
// starts on demand (Notify) — calls Drain and writes what Drain returns.
// When it writes is the session's Pacing. Subscribe, Unsubscribe and Close may be
// called from any goroutine.
type Session struct {
	// ID is the session id clients see ("s_…").
	ID string

	transport  *Transport // the transport that opened it
	srv        *Server
	q          *queue
	done       chan struct{}
	ctx        context.Context // cancelled when the session closes
	cancel     context.CancelFunc
	wantCursor bool
	opened     time.Time // for close_oldest
	// fixed sessions (SSE, poll) have the channels they were opened with
	// and end when the last one is revoked; others (WebSocket) subscribe
	// and unsubscribe as they go.
	fixed bool
	// detachable sessions outlive their connections (park.go).
	detachable bool
	release    sync.Once

	parkMu sync.Mutex // held by the connection attached to a detachable session (park.go)

	mu       sync.Mutex  // guards the fields below
	identity Identity    // who the session acts as; Refresh replaces it
	expiry   *time.Timer // closes the session when its token expires
	subs     []*subscription
	// wideCursor: two of subs share the high half of their channel hash,
	// so their cursor is written in version 1 (cursor.go). Set whenever
	// subs changes.
	wideCursor bool
	catchingUp []*subscription // in subscription order
	closed     bool
	reason     Reason
	park       parkState
}

// subscription is one session's interest in one channel.
type subscription struct {
	sess *Session
	ch   *channel
	name string

	// Live state, guarded by ch.mu.
	index    int        // position in ch.subs, -1 once removed
	live     bool       // false while catching up from the store
	last     uint64     // last offset delivered (or skipped) live
	pending  []*Message // live messages that arrived while catching up
	overflow bool       // pending overflowed: read the store again
	muted    bool       // its subscribe reply is not queued yet: no ephemeral message

	// Catch-up state, touched only by the goroutine that drains the session.
	since uint64 // last offset handed to the transport
	epoch string // the epoch since refers to
	// resetReason, when set, sends a herald.reset before the next page.
	resetReason string
	// fromOldest: the client asked for all that is kept (since 0, no
	// epoch), so finding the start trimmed is no reset.
	fromOldest bool
	// atHead: the subscription starts at the head, read after it was
	// registered, so its catch-up has nothing to read (what came later is
	// in pending): no read of the engine, which matters when the engine
	// is remote and a thousand clients connect at once.
	atHead bool
	// fetch is the catch-up page being read off the writer (a remote
	// engine's), or nil.
	fetch *pageFetch

	// pos is the client's position on this channel, for its cursor.
	// Guarded by sess.mu.
	pos cursorEntry
	// rule is the channel's rule, matched once when the subscription was
	// made (nil: no rule matches).
	rule *rule
}

// Transport returns the name of the transport that opened the session.
func (s *Session) Transport() string { return s.transport.name }

// Queued returns how many items wait in the session's queue.
func (s *Session) Queued() int {
	s.q.mu.Lock()
	defer s.q.mu.Unlock()
	return len(s.q.items)
}

// Identity returns who the session acts as.
func (s *Session) Identity() Identity {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.identity
}

// Send queues a transport frame (a WebSocket reply, say) behind what is
// already queued. A full queue closes the session as a slow consumer; it
// returns false then, or when the session is closed.
func (s *Session) Send(frame []byte) bool {
	if s.q.push(Item{Kind: KindFrame, Raw: frame}) {
		return true
	}
	s.fail(ReasonSlowConsumer)
	return false
}

// Notify makes the session call f, instead of signalling Ready, whenever
// Drain may have something to return, when the session closes, and when
// another connection takes a detachable session over (Preempted): for a
// transport that runs no goroutine while a connection idles and starts
// its writer on demand. f runs under the core's locks: it must not block
// or call back into the session; it should start (or flag) the writer and
// return. Notify calls f once at once, for what may already be queued.
// Notify(nil) goes back to signalling Ready, and signals it once.
func (s *Session) Notify(f func()) {
	if f == nil {
		s.q.notify.Store(nil)
		s.q.signal()
		return
	}
	s.q.notify.Store(&f)
	f()
}

// Pending reports whether the session has something for its connection:
// queued items, a catch-up under way, its close, or — a detachable
// session — another connection taking it over. A transport parked on
// Notify asks it, as its notification may come when there is nothing.
// Like Notify's function it may be called under the core's locks.
func (s *Session) Pending() bool {
	s.mu.Lock()
	busy := s.closed || len(s.catchingUp) > 0 || (s.detachable && !s.park.attached)
	s.mu.Unlock()
	return busy || s.Queued() > 0
}

// Ready returns a channel that receives a value whenever Drain may have
// something to return. Select on it next to Done and your own timers.
func (s *Session) Ready() <-chan struct{} { return s.q.ready }

// Done is closed when the session is closed; Reason then says why.
func (s *Session) Done() <-chan struct{} { return s.done }

// Reason returns why the session closed (meaningful once Done is closed).
func (s *Session) Reason() Reason {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.reason
}

// Context is cancelled when the session closes.
func (s *Session) Context() context.Context { return s.ctx }

// pushRunLocked queues live messages of one channel for the session, in
// one go; a message the session excluded itself from becomes a skip. The
// channel's lock is held.
func (s *Session) pushRunLocked(run []*Message) {
	if !s.q.pushRun(run, s.ID) {
		s.fail(ReasonSlowConsumer)
	}
}

// fail marks the session closed without touching any channel, so it is
// safe under a channel lock. The transport sees Done, tells its client and
// calls Close, which unregisters the subscriptions.
func (s *Session) fail(reason Reason) {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return
	}
	s.closed = true
	s.reason = reason
	s.mu.Unlock()
	s.q.close()
	s.cancel()
	close(s.done)
	s.q.signal() // an on-demand writer learns of the close this way
	s.srv.logger.Log(context.Background(), closeLogLevel(reason), "session closed", "session", s.ID,
		"transport", s.transport.name, "user", s.Identity().User, "reason", reason.String())
	if obs := &s.srv.obs; obs.want(SessionClosed) {
		obs.emit(Event{Kind: SessionClosed, At: s.srv.now(), Session: s.ID, Transport: s.transport.name,
			User: s.Identity().User, Reason: reason})
	}
}

// closeLogLevel is the level of the log line of a session closed for
// reason: a warning for what an operator should look into.
func closeLogLevel(reason Reason) slog.Level {
	if reason == ReasonSlowConsumer || reason == ReasonInternal {
		return slog.LevelWarn
	}
	return slog.LevelDebug
}

// failRead ends the session after a catch-up read of channel failed: as
// unavailable when the engine said it could not be reached for now (the
// client comes back after a backoff), else as internal.
func (s *Session) failRead(channel string, err error) {
	if errors.Is(err, store.ErrUnavailable) {
		s.srv.logger.Warn("catch-up read failed: the store is unavailable for now", "session", s.ID, "channel", channel, "err", err)
		s.fail(ReasonUnavailable)
		return
	}
	s.srv.logger.Error("catch-up read failed", "session", s.ID, "channel", channel, "err", err)
	s.fail(ReasonInternal)
}

// Close ends the session (the first reason given wins) and unregisters its
// subscriptions. It is idempotent; transports defer it.
func (s *Session) Close(reason Reason) {
	s.fail(reason)
	s.release.Do(func() {
		s.mu.Lock()
		if s.expiry != nil {
			s.expiry.Stop()
		}
		if s.park.expiry != nil {
			s.park.expiry.Stop()
		}
		subs := s.subs
		s.subs, s.catchingUp = nil, nil
		s.mu.Unlock()
		s.srv.presence.disconnect(s) // first: the user's offline is due no later than the leaves
		for _, sub := range subs {
			s.srv.drop(s, sub)
		}
		s.srv.sessions.forget(s)
	})
}

// Drain appends to dst everything the session has to send now: queued
// live items, then, when a subscription is catching up, its next page from
// the store. It returns quickly; when more catch-up remains it re-arms
// Ready, so the transport writes what it got and comes back. Only the
// session's writer goroutine may call it.
func (s *Session) Drain(dst []Item) []Item { return s.DrainLimit(dst, 0) }

// DrainLimit is Drain taking at most max items (max <= 0: no limit); what
// is left stays for the next call, and Ready stays armed.
func (s *Session) DrainLimit(dst []Item, max int) []Item {
	start := len(dst)
	// Find the subscription to catch up *before* draining the queue, so
	// that its subscribe reply, if any, is drained first. No two locks
	// are held at once here (the order of hub.go is not involved); what
	// counts is happens-before. Subscribe pushes the reply (queue.mu) and
	// only then appends the subscription to catchingUp (Session.mu). So
	// if the read below sees the subscription, the push happened before
	// it, and the drain after it returns the reply — unless an earlier
	// drain already did. Either way the reply is out before catchUp
	// appends the subscription's first page. (Read after the drain,
	// catchingUp could show a subscription whose reply was queued just
	// after the drain, and its history would go out first.) A drain cut
	// short by max leaves items queued and takes no page (page is 0).
	s.mu.Lock()
	var sub *subscription
	if len(s.catchingUp) > 0 && !s.closed {
		sub = s.catchingUp[0]
	}
	s.mu.Unlock()
	dst = s.q.drain(dst, max)
	page := s.srv.cfg.CatchUpPage
	if max > 0 {
		page = min(page, max-(len(dst)-start))
	}
	if sub != nil && page > 0 {
		var done bool
		var err error
		dst, done, err = sub.catchUp(s.ctx, dst, page)
		if errors.Is(err, errFetching) {
			sub = nil // the read signals the writer when its page is there
		} else if err != nil {
			if s.ctx.Err() == nil {
				s.failRead(sub.name, err)
			}
			sub = nil
		} else if done {
			s.mu.Lock()
			if len(s.catchingUp) > 0 && s.catchingUp[0] == sub {
				s.catchingUp = s.catchingUp[1:]
			}
			if len(s.catchingUp) == 0 {
				sub = nil
			}
			s.mu.Unlock()
		}
	}
	if sub != nil {
		s.q.signal() // more catch-up to come: keep the writer coming back
	}
	if s.wantCursor {
		s.annotateCursors(dst[start:])
	}
	if n := len(dst) - start; n > 0 {
		var first time.Time
		if m := dst[start].Msg; m != nil {
			first = m.at
		}
		s.srv.stats.observeDelivery(n, first)
	}
	return dst
}

// annotateCursors moves the session's positions over items and stamps each
// stored message and reset with the stream's cursor after it.
func (s *Session) annotateCursors(items []Item) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for i := range items {
		it := &items[i]
		if it.Msg == nil || it.Kind == KindUnsubscribed || it.Kind == KindPresence || (it.Kind == KindMessage && it.Msg.Offset == 0) {
			continue // ephemeral messages, notices and frames do not move the cursor
		}
		sub := s.findLocked(it.Msg.Channel)
		if sub == nil {
			continue
		}
		sub.pos.epoch, sub.pos.offset = it.Msg.Epoch, it.Msg.Offset
		if it.Kind == KindReset {
			sub.pos.offset = it.Msg.resetTo
		}
		if len(s.subs) == 1 && it.Kind != KindReset {
			it.Cursor = it.Msg.cursorAfter()
		} else {
			it.Cursor = s.cursorLocked()
		}
		it.CursorSession = s.ID
	}
}

// Positions returns where the session stands on each of its channels —
// the epoch and last offset its cursor holds — in subscription order:
// what a client that keeps per-channel positions resumes from on any
// transport (a poll asked with positions=1 gets them).
func (s *Session) Positions() []protocol.Position {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]protocol.Position, len(s.subs))
	for i, sub := range s.subs {
		out[i] = protocol.Position{Channel: sub.name, Epoch: sub.pos.epoch, Offset: sub.pos.offset}
	}
	return out
}

// Cursor returns the session's current resume cursor: its positions and,
// after a ".", its id, so that resuming from it continues this session.
func (s *Session) Cursor() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cursorLocked() + string(cursorSessionSep) + s.ID
}

func (s *Session) cursorLocked() string {
	entries := make([]cursorEntry, len(s.subs))
	for i, sub := range s.subs {
		entries[i] = sub.pos
	}
	return encodeCursor(entries, s.wideCursor)
}

func (s *Session) findLocked(channel string) *subscription {
	for _, sub := range s.subs {
		if sub.name == channel {
			return sub
		}
	}
	return nil
}

// Channels returns the channels the session is subscribed to.
func (s *Session) Channels() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	names := make([]string, len(s.subs))
	for i, sub := range s.subs {
		names[i] = sub.name
	}
	return names
}
