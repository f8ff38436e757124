package store

import (
	"fmt"

	"github.com/dgraph-io/badger/v4"
)

// committer is the state of the committer goroutine, reused across batches.
type committer struct {
	batch     []*request
	touched   []*channel          // channels in the current batch, in order of first request
	seen      map[string]*request // idempotency key → first request with it in the batch
	committed []Committed         // the feed receiver's argument
}

// commitLoop is the committer goroutine: take every queued append, write
// them as one transaction, answer, repeat. While a batch is written and
// synced, appends queue up for the next one, so batches grow with load and
// a lone append waits for no timer (badger's doWrites works the same way).
// It returns once Close has closed the queue and every queued append has
// been answered.
func (s *Store) commitLoop() {
	defer close(s.commitDone)
	var c committer
	for {
		var ok bool
		c.batch, ok = s.queue.next(c.batch[:0], s.opts.MaxBatchRecords, s.opts.MaxBatchBytes)
		if !ok {
			return
		}
		s.commitBatch(&c)
		clear(c.batch)
	}
}

// commitBatch writes c.batch, then publishes the new heads, answers every
// request and calls the feed's receiver, in that order: a record is
// visible to Head and Read before its Append returns and before it is fed.
// The receiver is called right here, on the committer goroutine, with no
// hand-off, so its calls never overlap and follow batch order. On failure it rolls the
// batch's channels back to their committed heads and answers every request
// with the error.
func (s *Store) commitBatch(c *committer) {
	err := s.writeBatch(c)
	if err != nil {
		err = fmt.Errorf("store: commit %d appends: %w", len(c.batch), err)
		s.opts.Logger.Error("store: commit failed", "appends", len(c.batch), "err", err)
		for _, ch := range c.touched {
			ch.next = ch.head // only the committer writes head: no lock needed to read it
			ch.pendingEpoch = ""
			ch.inBatch, ch.dirty = false, false
		}
		c.touched = c.touched[:0]
		clear(c.seen)
		for _, r := range c.batch {
			r.done <- err
		}
		return
	}

	for _, ch := range c.touched {
		ch.mu.Lock()
		ch.epoch = ch.pendingEpoch
		ch.head = ch.next
		ch.first = max(ch.first, ch.batchFirst)
		ch.mu.Unlock()
		ch.inBatch, ch.dirty = false, false
	}
	c.touched = c.touched[:0]
	clear(c.seen)

	// Collect the feed before answering: an answered request is recycled.
	// The receiver is loaded once per batch, so a batch is reported whole
	// or, if it was collected before Feed, not at all.
	receive := s.feed.Load()
	c.committed = c.committed[:0]
	for _, r := range c.batch {
		switch {
		case r.create:
			r.res = Appended{Offset: r.ch.head, Epoch: r.ch.epoch}
		case !r.res.Duplicate && receive != nil:
			c.committed = append(c.committed, Committed{
				Channel: r.ch.name,
				Offset:  r.res.Offset,
				Epoch:   r.res.Epoch,
				Record:  r.rec,
			})
		}
	}
	for _, r := range c.batch {
		r.done <- nil
	}
	if receive != nil && len(c.committed) > 0 {
		(*receive)(c.committed)
		clear(c.committed) // drop payload references until the next batch
	}
}

// writeBatch assigns offsets to c.batch and writes its entries, idempotency
// keys and the new heads in one Badger transaction. It sets each request's
// res (final once the commit succeeds).
func (s *Store) writeBatch(c *committer) error {
	txn := s.db.NewTransaction(true)
	defer txn.Discard()
	now := s.opts.Now()

	for _, r := range c.batch {
		ch := r.ch
		if !ch.inBatch {
			ch.inBatch = true
			c.touched = append(c.touched, ch)
			ch.pendingEpoch = ch.epoch
			if ch.pendingEpoch == "" {
				ch.pendingEpoch = newEpoch()
				ch.dirty = true
			}
			ch.mu.Lock() // the trimmer may raise first
			ch.batchFirst = ch.first
			ch.mu.Unlock()
		}
		if r.create {
			continue
		}
		if r.idem != nil {
			dup, err := s.findDuplicate(c, txn, r, now)
			if err != nil {
				return err
			}
			if dup {
				continue
			}
		}

		ch.next++
		ch.dirty = true
		r.res = Appended{Offset: ch.next, Epoch: ch.pendingEpoch, ID: r.rec.ID}
		if r.store {
			key := logKey(ch.name, ch.next)
			val := appendEntryValue(make([]byte, 0, entryHeaderLen+len(r.rec.Payload)), r.rec.Time, r.rec.Payload)
			if err := txn.SetEntry(badger.NewEntry(key, val)); err != nil {
				return err
			}
		} else if ch.batchFirst == ch.next {
			// Nothing is kept, so nothing is kept from the new head on.
			ch.batchFirst++
		}
		if r.idem != nil {
			if err := s.rememberKey(c, txn, r, now); err != nil {
				return err
			}
		}
	}

	for _, ch := range c.touched {
		if !ch.dirty {
			continue
		}
		if err := txn.SetEntry(badger.NewEntry(headKey(ch.name), headValue(ch.next, ch.pendingEpoch))); err != nil {
			return err
		}
	}
	return txn.Commit()
}
