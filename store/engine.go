package store

import (
	"context"
	"errors"
)

// Engine is the storage contract of Herald's channel core: durable channel
// logs with contiguous offsets, the ordered feed of what they commit, and a
// little keyed state. The core (package server) runs on any Engine and on
// nothing else of this package's implementation. *Store implements it on
// Badger; a distributed engine (several nodes) implements it as well.
// Package store/storetest is the conformance suite every Engine passes.
//
// Every method is safe for concurrent use. Channel names are opaque bytes:
// an engine accepts every name of 1 to 255 bytes without a NUL byte and
// refuses others with an error wrapping ErrBadChannel (the core allows a
// narrower alphabet). Every method returns an error wrapping ErrClosed once
// Close has begun.
//
// # Offsets and epochs
//
// A channel's log numbers its records by offset: the first stored record
// is 1 and each one after it takes exactly the next offset, with no gap and
// no reuse, for as long as the channel's epoch lasts; an Append that
// begins after another to the same channel returned gets a higher offset.
// The epoch is a non-empty string naming one lifetime of the log. It is
// created when the channel is first used by Head or Append (never by
// Read), is as durable as a record, and changes only when the channel's
// log is lost or reset (for the Badger store: its directory is lost);
// offsets then start again at 1 under a new epoch, never equal to an
// earlier one, so a client's old offset is never mistaken for a new one.
//
// # Durability
//
// Acknowledged means durable: Append returns a nil error only once its
// record is durable, and Head only once a new channel's epoch is. Durable
// means at least that the record survives Close and reopen and a crash of
// the process; what more it survives is the engine's setting (the Badger
// store: fsynced, surviving power loss, with SyncEachBatch; in the
// operating system's page cache with NoSync; a distributed engine:
// replicated). An Append that returns ErrClosed, ErrBadChannel or
// ErrTooLarge stored nothing. One that returns another error (its
// context's, a failed commit) may or may not have stored its record: a
// caller that retries sets Record.IdempotencyKey.
//
// # Visibility
//
// A record is visible — Head reports a head of at least its offset, and
// Read returns it unless retention removed it — before its Append returns
// and before the feed reports it. The core relies on this when a
// subscription hands over from reading the log to the live feed: it
// registers for the feed, then reads the head, so every record beyond
// that head is reported after the registration.
//
// # The commit feed
//
// Feed sets the receiver of the commit feed, once. From then on, every
// record the engine stores (by any caller: for a distributed engine, on any
// node) is passed to the receiver exactly once, after it is durable and
// visible. Duplicates (idempotency hits) store nothing and are not
// reported; records of a channel whose retention keeps nothing are stored
// as offsets only and are reported. The receiver's calls are serialised:
// one at a time, each returning before the next begins (a happens-before
// edge), and per channel they carry offsets in ascending order, each
// exactly one after the previous, across calls. There is no order between
// an Append returning and its record being reported: either may come
// first, and callers rely on neither.
//
// The receiver runs on the engine's commit path: the Badger store calls it
// from its committer goroutine after each group-commit batch is durable and
// its Appends are answered, and writes no new batch until it returns. So it
// must return quickly and never block on a client; it must not call
// Append, Head or Close, each of which may wait for the goroutine running
// it (Append and a channel's first Head queue for the committer; Close
// waits for it to finish) and would deadlock. Read, Channels, the state
// methods and Head of a channel that exists answer while the receiver
// runs. The slice passed to the receiver is only valid during the call
// (the engine reuses it): the receiver copies what it keeps.
//
// # Retention
//
// The engine applies each channel's Retention (how it learns it is the
// engine's option: Options.Retention for the Badger store) on its own
// schedule. Retention removes only the oldest records, so what a channel
// keeps is always the contiguous range [First, Head]; First never goes
// down within an epoch; trimming never changes the head or any offset.
//
// # Idempotency
//
// A record whose IdempotencyKey was used on the same channel within the
// engine's window (the Badger store: Options.IdempotencyTTL by Options.Now)
// is not stored: Append returns the first append's Offset, Epoch and ID
// with Duplicate set. Of concurrent appends with one key, exactly one is
// stored. Keys are as durable as records; after the window a key is new
// again.
type Engine interface {
	// Append adds rec to the channel's log and returns its offset and
	// epoch once it is durable (see Durability above). A zero rec.Time is
	// set to the engine's clock. A record larger than the engine's limit
	// (a setting; Options.MaxBatchBytes for the Badger store), counting
	// len(Payload)+len(ID)+len(IdempotencyKey), is refused with
	// ErrTooLarge.
	Append(ctx context.Context, channel string, rec Record) (Appended, error)

	// AppendBatch appends each record to its channel as Append does and
	// returns one answer per record, in order, once every record is
	// answered. A record refused on its own (a bad channel, too large:
	// ErrBadChannel, ErrTooLarge) gets that error, stores nothing, and
	// does not stop the others. Records of one channel get ascending
	// offsets in their order in recs, with no record of another call
	// between them. The records are committed together, as one unit where
	// the engine can (the Badger store: one group commit; with
	// SyncEachBatch, one log frame, so a crash keeps all of them or none),
	// and a failed commit fails all of them. It returns an error, and no
	// answers, when
	// it stored nothing: ctx was done or the engine closed before any
	// record was queued. ctx ending while it waits gives every queued
	// record ctx's error; they may still be stored, as with Append.
	AppendBatch(ctx context.Context, recs []ChannelRecord) ([]BatchAppended, error)

	// Read returns the channel's epoch, head and first kept offset, and
	// its kept records with offsets greater than after, ascending and
	// contiguous. The head is read first and no record beyond it is
	// returned, so a caller that continues after the last record (or after
	// Head when there is none) misses nothing. The page holds every kept
	// record in (after, Head] up to limit: fewer only when it reaches
	// Head. limit <= 0 means the engine's default page; a larger limit
	// may be lowered to the engine's maximum page; both are at least
	// 1,000. Trimmed reports that records right after after are gone:
	// after+1 < First and after < Head. A channel never used yields an
	// empty Page with Epoch "" and First 1, and is not created.
	Read(ctx context.Context, channel string, after uint64, limit int) (Page, error)

	// Head returns the channel's epoch and head offset (0 before the
	// first record). The first call for a channel creates its epoch
	// durably; later calls must be cheap (the core calls Head on every
	// subscribe).
	Head(ctx context.Context, channel string) (Position, error)

	// Channels lists the channels created (by Head or Append), in byte
	// order of their names, starting after the name after ("" for the
	// start), at most limit of them. limit <= 0 means the engine's default
	// page; a larger limit may be lowered to its maximum; both are at
	// least 1,000.
	Channels(ctx context.Context, after string, limit int) ([]ChannelInfo, error)

	// Feed sets the receiver of the commit feed (see The commit feed
	// above). It is called once, before the first Append: records
	// committed before it are not reported. A second call returns an
	// error wrapping ErrFeedSet and changes nothing.
	Feed(receive func([]Committed)) error

	// PutState stores value under key, replacing what was there. Keys are
	// 1 to 1,024 bytes; state is as durable as records and apart from
	// them (a key is never a channel).
	PutState(ctx context.Context, key string, value []byte) error
	// GetState returns the value under key; ok is false when there is none.
	GetState(ctx context.Context, key string) (value []byte, ok bool, err error)
	// DeleteState removes key; removing a missing key is not an error.
	DeleteState(ctx context.Context, key string) error
	// ScanState calls fn for every key starting with prefix, in byte
	// order of the keys, until fn returns an error, which ScanState
	// returns.
	ScanState(ctx context.Context, prefix string, fn func(key string, value []byte) error) error

	// Close answers every Append already accepted (committing it),
	// returns after the receiver's last call, and releases the engine.
	// Later calls of every method return ErrClosed; Close itself is
	// idempotent.
	Close() error
}

