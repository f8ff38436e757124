package store

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/dgraph-io/badger/v4"
)

// Store is a set of durable channel logs in one Badger database. See the
// package documentation for its guarantees.
type Store struct {
	opts  Options
	db    *badger.DB
	reg   registry
	queue queue

	commitDone chan struct{} // closed when the committer has returned
	stopTrim   context.CancelFunc
	trimDone   chan struct{} // closed when the trimmer has returned
	trimMu     sync.Mutex    // serialises trims, so two never race on one channel

	// wal is the write-ahead log (SyncEachBatch on disk), nil otherwise.
	wal *wal
	// background runs the applier and the checkpointer.
	background sync.WaitGroup
	// applyReq and applyDone carry the committer's batches to the applier
	// goroutine and its results back (with the log only).
	applyReq  chan []kvOp
	applyDone chan error
	// applyMu is held by the committer while it writes a batch to Badger
	// (persist), and by Backup while it takes its snapshot: a snapshot
	// holds a batch whole or not at all.
	applyMu sync.Mutex
	// full is set while the disk is under the reserve (space.go).
	full atomic.Bool
	// broken is set when a commit failed after it began writing; see fail.
	broken atomic.Pointer[error]

	// outbox is the outbox queues' state (outbox.go).
	outbox outboxes

	// feed is the commit feed's receiver, set once by Feed; the committer
	// loads it once per batch.
	feed atomic.Pointer[func([]Committed)]

	// closed is set first thing by Close; every call checks it under opMu.
	closed atomic.Bool
	// opMu is held shared by every call that touches Badger and
	// exclusively by Close around closing Badger, so no call uses a closed
	// database.
	opMu      sync.RWMutex
	closeOnce sync.Once
	closeErr  error
}

