package store

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/dgraph-io/badger/v4"
)

// trimChunk bounds the deletes of one trim transaction, so that the
// committer's transactions interleave with a long trim instead of waiting
// behind it.
const trimChunk = 512

// valueLogGCInterval spaces value-log GC runs, and valueLogGCFiles bounds
// the files one run rewrites. Message payloads live in the value log
// (valueThreshold), so under sustained publishing it grows by megabytes a
// second: the GC runs often enough to keep up, and a file it picks is at
// least half garbage, so rewriting it copies at most half a file.
const (
	valueLogGCInterval = time.Minute
	valueLogGCFiles    = 16
)

// Trim applies retention r to the channel now and returns how many entries
// it removed. It removes the oldest entries beyond r.MaxCount and, when
// r.MaxAge > 0, the oldest entries older than r.MaxAge by Options.Now (age
// trimming stops at the first entry young enough, so an entry written with
// an old Time behind a younger one waits for the younger one). Entries are
// deleted in small transactions; Trim returns ctx.Err() or ErrClosed, with
// the count so far, if it is cut short.
func (s *Store) Trim(ctx context.Context, channel string, r Retention) (int, error) {
	if err := checkChannel(channel); err != nil {
		return 0, err
	}
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	if !s.enter() {
		return 0, ErrClosed
	}
	defer s.exit()
	c, err := s.channel(channel, false)
	if err != nil || c == nil {
		return 0, err
	}
	return s.trimChannel(ctx, c, r)
}

// trimLoop is the background trimmer: every TrimInterval it applies each
// channel's retention, then now and then runs the value-log GC.
func (s *Store) trimLoop(ctx context.Context) {
	defer close(s.trimDone)
	tick := time.NewTicker(s.opts.TrimInterval)
	defer tick.Stop()
	lastGC := time.Now()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		s.trimAll(ctx)
		if !s.opts.InMemory && time.Since(lastGC) >= valueLogGCInterval {
			s.runValueLogGC()
			lastGC = time.Now()
		}
	}
}

// trimAll applies Options.Retention to every channel, a page of names at a
// time.
func (s *Store) trimAll(ctx context.Context) {
	const page = 256
	after := ""
	for {
		names, err := s.channelNames(after, page)
		if err != nil {
			s.opts.Logger.Warn("store: trim: list channels", "err", err)
			return
		}
		for _, name := range names {
			if ctx.Err() != nil {
				return
			}
			c, err := s.channel(name, false)
			if err == nil && c != nil {
				_, err = s.trimChannel(ctx, c, s.opts.Retention(name))
			}
			if err != nil && ctx.Err() == nil {
				s.opts.Logger.Warn("store: trim failed", "channel", name, "err", err)
			}
		}
		if len(names) < page {
			return
		}
		after = names[len(names)-1]
	}
}

// trimChannel removes c's entries that r does not keep, oldest first, in
// chunks of at most trimChunk entries. Each chunk's transaction also stores
// the new first offset; then c.first is raised, so reads skip the deleted
// range. Entries appended after the head read here are never touched.
func (s *Store) trimChannel(ctx context.Context, c *channel, r Retention) (int, error) {
	s.trimMu.Lock()
	defer s.trimMu.Unlock()
	epoch, head, first := c.snapshot()
	if epoch == "" || first > head {
		return 0, nil
	}
	// Entries below countCut are beyond MaxCount.
	countCut := head + 1 // MaxCount <= 0 keeps nothing
	if r.MaxCount > 0 {
		countCut = 1
		if uint64(r.MaxCount) < head {
			countCut = head - uint64(r.MaxCount) + 1
		}
	}
	var deadline time.Time
	if r.MaxAge > 0 {
		deadline = s.opts.Now().Add(-r.MaxAge)
	}
	if countCut <= first && deadline.IsZero() {
		return 0, nil
	}

	// Entries an outbox entry still refers to stay, and those after them.
	limit := head
	if pin := s.outboxPin(c.name); pin > 0 && pin <= head {
		limit = pin - 1
	}
	removed := 0
	for from := first; from <= limit; {
		if err := ctx.Err(); err != nil {
			return removed, err
		}
		if s.closed.Load() {
			return removed, ErrClosed
		}
		keys, next, err := s.trimKeys(c.name, from, limit, countCut, deadline)
		if err != nil {
			return removed, err
		}
		if next == from {
			break // the oldest entry is kept: done
		}
		if err := s.deleteKeys(c.name, keys, next); err != nil {
			return removed, err
		}
		c.raiseFirst(next)
		removed += len(keys)
		from = next
	}
	return removed, nil
}

