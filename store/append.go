package store

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
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
	if err := s.checkRecord(channel, &rec); err != nil {
		return Appended{}, err
	}
	if err := ctx.Err(); err != nil {
		return Appended{}, err
	}
	if !s.enter() {
		return Appended{}, ErrClosed
	}
	defer s.exit()
	r, err := s.appendRequest(channel, rec)
	if err != nil {
		return Appended{}, err
	}
	return s.submit(ctx, r)
}

// checkRecord refuses a record the store cannot take.
func (s *Store) checkRecord(channel string, rec *Record) error {
	if err := checkChannel(channel); err != nil {
		return err
	}
	if size := len(rec.Payload) + len(rec.ID) + len(rec.IdempotencyKey); size > s.opts.maxRecordBytes() {
		return fmt.Errorf("%d bytes, max %d: %w", size, s.opts.maxRecordBytes(), ErrTooLarge)
	}
	return nil
}

// appendRequest builds the request appending rec to channel (checked).
func (s *Store) appendRequest(channel string, rec Record) (*request, error) {
	c, err := s.channel(channel, true)
	if err != nil {
		return nil, err
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
	return r, nil
}

// AppendBatch appends each record to its channel, as Append does, and
// returns once every one is answered (see Engine.AppendBatch). The
// records are queued at once and the committer never splits them: they
// are one group commit (with others queued with them), one log frame.
func (s *Store) AppendBatch(ctx context.Context, recs []ChannelRecord) ([]BatchAppended, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if !s.enter() {
		return nil, ErrClosed
	}
	defer s.exit()
	out := make([]BatchAppended, len(recs))
	g := &group{done: make(chan struct{}, 1)}
	reqs := make([]*request, 0, len(recs))
	index := make([]int, 0, len(recs)) // recs' index of each request
	for i, cr := range recs {
		rec := cr.Record
		err := s.checkRecord(cr.Channel, &rec)
		var r *request
		if err == nil {
			r, err = s.appendRequest(cr.Channel, rec)
		}
		if err != nil {
			out[i].Err = err
			continue
		}
		r.group = g
		g.cost += r.cost
		reqs = append(reqs, r)
		index = append(index, i)
	}
	if len(reqs) == 0 {
		return out, nil
	}
	g.left.Store(int64(len(reqs)))
	if !s.queue.pushAll(reqs) {
		for _, r := range reqs {
			putRequest(r)
		}
		return nil, ErrClosed
	}
	select {
	case <-g.done:
	case <-ctx.Done():
		// The committer still owns the requests and may commit them.
		for _, i := range index {
			out[i].Err = ctx.Err()
		}
		return out, nil
	}
	for j, r := range reqs {
		out[index[j]] = BatchAppended{Appended: r.res, Err: r.err}
		putRequest(r)
	}
	return out, nil
}

// group is the requests of one AppendBatch: answered together, when the
// last one is.
type group struct {
	left atomic.Int64
	cost int           // the requests' cost, together
	done chan struct{} // 1-buffered: signalled by the last answer
}

// requestKind says what a queued request writes.
type requestKind uint8

const (
	requestAppend requestKind = iota // Append: one record
	requestCreate                    // Head of a new channel: its epoch, no record
	requestState                     // PutState or DeleteState: op
	requestOutbox                    // a change of an outbox queue: outbox
)

// request is one queued write: an Append, a Head creating a channel, or a
// change of state.
type request struct {
	kind   requestKind
	ch     *channel // nil for state
	rec    Record
	store  bool      // keep the payload: the channel's retention keeps some
	idem   []byte    // Badger key of rec.IdempotencyKey; nil without one
	op     kvOp      // the state change
	outbox *outboxOp // the outbox change
	cost   int       // bytes Badger counts for this request's entries

	// group is set for a request of an AppendBatch; nil for the others.
	group *group

	// Set by the committer before it answers (finish).
	res  Appended
	err  error      // a grouped request's error
	done chan error // 1-buffered: the committer never blocks on it
}

// finish answers r with err: on done, or for a grouped request in err,
// signalling the group when it is the last of it.
func (r *request) finish(err error) {
	if r.group == nil {
		r.done <- err
		return
	}
	r.err = err
	if r.group.left.Add(-1) == 0 {
		r.group.done <- struct{}{}
	}
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
	switch r.kind {
	case requestState:
		r.cost = len(r.op.key) + len(r.op.value) + batchEntryOverhead
		return
	case requestOutbox:
		r.cost = r.outbox.cost()
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

// pushAll queues reqs together (no request gets between them), or
// reports false once the queue is closed.
func (q *queue) pushAll(reqs []*request) bool {
	q.mu.Lock()
	if q.closed {
		q.mu.Unlock()
		return false
	}
	q.reqs = append(q.reqs, reqs...)
	wake := len(q.reqs) == len(reqs)
	q.mu.Unlock()
	if wake {
		q.signal()
	}
	return true
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
	// A group is taken whole: its requests are next to each other, and
	// it is taken alone when it exceeds the bounds by itself.
	n, size := 0, 0
	for n < len(q.reqs) {
		r := q.reqs[n]
		count, cost := 1, r.cost
		if r.group != nil {
			count, cost = int(r.group.left.Load()), r.group.cost
		}
		if n > 0 && (n+count > maxRecords || size+cost > maxBytes) {
			break
		}
		size += cost
		n += count
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