// Open opens (or creates) the store described by opts, replays its
// write-ahead log onto Badger, and starts its committer, its background
// trimmer and (with the log) its applier and checkpointer. Channel state
// is loaded lazily, on a channel's first use.
func Open(opts Options) (*Store, error) {
	opts = opts.withDefaults()
	if err := opts.validate(); err != nil {
		return nil, err
	}
	if !opts.InMemory {
		if err := checkDataDir(opts.Dir, opts.Companions); err != nil {
			return nil, err
		}
	}
	db, err := badger.Open(opts.badgerOptions())
	if err != nil {
		return nil, fmt.Errorf("store: the data in %q cannot be opened: %w; Herald never resets a data directory by itself: "+
			"free space if the disk is full, else restore a backup (herald restore) into an empty folder, "+
			"or move this folder away to start empty (what it held is then not served)", opts.Dir, err)
	}
	if err := checkLayout(db); err != nil {
		_ = db.Close()
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &Store{
		opts:       opts,
		db:         db,
		reg:        registry{channels: make(map[string]*channel)},
		queue:      queue{ready: make(chan struct{}, 1)},
		commitDone: make(chan struct{}),
		stopTrim:   cancel,
		trimDone:   make(chan struct{}),
	}
	if err := s.openWAL(); err != nil {
		cancel()
		_ = db.Close()
		return nil, err
	}
	if err := s.openOutbox(); err != nil {
		cancel()
		if s.wal != nil {
			_ = s.wal.close()
		}
		_ = db.Close()
		return nil, err
	}
	if s.wal != nil {
		s.applyReq, s.applyDone = make(chan []kvOp), make(chan error)
		s.background.Go(s.applyLoop)
		s.background.Go(func() { s.checkpointLoop(ctx) })
	}
	go s.commitLoop()
	go s.trimLoop(ctx)
	return s, nil
}

// checkLayout refuses a directory written with another key layout, and
// marks a new one with the current layout.
func checkLayout(db *badger.DB) error {
	err := db.Update(func(txn *badger.Txn) error {
		item, err := txn.Get(versionKey())
		if errors.Is(err, badger.ErrKeyNotFound) {
			return txn.Set(versionKey(), binary.BigEndian.AppendUint32(nil, layoutVersion))
		}
		if err != nil {
			return err
		}
		return item.Value(func(v []byte) error {
			if !bytes.Equal(v, binary.BigEndian.AppendUint32(nil, layoutVersion)) {
				return refuse("the store holds layout version %x, this Herald reads %d: run the Herald that wrote it, or restore a backup made with this one into an empty folder", v, layoutVersion)
			}
			return nil
		})
	})
	if err != nil {
		return fmt.Errorf("store: check layout: %w", err)
	}
	return nil
}

// enter admits a call, or reports false once the store is closed. A
// successful enter must be paired with exit.
func (s *Store) enter() bool {
	s.opMu.RLock()
	if s.closed.Load() {
		s.opMu.RUnlock()
		return false
	}
	return true
}

func (s *Store) exit() { s.opMu.RUnlock() }

// Head returns the channel's epoch and head offset. The first call for a
// channel creates its epoch and commits it (durably, per Durability) before
// returning; later calls are memory reads.
func (s *Store) Head(ctx context.Context, channel string) (Position, error) {
	if err := checkChannel(channel); err != nil {
		return Position{}, err
	}
	if err := ctx.Err(); err != nil {
		return Position{}, err
	}
	if !s.enter() {
		return Position{}, ErrClosed
	}
	defer s.exit()
	c, err := s.channel(channel, true)
	if err != nil {
		return Position{}, err
	}
	if epoch, head, _ := c.snapshot(); epoch != "" {
		return Position{Epoch: epoch, Head: head}, nil
	}
	r := s.newRequest(c)
	r.kind = requestCreate
	r.setCost()
	res, err := s.submit(ctx, r)
	if err != nil {
		return Position{}, err
	}
	return Position{Epoch: res.Epoch, Head: res.Offset}, nil
}

// Feed sets the commit feed's receiver (see Engine for the contract). The
// committer calls it after each batch is durable and answered, with the
// batch's stored records in commit order; records of batches committed
// before Feed are not reported. A second call returns ErrFeedSet.
func (s *Store) Feed(receive func([]Committed)) error {
	if receive == nil {
		return errors.New("store: nil commit feed receiver")
	}
	if !s.enter() {
		return ErrClosed
	}
	defer s.exit()
	if !s.feed.CompareAndSwap(nil, &receive) {
		return ErrFeedSet
	}
	return nil
}

// Channels lists the channels whose creation was committed, in byte order
// of their names, starting after the name after ("" for the start), at most
// limit of them (limit <= 0 means 1,000).
func (s *Store) Channels(ctx context.Context, after string, limit int) ([]ChannelInfo, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if !s.enter() {
		return nil, ErrClosed
	}
	defer s.exit()
	if limit <= 0 {
		limit = defaultReadLimit
	}
	limit = min(limit, maxReadLimit)
	names, err := s.channelNames(after, limit)
	if err != nil {
		return nil, err
	}
	infos := make([]ChannelInfo, 0, len(names))
	for _, name := range names {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		c, err := s.channel(name, false)
		if err != nil {
			return nil, err
		}
		if c == nil {
			continue
		}
		epoch, head, first := c.snapshot()
		infos = append(infos, ChannelInfo{Name: name, Epoch: epoch, Head: head, First: first})
	}
	return infos, nil
}

// channelNames returns up to limit names of channels with a head key, in
// name order, greater than after.
func (s *Store) channelNames(after string, limit int) ([]string, error) {
	var names []string
	err := s.db.View(func(txn *badger.Txn) error {
		opt := badger.DefaultIteratorOptions
		opt.PrefetchValues = false
		opt.Prefix = []byte{kindHead}
		it := txn.NewIterator(opt)
		defer it.Close()
		for it.Seek(headKey(after)); it.Valid() && len(names) < limit; it.Next() {
			name, ok := parseHeadKey(it.Item().Key())
			if !ok || name <= after {
				continue
			}
			names = append(names, name)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("store: list channels: %w", err)
	}
	return names, nil
}

// Close commits and answers every append already queued (and feeds it:
// Close returns after the feed's last call), stops the trimmer, waits for
// calls in progress and closes Badger. Calls made after
// Close has begun return ErrClosed. Close is idempotent: later calls return
// the first call's result.
func (s *Store) Close() error {
	s.closeOnce.Do(func() {
		s.closed.Store(true)
		s.queue.close()
		<-s.commitDone
		s.stopTrim()
		<-s.trimDone
		if s.wal != nil {
			close(s.applyReq)
		}
		s.background.Wait()
		s.opMu.Lock()
		defer s.opMu.Unlock()
		if err := s.db.Close(); err != nil {
			s.closeErr = fmt.Errorf("store: close badger: %w", err)
		}
		if s.wal != nil {
			s.closeErr = errors.Join(s.closeErr, s.closeWAL(s.closeErr == nil))
		}
	})
	return s.closeErr
}
