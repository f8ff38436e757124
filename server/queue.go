package server

import (
	"sync"
	"sync/atomic"
)

// Kind says what an Item carries.
type Kind uint8

const (
	// KindMessage carries a channel message (stored or ephemeral) in Msg.
	KindMessage Kind = iota + 1
	// KindReset carries a herald.reset event in Msg: the history of
	// Msg.Channel no longer reaches back to the client's position.
	KindReset
	// KindFrame carries a transport-specific frame in Raw (a WebSocket
	// reply, say). The core only orders it.
	KindFrame
	// KindSkip marks a stored message this session excluded itself from
	// (exclude_session): nothing is shown, but the stream's position moves
	// past it, so a resume does not bring it back. Msg is the message.
	KindSkip
	// KindUnsubscribed carries a herald.unsubscribed notice in Msg: the
	// session no longer receives Msg.Channel.
	KindUnsubscribed
	// KindPresence carries a presence event (herald.join, herald.leave,
	// herald.state, herald.online, herald.offline) in Msg: ephemeral, no
	// offset.
	KindPresence
)

// Item is one thing a transport writes to its client.
type Item struct {
	Kind Kind
	Msg  *Message
	// Raw is the frame of a KindFrame item.
	Raw []byte
	// Cursor and CursorSession make up the stream's resume cursor after
	// this item, set by Session.Drain on sessions made by Transport.Open
	// (SSE, poll) for message, skip and reset items: Cursor holds the positions
	// (shared by every subscriber of a one-channel stream, so it is encoded
	// once per message) and CursorSession the session the cursor names.
	// Write them with AppendCursor.
	Cursor        string
	CursorSession string
}

// AppendCursor appends the item's resume cursor to b (nothing when it has
// none): the positions, then "." and the session, so that a client
// resuming from it continues the same session (see sessionid.go).
func (it *Item) AppendCursor(b []byte) []byte {
	if it.Cursor == "" {
		return b
	}
	b = append(b, it.Cursor...)
	if it.CursorSession != "" {
		b = append(b, cursorSessionSep)
		b = append(b, it.CursorSession...)
	}
	return b
}

func (it *Item) size() int {
	if it.Kind == KindSkip {
		return 0
	}
	if it.Msg != nil {
		return len(it.Msg.Raw)
	}
	return len(it.Raw)
}

// queue is a session's outbound queue: a mutex-guarded slice bounded by
// item count and bytes, and a one-slot signal channel the transport
// selects on. push never blocks: a full queue refuses the item and the
// caller closes the session as a slow consumer (the log is the truth; the
// client resumes from its position). drain hands over the whole backlog in
// one call, so a transport batches writes for free.
type queue struct {
	ready chan struct{} // one slot; a value means "there may be items"
	// notify, when set, is called instead of signalling ready: for a
	// transport that starts its writer on demand (see Session.Notify).
	notify atomic.Pointer[func()]

	mu       sync.Mutex // guards the fields below
	items    []Item
	bytes    int
	maxItems int
	maxBytes int
	closed   bool
}

func newQueue(maxItems, maxBytes int) *queue {
	return &queue{ready: make(chan struct{}, 1), maxItems: maxItems, maxBytes: maxBytes}
}

// push appends it and reports whether it fit.
func (q *queue) push(it Item) bool {
	n := it.size()
	q.mu.Lock()
	if q.closed || len(q.items) >= q.maxItems || q.bytes+n > q.maxBytes {
		q.mu.Unlock()
		return false
	}
	q.items = append(q.items, it)
	q.bytes += n
	q.mu.Unlock()
	q.signal()
	return true
}

// pushRun appends a run of messages under one lock and signals once; a
// message excluding session becomes a KindSkip item (an ephemeral one is
// dropped). It reports whether the whole run fit.
func (q *queue) pushRun(run []*Message, session string) bool {
	q.mu.Lock()
	if q.closed {
		q.mu.Unlock()
		return false
	}
	ok := true
	for _, m := range run {
		it := Item{Kind: KindMessage, Msg: m}
		if m.presence {
			it.Kind = KindPresence
		}
		if m.excludeSession != "" && m.excludeSession == session {
			if m.Offset == 0 {
				continue
			}
			it.Kind = KindSkip
		}
		n := it.size()
		if len(q.items) >= q.maxItems || q.bytes+n > q.maxBytes {
			ok = false
			break
		}
		q.items = append(q.items, it)
		q.bytes += n
	}
	q.mu.Unlock()
	q.signal()
	return ok
}

// signal marks the queue ready without blocking.
func (q *queue) signal() {
	if f := q.notify.Load(); f != nil {
		(*f)()
		return
	}
	select {
	case q.ready <- struct{}{}:
	default:
	}
}

// drain appends up to max queued items (all when max <= 0) to dst and
// removes them from the queue; when some are left, the queue stays ready.
func (q *queue) drain(dst []Item, max int) []Item {
	q.mu.Lock()
	n := len(q.items)
	if max > 0 && n > max {
		n = max
	}
	dst = append(dst, q.items[:n]...)
	for i := range q.items[:n] {
		q.bytes -= q.items[i].size()
	}
	rest := copy(q.items, q.items[n:])
	clear(q.items[rest:])
	q.items = q.items[:rest]
	if rest == 0 && cap(q.items) > 1024 {
		q.items = nil // do not pin a burst's memory forever
	}
	q.mu.Unlock()
	if rest > 0 {
		q.signal()
	}
	return dst
}

// close makes every later push fail.
func (q *queue) close() {
	q.mu.Lock()
	q.closed = true
	q.mu.Unlock()
}
