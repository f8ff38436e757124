package store

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"sync"

	"github.com/dgraph-io/badger/v4"
)

// channel is the in-memory state of one channel's log. Once in the registry
// it stays there until Close, so Head of a known channel is a memory read.
type channel struct {
	name string

	// Committer state: read and written only by the committer goroutine
	// (set once by the loader before the channel is published). The
	// assigned values run ahead of the committed ones below while batches
	// wait for their sync.
	next          uint64 // last offset assigned; equals head when no batch is in flight
	assignedEpoch string // the epoch, assigned by the batch creating the channel
	assignedFirst uint64 // first, as the last batch prepared leaves it
	inBatch       int    // index in the touched list of the batch being prepared; -1 when not in it

	mu sync.Mutex // guards following
	// epoch is "" until the channel's creation is committed.
	epoch string
	// head is the last committed offset.
	head uint64
	// first is the oldest kept offset: no entry below it is kept, every
	// offset in [first, head] is (unless retention is removing it right
	// now). first == head+1 when nothing is kept.
	first uint64
}

// snapshot returns a consistent copy of the channel's committed state.
func (c *channel) snapshot() (epoch string, head, first uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.epoch, c.head, c.first
}

// raiseFirst raises first to f (never lowers it).
func (c *channel) raiseFirst(f uint64) {
	c.mu.Lock()
	c.first = max(c.first, f)
	c.mu.Unlock()
}

// registry maps channel names to their state.
type registry struct {
	mu       sync.RWMutex // guards channels
	channels map[string]*channel
}

func (r *registry) get(name string) *channel {
	r.mu.RLock()
	c := r.channels[name]
	r.mu.RUnlock()
	return c
}

// add publishes c unless the name is taken, and returns the registered one.
func (r *registry) add(c *channel) *channel {
	r.mu.Lock()
	defer r.mu.Unlock()
	if old := r.channels[c.name]; old != nil {
		return old
	}
	r.channels[c.name] = c
	return c
}

// channel returns the state of the named channel, loading it from Badger
// on first use. A channel unknown to Badger is registered empty (epoch "")
// when create is set, and is reported as nil otherwise, so that reads of
// random names do not grow the registry.
//
// Two goroutines may load the same channel at once: both read the same
// state, because a channel's keys are only written by the committer and
// the trimmer, and both work only on registered channels. The first to
// register wins and the other's copy is dropped.
func (s *Store) channel(name string, create bool) (*channel, error) {
	if c := s.reg.get(name); c != nil {
		return c, nil
	}
	c, err := s.loadChannel(name)
	if err != nil {
		return nil, err
	}
	if c == nil {
		if !create {
			return nil, nil
		}
		c = &channel{name: name, first: 1, assignedFirst: 1, inBatch: -1}
	}
	return s.reg.add(c), nil
}

// loadChannel reads a channel's head, epoch and first offset from Badger,
// or returns nil if the channel was never created.
func (s *Store) loadChannel(name string) (*channel, error) {
	var c *channel
	err := s.db.View(func(txn *badger.Txn) error {
		item, err := txn.Get(headKey(name))
		if errors.Is(err, badger.ErrKeyNotFound) {
			return nil
		}
		if err != nil {
			return err
		}
		var head uint64
		var epoch string
		if err := item.Value(func(v []byte) (err error) {
			head, epoch, err = parseHeadValue(v)
			return err
		}); err != nil {
			return err
		}

		// The persisted first is where the trimmer stopped; it lets the
		// seek below skip the tombstones of trimmed entries. The first
		// entry actually present is the truth (a trim may have been cut
		// short by a crash, or nothing may be kept at all).
		first := uint64(1)
		item, err = txn.Get(firstKey(name))
		switch {
		case err == nil:
			if err := item.Value(func(v []byte) (err error) {
				first, err = parseFirstValue(v)
				return err
			}); err != nil {
				return err
			}
		case !errors.Is(err, badger.ErrKeyNotFound):
			return err
		}
		first = min(max(first, 1), head+1)

		opt := badger.DefaultIteratorOptions
		opt.PrefetchValues = false
		opt.Prefix = logPrefix(name)
		it := txn.NewIterator(opt)
		defer it.Close()
		it.Seek(logKey(name, first))
		if it.Valid() {
			first = min(logKeyOffset(it.Item().Key()), head+1)
		} else {
			first = head + 1
		}
		c = &channel{
			name: name, next: head, epoch: epoch, head: head, first: first,
			assignedEpoch: epoch, assignedFirst: first, inBatch: -1,
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("store: load channel %q: %w", name, err)
	}
	return c, nil
}

// epochLen is the length of an epoch: 6 random bytes in lowercase hex.
const epochLen = 12

func newEpoch() string {
	var b [epochLen / 2]byte
	_, _ = rand.Read(b[:]) // never fails: it crashes the program instead
	return hex.EncodeToString(b[:])
}