// trimKeys returns the keys of up to trimChunk entries of channel to
// remove, from offset from on, and next, the offset below which nothing is
// kept any more: the first entry kept, head+1 when none is, or the offset
// after the last key returned when the chunk is full.
func (s *Store) trimKeys(channel string, from, head, countCut uint64, deadline time.Time) (keys [][]byte, next uint64, err error) {
	next = from
	err = s.db.View(func(txn *badger.Txn) error {
		opt := badger.DefaultIteratorOptions
		opt.PrefetchValues = false
		opt.Prefix = logPrefix(channel)
		it := txn.NewIterator(opt)
		defer it.Close()
		for it.Seek(logKey(channel, from)); it.Valid(); it.Next() {
			item := it.Item()
			off := logKeyOffset(item.Key())
			if off > head {
				break
			}
			if len(keys) == trimChunk {
				next = off
				return nil
			}
			if off >= countCut {
				if deadline.IsZero() {
					next = off
					return nil
				}
				var t time.Time
				if err := item.Value(func(v []byte) (err error) {
					t, _, err = parseEntryValue(v)
					return err
				}); err != nil {
					return fmt.Errorf("offset %d: %w", off, err)
				}
				if !t.Before(deadline) {
					next = off
					return nil
				}
			}
			keys = append(keys, item.KeyCopy(nil))
		}
		next = head + 1
		return nil
	})
	if err != nil {
		return nil, 0, fmt.Errorf("store: trim %q: %w", channel, err)
	}
	return keys, next, nil
}

// deleteKeys deletes keys and records first as the channel's first kept
// offset, in one transaction.
func (s *Store) deleteKeys(channel string, keys [][]byte, first uint64) error {
	txn := s.db.NewTransaction(true)
	defer txn.Discard()
	for _, k := range keys {
		if err := txn.Delete(k); err != nil {
			return fmt.Errorf("store: trim %q: %w", channel, err)
		}
	}
	if err := txn.Set(firstKey(channel), firstValue(first)); err != nil {
		return fmt.Errorf("store: trim %q: %w", channel, err)
	}
	if err := txn.Commit(); err != nil {
		return fmt.Errorf("store: trim %q: %w", channel, err)
	}
	return nil
}

// runValueLogGC rewrites value-log files that are mostly garbage (payloads
// of trimmed messages), up to valueLogGCFiles per run, one at a time
// (rewriteValueLog).
func (s *Store) runValueLogGC() {
	for range valueLogGCFiles {
		err := s.rewriteValueLog()
		if err == nil {
			continue
		}
		if !errors.Is(err, badger.ErrNoRewrite) && !errors.Is(err, badger.ErrRejected) {
			s.opts.Logger.Warn("store: value log gc", "err", err)
		}
		return
	}
}

// rewriteValueLog runs one value-log GC: Badger copies the live values of
// the file with the most garbage into its current value log and memtable,
// which it does not sync, and then deletes the file. A power loss between
// the two would lose values that no write-ahead log segment holds any
// more. So an iterator is held open meanwhile, which makes Badger defer
// deleting the file until the last iterator closes; Badger's logs are
// synced (syncBadger), and only then is the iterator closed.
func (s *Store) rewriteValueLog() error {
	txn := s.db.NewTransaction(false)
	defer txn.Discard()
	it := txn.NewIterator(badger.IteratorOptions{}) // pins the files; reads nothing
	err := s.db.RunValueLogGC(0.5)
	if err == nil {
		// Should the sync fail, the file is deleted all the same (Badger
		// cannot keep it); the next checkpoint syncs again.
		err = s.syncBadger()
	}
	it.Close() // deletes the rewritten file
	return err
}
