package server

import (
	"context"
	"slices"
	"time"
)

// Detachable sessions. A session opened with Transport.Attach outlives
// the connection that made it (a long poll): between connections it is
// parked — it stays subscribed and queues what arrives (bounded, like any
// session), so the next connection answers at once, and ephemeral
// messages and exclusions work as on a stream. A parked session is kept
// for the keep-alive its last connection asked for (Park), then closed.
// A connection that attaches to a session another one is serving makes
// that one answer at once (Preempted) and takes over.
//
// The client's cursor is the truth. An attach reuses its session (the one
// it names, or the one its cursor names) only when it brings back the
// cursor the session last handed out; any other cursor — a response lost
// on the way, a client restarted from saved state — rebuilds the session
// from the cursor it brings (under the same id), and the store fills in.
// So a lost response never loses a message.

// AttachRequest is one connection to a detachable session (a long poll).
type AttachRequest struct {
	// Session is the id from the previous response ("" on the first
	// connection, or to use the one the cursor names).
	Session  string
	Channels []string
	// Cursor is the cursor of the previous response ("" on the first
	// connection: start at the channels' heads).
	Cursor string
	// Positions are per-channel positions for channels the cursor does
	// not cover, as in OpenRequest.
	Positions []*Position
	// RemoteAddr is the client's address, for the per-IP connection rate
	// of new sessions.
	RemoteAddr string
}

// parkState is a detachable session's attachment to the connection
// serving it. Guarded by Session.mu.
type parkState struct {
	attached   bool
	preempt    chan struct{} // closed to ask the serving connection to answer now
	lastCursor string        // the cursor of the last response
	expiry     *time.Timer   // closes a parked session
}

// Attach returns the detachable session that serves this connection,
// attached to the caller until Park. Attaching to a session that is
// already serving a connection makes that one answer at once (Preempted)
// and takes over.
//
// The session is the one the request names — its session, or else the one
// its cursor names, so a client that keeps only the cursor is one session
// however many connections it makes — when that is the caller's own, was
// opened by this transport, and is where the client's cursor says; else
// a session is opened (under the same id when it is the caller's).
func (t *Transport) Attach(ctx context.Context, id Identity, req AttachRequest) (*Session, error) {
	s := t.srv
	want := req.Session
	if want == "" && req.Cursor != "" {
		if cur, err := ParseCursor(req.Cursor); err == nil { // a bad cursor is refused by open
			want = cur.Session()
		}
	}
	rebuild := false
	if want != "" && s.ids.owns(id, want) {
		if sess := s.sessions.get(want); sess != nil && sess.transport == t && sess.detachable {
			if sess.attach(req) {
				return sess, nil
			}
			// Another cursor or channel set: rebuild under the same id.
			sess.Close(ReasonClientGone)
			rebuild = true
		}
	}
	sess, _, err := s.open(ctx, t, id, OpenRequest{Channels: req.Channels, Cursor: req.Cursor,
		Positions: req.Positions, Session: want, RemoteAddr: req.RemoteAddr},
		sessionOptions{fixed: true, detachable: true, rebuild: rebuild})
	if err != nil {
		return nil, err
	}
	sess.parkMu.Lock()
	sess.mu.Lock()
	sess.park = parkState{attached: true, preempt: make(chan struct{})}
	sess.mu.Unlock()
	return sess, nil
}

// attach takes sess for a connection if it can serve req as it stands:
// open, same channels, and the client is where the last response left it.
func (s *Session) attach(req AttachRequest) bool {
	s.mu.Lock()
	preempted := s.park.attached
	if preempted {
		close(s.park.preempt) // the connection being served answers now
		s.park.attached = false
	}
	s.mu.Unlock()
	if preempted {
		s.q.signal() // wakes a connection waiting through Notify, not on Preempted
	}
	s.parkMu.Lock() // waits for that connection's Park
	s.mu.Lock()
	ok := !s.closed && s.park.lastCursor == req.Cursor && sameChannels(s.subs, req.Channels)
	if ok {
		if s.park.expiry != nil {
			ok = s.park.expiry.Stop() // false: it fired, the session is closing
		}
		s.park.attached, s.park.preempt = true, make(chan struct{})
	}
	s.mu.Unlock()
	if !ok {
		s.parkMu.Unlock()
	}
	return ok
}

func sameChannels(subs []*subscription, channels []string) bool {
	for _, sub := range subs {
		if !slices.Contains(channels, sub.name) {
			return false
		}
	}
	for _, ch := range channels {
		if !slices.ContainsFunc(subs, func(sub *subscription) bool { return sub.name == ch }) {
			return false
		}
	}
	return true
}

// parked reports whether sess is a detachable session between
// connections.
func (s *Session) parked() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.detachable && !s.park.attached
}

// Preempted is closed when another connection takes the session over:
// answer at once with what was drained. Nil (never closed) on a session
// that is not detachable.
func (s *Session) Preempted() <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.park.preempt
}

// Park ends a connection to a detachable session: cursor is what its
// response handed out, and the session is kept for keep (for a long
// poll, its timeout plus a grace period) for the next connection. A
// closed session is released at once.
func (s *Session) Park(cursor string, keep time.Duration) {
	s.mu.Lock()
	s.park.attached = false
	s.park.lastCursor = cursor
	closed := s.closed
	if !closed {
		s.park.expiry = time.AfterFunc(keep, func() { s.Close(ReasonClientGone) })
	}
	s.mu.Unlock()
	s.parkMu.Unlock()
	if closed {
		s.Close(s.Reason())
	}
}