// StateWatcher is implemented by an engine that several nodes share
// (JetStream): the small state changes under a node's feet when another
// node writes it, and WatchState reports those changes so that each
// node's copy in memory follows. An engine that one process owns (Badger)
// need not implement it.
type StateWatcher interface {
	// WatchState calls fn, from one goroutine the engine owns, with every
	// change to a key starting with prefix made from now on, by any node
	// (this one's included), in the order they were made; deleted is true
	// for a removal. stop ends the watch and waits for fn's last call.
	WatchState(prefix string, fn func(key string, value []byte, deleted bool)) (stop func(), err error)
}

// Bus is implemented by an engine that several nodes share: a way for
// the nodes to tell each other what is not stored (how many sessions a
// user holds on each). Broadcasts are best effort: at most once, not
// stored, lost while a node is away.
type Bus interface {
	// Broadcast sends data to every node's Listen on topic, this one's
	// included.
	Broadcast(topic string, data []byte) error
	// Listen calls fn with each broadcast on topic, one call at a time,
	// from a goroutine the engine owns; stop ends it and waits for fn's
	// last call.
	Listen(topic string, fn func(data []byte)) (stop func(), err error)
}

// Every *Store is an Engine.
var _ Engine = (*Store)(nil)

// ErrFeedSet is returned by Feed when the engine already has a receiver:
// one engine feeds one core.
var ErrFeedSet = errors.New("store: commit feed receiver already set")

// RemoteReader is implemented by an engine whose reads wait on the
// network (the JetStream engine): the core then reads catch-up pages off
// the transports' writers, so that one slow read does not hold the
// deliveries of the other sessions a writer serves.
type RemoteReader interface {
	RemoteReads() bool
}
