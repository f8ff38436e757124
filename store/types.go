package store

import (
	"errors"
	"fmt"
	"log/slog"
	"time"
)

// Durability says when an append counts as done.
type Durability int

const (
	// SyncEachBatch answers an append only after the group-commit batch that
	// holds it has been written to the write-ahead log and fsynced (one
	// fdatasync per batch). This is the default: an acknowledged message
	// survives a process kill and a power loss.
	SyncEachBatch Durability = iota
	// NoSync answers once the batch is in the operating system's page cache.
	// An acknowledged message survives a process kill (SIGKILL, a crash) but
	// not a power loss or kernel panic. Faster on slow disks.
	NoSync
)

// String returns the configuration spelling of d ("sync" or "none").
func (d Durability) String() string {
	switch d {
	case SyncEachBatch:
		return "sync"
	case NoSync:
		return "none"
	}
	return "unknown"
}

// ParseDurability parses "sync" or "none".
func ParseDurability(s string) (Durability, error) {
	switch s {
	case "sync", "":
		return SyncEachBatch, nil
	case "none":
		return NoSync, nil
	}
	return 0, fmt.Errorf("durability %q: want \"sync\" or \"none\"", s)
}

// UnmarshalText parses "sync" or "none" (a configuration file's value).
func (d *Durability) UnmarshalText(b []byte) error {
	v, err := ParseDurability(string(b))
	if err != nil {
		return fmt.Errorf("%q: want \"sync\" or \"none\"", b)
	}
	*d = v
	return nil
}

// MarshalText writes d as a configuration file spells it.
func (d Durability) MarshalText() ([]byte, error) { return []byte(d.String()), nil }

// Retention bounds how much of a channel's log is kept.
type Retention struct {
	// MaxCount is the number of newest messages kept. 0 keeps none: appends
	// still get offsets (so live subscribers see contiguous offsets) but no
	// payload is stored, and every read of the past reports Trimmed.
	MaxCount int
	// MaxAge drops messages older than this. 0 means no age limit.
	MaxAge time.Duration
}

// DefaultRetention is what a channel keeps when Options.Retention is nil:
// the newest 1,000 messages, none older than 24 hours.
var DefaultRetention = Retention{MaxCount: 1000, MaxAge: 24 * time.Hour}

// Options configures a Store. The zero value of every field but Dir is a
// sane default; see each field. Fields with a yaml tag are settings of the
// configuration file, under the key of the tag.
type Options struct {
	// Dir is the Badger directory. Required unless InMemory.
	Dir string `yaml:"data_dir"`
	// InMemory keeps everything in memory (tests). Nothing survives Close.
	InMemory bool
	// MinFreeBytes is the disk space kept free in Dir's file system:
	// appends are refused (ErrStorageFull) while less is left, see
	// space.go. Default DefaultMinFreeBytes; negative: no reserve.
	MinFreeBytes int64 `yaml:"min_free_bytes"`
	// FreeBytes measures the free space of Dir's file system (tests give
	// their own). Default: statfs.
	FreeBytes func(dir string) (uint64, error) `yaml:"-"`
	// Companions name the files and folders the application keeps in Dir
	// beside the store (dev credentials, certificates): a folder holding
	// only those is taken as new, not refused as someone else's.
	Companions []string `yaml:"-"`
	// Durability defaults to SyncEachBatch.
	Durability Durability `yaml:"durability"`
	// Retention returns the retention for a channel. It is called by the
	// background trimmer and by Append (to skip storing payloads of channels
	// that keep nothing). Nil means DefaultRetention for every channel.
	Retention func(channel string) Retention
	// TrimInterval is how often the background trimmer runs. Default 30s.
	// (A configuration sets it with the channels' retention, as
	// history.trim_interval.)
	TrimInterval time.Duration
	// IdempotencyTTL is how long an idempotency key is remembered.
	// Default 24h.
	IdempotencyTTL time.Duration `yaml:"idempotency_window"`
	// MaxBatchRecords and MaxBatchBytes bound one group-commit batch.
	// Defaults 4096 records and 4 MiB.
	MaxBatchRecords int
	MaxBatchBytes   int
	// Memory bounds what Badger keeps in memory: the configuration file's
	// store: section.
	Memory Memory `yaml:"store"`
	// WALSegmentBytes is the size of a write-ahead log segment file
	// (SyncEachBatch on disk; see wal.go). Default 16 MiB, at least 64 KiB.
	// The log holds about two segments' worth of recent batches and up to
	// two spare segments.
	WALSegmentBytes int
	// Outbox names the outbox queues and routes stored records to them
	// (see Outbox). Default: none.
	Outbox Outbox `yaml:"-"`
	// Logger receives the store's and Badger's logs. Default slog.Default().
	Logger *slog.Logger
	// Now is the clock. Default time.Now.
	Now func() time.Time
}

