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
func (s *Store) findDuplicate(c *committer, txn *badger.Txn, r *request, now time.Time) (bool, error) {
	if first, ok := c.seen[string(r.idem)]; ok {
		r.res = first.res
		r.res.Duplicate = true
		return true, nil
	}
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
	r.res = Appended{Offset: rec.Offset, Epoch: r.ch.pendingEpoch, ID: rec.ID, Duplicate: true}
	return true, nil
}

// rememberKey writes r's idempotency key, with r's result, into txn and
// remembers it for the rest of the batch.
func (s *Store) rememberKey(c *committer, txn *badger.Txn, r *request, now time.Time) error {
	ttl := s.opts.IdempotencyTTL
	v := idemRecord{Expires: now.Add(ttl), Offset: r.res.Offset, ID: r.res.ID}.value()
	if err := txn.SetEntry(badger.NewEntry(r.idem, v).WithTTL(ttl)); err != nil {
		return err
	}
	if c.seen == nil {
		c.seen = make(map[string]*request)
	}
	c.seen[string(r.idem)] = r
	return nil
}
