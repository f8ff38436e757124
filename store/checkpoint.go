package store

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/dgraph-io/badger/v4"
)

// openWAL opens the write-ahead log of an on-disk store, replays what it
// holds onto Badger and checkpoints, so that Open returns with Badger
// holding every batch the log held and the log empty. With NoSync a log
// left by an earlier run with SyncEachBatch is replayed and removed; none
// is kept.
func (s *Store) openWAL() error {
	if s.opts.InMemory {
		return nil
	}
	dir := walDir(s.opts.Dir)
	if s.opts.Durability != SyncEachBatch {
		if _, err := os.Stat(dir); errors.Is(err, fs.ErrNotExist) {
			return nil
		}
	}
	w, rep, err := openWAL(dir, int64(s.opts.WALSegmentBytes), s.opts.Logger)
	if err != nil {
		return err
	}
	fail := func(err error) error {
		_ = w.close()
		return err
	}
	if rep.frames > 0 {
		n, err := s.replay(rep.ops)
		if err != nil {
			return fail(fmt.Errorf("store: replay the write-ahead log: %w", err))
		}
		s.opts.Logger.Info("store: replayed the write-ahead log", "batches", rep.frames, "writes", n)
	}
	// Make the replay (and a new store's layout key) durable, then retire
	// what the log held.
	if err := s.syncBadger(); err != nil {
		return fail(err)
	}
	if err := w.retire(w.takeFull()); err != nil {
		return fail(err)
	}
	if s.opts.Durability != SyncEachBatch {
		if err := w.close(); err != nil {
			return err
		}
		if err := os.RemoveAll(dir); err != nil {
			return fmt.Errorf("store: remove the write-ahead log of durability sync: %w", err)
		}
		return nil
	}
	// The first batch takes a segment at once: have one ready.
	if err := w.ensureSpare(); err != nil {
		return fail(err)
	}
	s.wal = w
	return nil
}

// replay applies the log's operations to Badger, in order. Applying one
// that Badger already holds writes the same value again, and every head,
// state and idempotency key ends as the log's last write of it left it —
// except a log entry below its channel's first kept offset, which the
// trimmer removed after it was written: that one is skipped, not brought
// back. Idempotency keys whose Badger TTL has run out are skipped too. It
// returns how many operations it applied.
func (s *Store) replay(ops []kvOp) (int, error) {
	firsts := make(map[string]uint64)
	keep := ops[:0]
	now := uint64(time.Now().Unix())
	for _, op := range ops {
		if op.expiresAt != 0 && op.expiresAt <= now {
			continue
		}
		if channel, offset, ok := parseLogKey(op.key); ok && !op.del {
			first, seen := firsts[channel]
			if !seen {
				var err error
				if first, err = s.persistedFirst(channel); err != nil {
					return 0, err
				}
				firsts[channel] = first
			}
			if offset < first {
				continue
			}
		}
		keep = append(keep, op)
	}
	if err := s.apply(keep); err != nil {
		return 0, err
	}
	return len(keep), nil
}

// persistedFirst reads the channel's first kept offset as the trimmer last
// stored it (1 when it never trimmed).
func (s *Store) persistedFirst(channel string) (uint64, error) {
	first := uint64(1)
	err := s.db.View(func(txn *badger.Txn) error {
		item, err := txn.Get(firstKey(channel))
		if errors.Is(err, badger.ErrKeyNotFound) {
			return nil
		}
		if err != nil {
			return err
		}
		return item.Value(func(v []byte) (err error) {
			first, err = parseFirstValue(v)
			return err
		})
	})
	if err != nil {
		return 0, fmt.Errorf("channel %q: read first kept offset: %w", channel, err)
	}
	return first, nil
}

// checkpointLoop is the checkpointer: each time the committer fills a
// segment it checkpoints and retires the full segments, and it keeps one
// free segment ready so that the committer rarely creates one. It returns
// when ctx ends.
func (s *Store) checkpointLoop(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-s.wal.kick:
		}
		if err := s.checkpoint(); err != nil {
			s.opts.Logger.Warn("store: checkpoint failed; the write-ahead log keeps its segments", "err", err)
		}
		if err := s.wal.ensureSpare(); err != nil {
			s.opts.Logger.Warn("store: prepare a write-ahead log segment", "err", err)
		}
	}
}

// checkpoint makes Badger durable up to the full segments' last batch and
// retires those segments. Every batch in a full segment was written to
// Badger before the committer started the next segment.
func (s *Store) checkpoint() error {
	full := s.wal.takeFull()
	if len(full) == 0 {
		return nil
	}
	err := s.syncBadger()
	if err == nil {
		err = s.wal.retire(full)
	}
	if err != nil {
		// Keep them for the next checkpoint (or the next Open's replay).
		s.wal.mu.Lock()
		s.wal.full = append(full, s.wal.full...)
		s.wal.mu.Unlock()
	}
	return err
}

// syncBadger makes everything Badger has written durable: it fsyncs each
// file in which Badger keeps writes it has not synced itself — its
// memtables' logs (*.mem) and its value logs (*.vlog), which it writes
// through memory maps — and then its directory. Badger syncs its tables
// and manifest when it writes them. A memtable log that disappears
// meanwhile was flushed to a table, which Badger synced before removing it.
func (s *Store) syncBadger() error {
	entries, err := os.ReadDir(s.opts.Dir)
	if err != nil {
		return fmt.Errorf("store: checkpoint: %w", err)
	}
	for _, e := range entries {
		name := e.Name()
		if !e.Type().IsRegular() || !(strings.HasSuffix(name, ".mem") || strings.HasSuffix(name, ".vlog")) {
			continue
		}
		if err := syncFile(filepath.Join(s.opts.Dir, name)); err != nil {
			return fmt.Errorf("store: checkpoint: %w", err)
		}
	}
	if err := syncDir(s.opts.Dir); err != nil {
		return fmt.Errorf("store: checkpoint: %w", err)
	}
	return nil
}

// syncFile fsyncs the file at path; a file gone meanwhile is not an error.
func syncFile(path string) error {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	err = f.Sync()
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// closeWAL closes the log after Badger closed. When Badger closed cleanly
// it synced everything, so the log's segments are retired and the next
// Open has nothing to replay; otherwise they stay for it.
func (s *Store) closeWAL(clean bool) error {
	w := s.wal
	var err error
	if clean {
		segs := w.takeFull()
		if w.active != nil {
			segs = append(segs, w.active)
			w.active = nil
		}
		err = w.retire(segs)
	}
	return errors.Join(err, w.close())
}
