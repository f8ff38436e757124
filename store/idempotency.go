package store

import (
	"errors"
	"fmt"
	"time"

	"github.com/dgraph-io/badger/v4"
)

// Idempotency keys are remembered per channel, under their own Badger key,
// with the offset and ID of the append that first used them and an expiry
// time taken from Options.Now, so that tests can expire them with a fake
// clock. The entry also carries a Badger TTL on the real clock so that
// compaction drops it eventually; a key is a duplicate only while both say
// it is alive. Only the committer reads and writes these keys, batch after
// batch, so two appends with one key can never both be stored.

// findDuplicate reports whether r's idempotency key was already used: by
// an earlier request of this batch, or by a committed append whose key has
// not expired at now. On a duplicate it sets r.res to the first result.
func (s *Store) findDuplicate(c *committer, r *request, epoch string, now time.Time) (bool, error) {
	if first, ok := c.seen[string(r.idem)]; ok {
		r.res = first.res
		r.res.Duplicate = true
		return true, nil
	}
	// Every earlier batch is in Badger: the committer persists a batch
	// before it prepares the next.
	txn := s.db.NewTransaction(false)
	defer txn.Discard()
	item, err := txn.Get(r.idem)
	if errors.Is(err, badger.ErrKeyNotFound) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("idempotency key %q: %w", r.rec.IdempotencyKey, err)
	}
	var rec idemRecord
	if err := item.Value(func(v []byte) (err error) {
		rec, err = parseIdemValue(v)
		return err
	}); err != nil {
		return false, fmt.Errorf("idempotency key %q: %w", r.rec.IdempotencyKey, err)
	}
	if !rec.Expires.After(now) {
		return false, nil
	}
	r.res = Appended{Offset: rec.Offset, Epoch: epoch, ID: rec.ID, Duplicate: true}
	return true, nil
}

// rememberKey adds the write of r's idempotency key, with r's result, to
// the batch and remembers it for the rest of the batch.
func (s *Store) rememberKey(c *committer, r *request, now time.Time) {
	ttl := s.opts.IdempotencyTTL
	v := idemRecord{Expires: now.Add(ttl), Offset: r.res.Offset, ID: r.res.ID}.value()
	// Badger's TTL runs on the real clock, as Entry.WithTTL sets it.
	c.ops = append(c.ops, kvOp{key: r.idem, value: v, expiresAt: uint64(time.Now().Add(ttl).Unix())})
	if c.seen == nil {
		c.seen = make(map[string]*request)
	}
	c.seen[string(r.idem)] = r
}
