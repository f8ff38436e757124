package store

import (
	"context"
	"errors"
	"fmt"

	"github.com/dgraph-io/badger/v4"
)

// Small state: keyed values beside the channel logs, for the few records a
// server keeps durably besides messages (dynamic grants, bans, last-seen
// times). A change goes through the group committer like an append (and so
// through the write-ahead log), in the next batch, and is answered once
// durable.

// maxStateKey bounds a state key.
const maxStateKey = 1024

func stateKey(key string) ([]byte, error) {
	if key == "" || len(key) > maxStateKey {
		return nil, fmt.Errorf("store: state key of %d bytes: want 1 to %d", len(key), maxStateKey)
	}
	return append([]byte{kindState}, key...), nil
}

// PutState stores value under key, replacing what was there.
func (s *Store) PutState(ctx context.Context, key string, value []byte) error {
	k, err := stateKey(key)
	if err != nil {
		return err
	}
	if len(value) > s.opts.maxRecordBytes() {
		return fmt.Errorf("store: state value of %d bytes, max %d: %w", len(value), s.opts.maxRecordBytes(), ErrTooLarge)
	}
	// The committer may still hold the request after ctx ends: it gets a
	// copy the caller cannot change.
	return s.updateState(ctx, kvOp{key: k, value: append([]byte{}, value...)})
}

// DeleteState removes key; removing a missing key is not an error.
func (s *Store) DeleteState(ctx context.Context, key string) error {
	k, err := stateKey(key)
	if err != nil {
		return err
	}
	return s.updateState(ctx, kvOp{key: k, del: true})
}

func (s *Store) updateState(ctx context.Context, op kvOp) error {
	if err := s.change(ctx, func(r *request) { r.kind, r.op = requestState, op }); err != nil {
		return fmt.Errorf("store: write state: %w", err)
	}
	return nil
}

// change queues a write that is not an append (a state or an outbox
// change), as fill describes it, and returns once it is durable.
func (s *Store) change(ctx context.Context, fill func(r *request)) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if !s.enter() {
		return ErrClosed
	}
	defer s.exit()
	r := s.newRequest(nil)
	fill(r)
	r.setCost()
	_, err := s.submit(ctx, r)
	return err
}

// GetState returns the value under key; ok is false when there is none.
func (s *Store) GetState(ctx context.Context, key string) (value []byte, ok bool, err error) {
	k, err := stateKey(key)
	if err != nil {
		return nil, false, err
	}
	if err := ctx.Err(); err != nil {
		return nil, false, err
	}
	if !s.enter() {
		return nil, false, ErrClosed
	}
	defer s.exit()
	err = s.db.View(func(txn *badger.Txn) error {
		item, err := txn.Get(k)
		if err != nil {
			return err
		}
		value, err = item.ValueCopy(nil)
		return err
	})
	if errors.Is(err, badger.ErrKeyNotFound) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, fmt.Errorf("store: read state: %w", err)
	}
	return value, true, nil
}

// ScanState calls fn for every key starting with prefix, in key order,
// until fn returns an error (which ScanState returns).
func (s *Store) ScanState(ctx context.Context, prefix string, fn func(key string, value []byte) error) error {
	if !s.enter() {
		return ErrClosed
	}
	defer s.exit()
	p := append([]byte{kindState}, prefix...)
	return s.db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: p, PrefetchValues: true, PrefetchSize: 64})
		defer it.Close()
		for it.Seek(p); it.ValidForPrefix(p); it.Next() {
			if err := ctx.Err(); err != nil {
				return err
			}
			item := it.Item()
			v, err := item.ValueCopy(nil)
			if err != nil {
				return fmt.Errorf("store: read state: %w", err)
			}
			if err := fn(string(item.Key()[1:]), v); err != nil {
				return err
			}
		}
		return nil
	})
}