// Memory bounds the memory Badger takes. A channel log is read mostly at
// its tail, whose keys the memtables hold (payloads are read from the
// value log, through the page cache; see valueThreshold); the block cache
// serves reads of older keys from tables. Badger keeps a memtable in a memory arena
// of about 1.3 times its size (plus, on disk, its log in a memory-mapped
// file), and up to MemTables+2 of them at once: the one being written,
// the one being flushed to a table, and up to MemTables waiting for it;
// a flush builds its table in memory of about the memtable's size.
// With the defaults Badger holds at most about 60 MiB, usually 30.
type Memory struct {
	// MemTableBytes is the size of a memtable. Default 8 MiB, at least
	// 8 MiB (Badger writes at most 15% of a memtable per transaction, and
	// one message must fit in a transaction). Larger memtables flush less
	// often, in bigger tables.
	MemTableBytes int `yaml:"memtable_bytes"`
	// MemTables is how many full memtables may wait to be flushed before
	// writes wait for the flush. Default 1.
	MemTables int `yaml:"memtables"`
	// BlockCacheBytes bounds the cache of table blocks read back. Default
	// 8 MiB.
	BlockCacheBytes int `yaml:"block_cache_bytes"`
}

// Record is one message to append.
type Record struct {
	// ID is the message id chosen by the caller. It is remembered with the
	// idempotency key so that a repeated key returns the first ID.
	ID string
	// Time is when the message was accepted; age-based retention uses it.
	Time time.Time
	// Payload is opaque to the store and stored as is.
	Payload []byte
	// IdempotencyKey, when not empty, makes the append idempotent per
	// channel for Options.IdempotencyTTL.
	IdempotencyKey string
	// Tag is not stored: it is handed back untouched in Committed by the
	// engine that appended the record, so the caller can attach live-only
	// data to the commit feed. Records appended elsewhere (another node of
	// a distributed engine) are reported with a nil Tag.
	Tag any
}

// Appended is the result of an Append.
type Appended struct {
	Offset uint64
	Epoch  string
	// ID is the record's ID, or the first record's ID on a duplicate.
	ID string
	// Duplicate is true when the idempotency key was seen before: nothing
	// was stored and Offset/Epoch/ID are those of the first append.
	Duplicate bool
}

// ChannelRecord is a record and the channel it goes to (AppendBatch).
type ChannelRecord struct {
	Channel string
	Record  Record
}

// BatchAppended is AppendBatch's answer for one record: its result, or
// why it was not stored.
type BatchAppended struct {
	Appended
	Err error
}

// Committed is one record made durable, as reported to the commit feed
// (Engine.Feed).
type Committed struct {
	Channel string
	Offset  uint64
	Epoch   string
	Record  Record
}

// Entry is one stored message read back.
type Entry struct {
	Offset uint64
	// Time is the record's Time, kept to the nanosecond by the Badger
	// store and to at least the millisecond by every engine.
	Time    time.Time
	Payload []byte
}

// Page is the result of a Read.
type Page struct {
	// Epoch is the channel's epoch ("" if the channel was never used).
	Epoch string
	// Head is the newest offset assigned (0 when none).
	Head uint64
	// First is the oldest offset still kept; Head+1 when nothing is kept.
	First uint64
	// Entries are in ascending offset order, all > the requested offset.
	Entries []Entry
	// Trimmed is true when messages right after the requested offset were
	// removed by retention, i.e. after+1 < First and after < Head.
	Trimmed bool
}

// Position is a channel's epoch and head offset.
type Position struct {
	Epoch string
	Head  uint64
}

// ChannelInfo describes one channel's log.
type ChannelInfo struct {
	Name  string
	Epoch string
	Head  uint64
	First uint64
}

// Errors a caller can test with errors.Is.
var (
	// ErrClosed is returned by every method after Close.
	ErrClosed = errors.New("store: closed")
	// ErrBadChannel is returned for an empty channel name, one longer than
	// 255 bytes, or one containing a NUL byte.
	ErrBadChannel = errors.New("store: bad channel name")
	// ErrTooLarge is returned for a record larger than MaxBatchBytes. A
	// record's size is len(Payload)+len(ID)+len(IdempotencyKey). An
	// InMemory store also refuses records over 1 MiB (less 17 bytes), the
	// largest value in-memory Badger keeps.
	ErrTooLarge = errors.New("store: record too large")
	// ErrUnavailable is returned by an engine that cannot reach its
	// storage for now (a NATS cluster electing a leader, a lost
	// connection): nothing was stored, and the call may be tried again.
	ErrUnavailable = errors.New("store: unavailable")
)
