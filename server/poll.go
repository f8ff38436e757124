package server

import (
	"context"
	"slices"
	"time"
)

// Long polling. A poll session outlives the request that made it: between
// polls it stays subscribed and queues what arrives (bounded, like any
// session), so the next poll answers at once and ephemeral messages and
// exclusions work as on a stream. It is kept for the poll's timeout plus a
// grace period after each poll, then closed.
//
// The client's cursor is the truth. A poll reuses its session (the one it
// names, or the one its cursor names) only when it brings back the cursor
// the session last handed out; any other cursor — a
// response lost on the way, a client restarted from saved state — rebuilds
// the session from the cursor it brings (under the same id), and the store
// fills in. So a lost response never loses a message.

// PollRequest is one long poll.
type PollRequest struct {
	// Session is the id from the previous response ("" on the first poll,
	// or to use the one the cursor names).
	Session  string
	Channels []string
	// Cursor is the cursor of the previous response ("" on the first
	// poll: start at the channels' heads).
	Cursor string
	// Positions are per-channel positions for channels the cursor does
	// not cover, as in OpenRequest.
	Positions []*Position
	// RemoteAddr is the client's address, for the per-IP connection rate
	// of new poll sessions.
	RemoteAddr string
}

// pollState is a poll session's attachment to the request serving it.
// Guarded by Session.mu.
type pollState struct {
	attached   bool
	preempt    chan struct{} // closed to ask the serving poll to answer now
	lastCursor string        // the cursor of the last response
	expiry     *time.Timer   // closes a detached session
}

// Poll returns the session that serves this poll, attached to the caller
// until Release. A poll on a session that is already serving one makes
// that poll answer at once (Preempted) and takes over.
//
// The session is the one the poll names — its session, or else the one
// its cursor names, so a client that keeps only the cursor is one session
// however many polls it makes — when that is the caller's own.
func (s *Server) Poll(ctx context.Context, id Identity, req PollRequest) (*Session, error) {
	want := req.Session
	if want == "" && req.Cursor != "" {
		if cur, err := ParseCursor(req.Cursor); err == nil { // a bad cursor is refused by Open
			want = cur.Session()
		}
	}
	rebuild := false
	if want != "" && s.ids.owns(id, want) {
		if sess := s.lookupPoll(want); sess != nil {
			if s.attach(sess, req) {
				return sess, nil
			}
			// Another cursor or channel set: rebuild under the same id.
			sess.Close(ReasonClientGone)
			rebuild = true
		}
	}
	sess, _, err := s.Open(ctx, id, OpenRequest{Transport: "poll", Channels: req.Channels,
		Cursor: req.Cursor, Positions: req.Positions, Session: want, rebuild: rebuild, RemoteAddr: req.RemoteAddr})
	if err != nil {
		return nil, err
	}
	sess.pollMu.Lock()
	sess.mu.Lock()
	sess.poll = pollState{attached: true, preempt: make(chan struct{})}
	sess.mu.Unlock()
	return sess, nil
}

// lookupPoll returns the open poll session with that id.
func (s *Server) lookupPoll(sessID string) *Session {
	s.mu.Lock()
	sess := s.sessions[sessID]
	s.mu.Unlock()
	if sess == nil || sess.Transport != "poll" {
		return nil
	}
	return sess
}

// attach takes sess for a poll if it can serve req as it stands: open,
// same channels, and the client is where the last response left it.
func (s *Server) attach(sess *Session, req PollRequest) bool {
	sess.mu.Lock()
	if sess.poll.attached {
		close(sess.poll.preempt) // the poll being served answers now
		sess.poll.attached = false
	}
	sess.mu.Unlock()
	sess.pollMu.Lock() // waits for that poll's Release
	sess.mu.Lock()
	ok := !sess.closed && sess.poll.lastCursor == req.Cursor && sameChannels(sess.subs, req.Channels)
	if ok {
		if sess.poll.expiry != nil {
			ok = sess.poll.expiry.Stop() // false: it fired, the session is closing
		}
		sess.poll.attached, sess.poll.preempt = true, make(chan struct{})
	}
	sess.mu.Unlock()
	if !ok {
		sess.pollMu.Unlock()
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

// detached reports whether sess is a poll session between polls.
func (s *Session) detached() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.Transport == "poll" && !s.poll.attached
}

// Preempted is closed when another poll takes the session over: answer at
// once with what was drained.
func (s *Session) Preempted() <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.poll.preempt
}

// Release ends a poll: cursor is what its response handed out, and the
// session is kept for keep (the poll's timeout plus a grace period) for
// the next poll. A closed session is released at once.
func (s *Server) Release(sess *Session, cursor string, keep time.Duration) {
	sess.mu.Lock()
	sess.poll.attached = false
	sess.poll.lastCursor = cursor
	closed := sess.closed
	if !closed {
		sess.poll.expiry = time.AfterFunc(keep, func() { sess.Close(ReasonClientGone) })
	}
	sess.mu.Unlock()
	sess.pollMu.Unlock()
	if closed {
		sess.Close(sess.Reason())
	}
}
