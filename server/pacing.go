package server

import "time"

// Pacing says when a session's writer writes. Every transport's writer
// asks it, so a channel's batch rule holds the same on every transport:
// the SSE and WebSocket writers between their writes, the long poll
// before it answers.
//
// Under the batch rules of the session's channels (batch: {size,
// timeout}), messages are held up to the smallest timeout and written as
// soon as the smallest size is ready. When a channel of the session has no
// batch rule, the transport's own pause applies (the fallback a writer
// passes to Session.Pacing), with no size.
type Pacing struct {
	// Hold is how long after its reference time (its last write, or the
	// first message it holds) the writer may wait before it writes.
	Hold time.Duration
	// Size ends the wait at once when that many items are ready (0: no
	// size).
	Size int
}

// Pacing returns the session's pacing, with fallback as the hold when the
// batch rules do not decide.
func (s *Session) Pacing(fallback time.Duration) Pacing {
	s.mu.Lock()
	defer s.mu.Unlock()
	var p Pacing
	batched := false
	for _, sub := range s.subs {
		var b *BatchConfig
		if sub.rule != nil {
			b = sub.rule.cfg.Batch
		}
		if b == nil {
			return Pacing{Hold: fallback}
		}
		if !batched || b.Timeout < p.Hold {
			p.Hold = b.Timeout
		}
		if !batched || b.Size < p.Size {
			p.Size = b.Size
		}
		batched = true
	}
	if !batched {
		return Pacing{Hold: fallback}
	}
	return p
}

// Due reports whether a writer holding ready items, whose reference time
// is from, writes at now. When it does not, wait is how long until it
// does, unless more items become ready meanwhile (ask again then). A zero
// from is long ago: the writer writes at once.
func (p Pacing) Due(from time.Time, ready int, now time.Time) (due bool, wait time.Duration) {
	if p.Size > 0 && ready >= p.Size {
		return true, 0
	}
	if from.IsZero() {
		return true, 0
	}
	if wait = from.Add(p.Hold).Sub(now); wait <= 0 {
		return true, 0
	}
	return false, wait
}
