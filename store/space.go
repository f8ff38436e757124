package store

import (
	"errors"
	"fmt"
)

// The disk-space reserve. Badger writes its value log, memtables and
// tables through memory-mapped files that it grows sparse; on a full disk
// a write into such a file is a SIGBUS that takes the process down, and
// the same fault stops it again while it replays. So the committer looks
// at the data directory's free space before each batch and refuses the
// batch (ErrStorageFull, nothing of it written, nothing acknowledged)
// while less than Options.MinFreeBytes is left: what is left is for what
// Badger may still write on its own (a memtable's flush, compactions).
// Reads go on. Once space is freed, the next batch is taken: there is
// nothing to reset.

// DefaultMinFreeBytes is Options.MinFreeBytes's default.
const DefaultMinFreeBytes = 64 << 20

// ErrStorageFull is an append refused because the data directory's disk
// is nearly full (the API answers 507).
var ErrStorageFull = errors.New("store: storage full")

// checkSpace returns ErrStorageFull while the data directory's disk has
// less than the reserve free, logging each change between full and not.
func (s *Store) checkSpace() error {
	if s.opts.InMemory || s.opts.MinFreeBytes < 0 {
		return nil
	}
	err := s.SpaceProblem()
	if full := err != nil; s.full.Swap(full) != full {
		if full {
			s.opts.Logger.Error("store: the data directory's disk is nearly full: publishes are refused until space is freed", "err", err)
		} else {
			s.opts.Logger.Info("store: disk space is back: publishes are taken again")
		}
	}
	return err
}

// SpaceProblem says why appends are refused for want of disk space, or
// returns nil (for /readyz).
func (s *Store) SpaceProblem() error {
	if s.opts.InMemory || s.opts.MinFreeBytes < 0 {
		return nil
	}
	free, err := s.opts.FreeBytes(s.opts.Dir)
	if err != nil {
		return nil // not measured here: nothing to say
	}
	if reserve := uint64(s.opts.MinFreeBytes); free < reserve {
		return fmt.Errorf("%w: the disk of %s has %s free, under the %s kept in reserve (min_free_bytes); free some space and publishes are taken again",
			ErrStorageFull, s.opts.Dir, mib(free), mib(reserve))
	}
	return nil
}

func mib(n uint64) string { return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20)) }
