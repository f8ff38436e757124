package store

import (
	"context"
	"fmt"
	"sync"
)

// Append adds rec to the channel's log and returns its offset once the
// record is committed (fsynced with SyncEachBatch). The first append to a
// channel creates its epoch. A zero rec.Time is set to Options.Now().
//
// If ctx is done before the record is queued, Append returns ctx.Err() and
// nothing is stored. Once queued, the record may still be committed even if
// Append returns ctx.Err() because ctx ended while it waited: a caller that
// retries after such an error should set Record.IdempotencyKey, so the
// retry returns the first append's result instead of storing it twice.
//
// A record with an IdempotencyKey seen on this channel within
// Options.IdempotencyTTL is not stored: Append returns the first append's
// offset and ID with Duplicate set.
func (s *Store) Append(ctx context.Context, channel string, rec Record) (Appended, error) {
	if err := checkChannel(channel); err != nil {
		return Appended{}, err
	}
	if size := len(rec.Payload) + len(rec.ID) + len(rec.IdempotencyKey); size > s.opts.maxRecordBytes() {
		return Appended{}, fmt.Errorf("%d bytes, max %d: %w", size, s.opts.maxRecordBytes(), ErrTooLarge)
	}
	if err := ctx.Err(); err != nil {
		return Appended{}, err
	}
	if !s.enter() {
		return Appended{}, ErrClosed
	}
	defer s.exit()
	c, err := s.channel(channel, true)
	if err != nil {
		return Appended{}, err
	}
	if rec.Time.IsZero() {
		rec.Time = s.opts.Now()
	}
	r := s.newRequest(c)
	r.kind = requestAppend
	r.rec = rec
	r.store = s.opts.Retention(channel).MaxCount > 0
	if rec.IdempotencyKey != "" {
		r.idem = idemKey(channel, rec.IdempotencyKey)
	}
	r.setCost()
	return s.submit(ctx, r)
}

// requestKind says what a queued request writes.
type requestKind uint8

const (
	requestAppend requestKind = iota // Append: one record
	requestCreate                    // Head of a new channel: its epoch, no record
	requestState                     // PutState or DeleteState: op
)

// request is one queued write: an Append, a Head creating a channel, or a
// change of state.
type request struct {
	kind  requestKind
	ch    *channel // nil for state
	rec   Record
	store bool   // keep the payload: the channel's retention keeps some
	idem  []byte // Badger key of rec.IdempotencyKey; nil without one
	op    kvOp   // the state change
	cost  int    // bytes Badger counts for this request's entries

	// Set by the committer before it signals done.
	res  Appended
	done chan error // 1-buffered: the committer never blocks on it
}

// requestPool recycles requests and their done channels. A request goes
// back only after its answer was received, so the committer is done with it.
var requestPool = sync.Pool{New: func() any { return &request{done: make(chan error, 1)} }}

func (s *Store) newRequest(c *channel) *request {
	r := requestPool.Get().(*request)
	r.ch = c
	return r
}

func putRequest(r *request) {
	done := r.done
	*r = request{done: done}
	requestPool.Put(r)
}

// setCost computes what Badger will count for the request's entries (see
// Txn.checkSize): its log entry, its idempotency entry, and the head entry
// of its channel, counted for every request because any request may be its
// channel's first in a batch.
func (r *request) setCost() {
	if r.kind == requestState {
		r.cost = len(r.op.key) + len(r.op.value) + batchEntryOverhead
		return
	}
	n := len(r.ch.name)
	cost := 1 + n + headValueLen + batchEntryOverhead
	if r.store {
		cost += 2 + n + 8 + entryHeaderLen + len(r.rec.Payload) + batchEntryOverhead
	}
	if r.idem != nil {
		cost += len(r.idem) + idemValueHeaderLen + len(r.rec.ID) + batchEntryOverhead
	}
	r.cost = cost
}

// submit queues r and waits for its answer or for ctx.
func (s *Store) submit(ctx context.Context, r *request) (Appended, error) {
	if err := ctx.Err(); err != nil {
		putRequest(r)
		return Appended{}, err
	}
	if !s.queue.push(r) {
		putRequest(r)
		return Appended{}, ErrClosed
	}
	select {
	case err := <-r.done:
		res := r.res
		putRequest(r)
		return res, err
	case <-ctx.Done():
		// The committer still owns r and may commit it; r is not recycled.
		return Appended{}, ctx.Err()
	}
}

// queue holds the appends waiting for the committer: a mutex, a slice and a
// 1-buffered signal, so that the committer takes the whole backlog at once.
type queue struct {
	mu     sync.Mutex // guards following
	reqs   []*request
	closed bool

	ready chan struct{} // signalled when reqs becomes non-empty or closed
}

// push queues r, or reports false once the queue is closed.
func (q *queue) push(r *request) bool {
	q.mu.Lock()
	if q.closed {
		q.mu.Unlock()
		return false
	}
	q.reqs = append(q.reqs, r)
	wake := len(q.reqs) == 1
	q.mu.Unlock()
	if wake {
		q.signal()
	}
	return true
}

func (q *queue) signal() {
	select {
	case q.ready <- struct{}{}:
	default:
	}
}

// close makes push fail; next still drains what was queued.
func (q *queue) close() {
	q.mu.Lock()
	q.closed = true
	q.mu.Unlock()
	q.signal()
}

// next waits for queued requests and moves them into batch, as many as fit
// in maxRecords and maxBytes of cost (at least one). It returns false when
// the queue is closed and empty. batch must be empty; its backing array may
// become the queue's.
func (q *queue) next(batch []*request, maxRecords, maxBytes int) ([]*request, bool) {
	q.mu.Lock()
	for len(q.reqs) == 0 {
		if q.closed {
			q.mu.Unlock()
			return batch, false
		}
		q.mu.Unlock()
		<-q.ready
		q.mu.Lock()
	}
	n, size := 0, 0
	for n < len(q.reqs) && n < maxRecords {
		c := q.reqs[n].cost
		if n > 0 && size+c > maxBytes {
			break
		}
		size += c
		n++
	}
	if n == len(q.reqs) {
		// The common case: take the whole backlog by swapping slices.
		batch, q.reqs = q.reqs, batch
	} else {
		batch = append(batch, q.reqs[:n]...)
		rest := copy(q.reqs, q.reqs[n:])
		clear(q.reqs[rest:])
		q.reqs = q.reqs[:rest]
	}
	q.mu.Unlock()
	return batch, true
}
