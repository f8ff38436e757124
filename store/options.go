package store

import (
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/dgraph-io/badger/v4"
	badgeropts "github.com/dgraph-io/badger/v4/options"
)

// Defaults and limits of Options. They live here only; the field docs in
// types.go repeat the defaults for readers.
const (
	defaultTrimInterval    = 30 * time.Second
	defaultIdempotencyTTL  = 24 * time.Hour
	defaultMaxBatchRecords = 4096
	defaultMaxBatchBytes   = 4 << 20

	// maxBatchRecordsLimit and maxBatchBytesLimit cap one batch: it is
	// encoded in memory, as one log frame.
	maxBatchRecordsLimit = 1 << 16
	maxBatchBytesLimit   = 64 << 20

	defaultMemTableBytes   = 8 << 20
	minMemTableBytes       = 8 << 20
	defaultMemTables       = 1
	defaultBlockCacheBytes = 8 << 20

	// defaultReadLimit is the page size of a Read or Channels call with a
	// limit <= 0, and maxReadLimit caps a larger one.
	defaultReadLimit = 1000
	maxReadLimit     = 100_000
)

// withDefaults returns o with every zero field set to its default.
func (o Options) withDefaults() Options {
	if o.Retention == nil {
		o.Retention = func(string) Retention { return DefaultRetention }
	}
	if o.TrimInterval == 0 {
		o.TrimInterval = defaultTrimInterval
	}
	if o.IdempotencyTTL == 0 {
		o.IdempotencyTTL = defaultIdempotencyTTL
	}
	if o.MaxBatchRecords == 0 {
		o.MaxBatchRecords = defaultMaxBatchRecords
	}
	if o.MaxBatchBytes == 0 {
		o.MaxBatchBytes = defaultMaxBatchBytes
	}
	if o.WALSegmentBytes == 0 {
		o.WALSegmentBytes = defaultWALSegmentBytes
	}
	o.Memory = o.Memory.withDefaults()
	if o.MinFreeBytes == 0 {
		o.MinFreeBytes = DefaultMinFreeBytes
	}
	if o.FreeBytes == nil {
		o.FreeBytes = diskFree
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	return o
}

func (m Memory) withDefaults() Memory {
	if m.MemTableBytes == 0 {
		m.MemTableBytes = defaultMemTableBytes
	}
	if m.MemTables == 0 {
		m.MemTables = defaultMemTables
	}
	if m.BlockCacheBytes == 0 {
		m.BlockCacheBytes = defaultBlockCacheBytes
	}
	return m
}

// SettingError is a problem with one setting of the configuration file,
// named by its key (it has the ConfigKeys method the configuration loader
// looks for, to show where the value came from).
type SettingError struct {
	Key string
	Err error
}

func (e *SettingError) Error() string { return e.Err.Error() }
func (e *SettingError) Unwrap() error { return e.Err }

// ConfigKeys names the setting.
func (e *SettingError) ConfigKeys() []string { return []string{e.Key} }

// Validate reports every problem of the settings the configuration file
// sets (after defaults), each a *SettingError, so that the binary can
// check its whole configuration before it opens the store.
func (o Options) Validate() error {
	m := o.Memory.withDefaults()
	var errs []error
	bad := func(key, format string, args ...any) {
		errs = append(errs, &SettingError{Key: key, Err: fmt.Errorf(format, args...)})
	}
	if m.MemTableBytes < minMemTableBytes {
		bad("store.memtable_bytes", "store.memtable_bytes %d: want at least %d (8 MiB), so that one message fits in a Badger transaction", m.MemTableBytes, minMemTableBytes)
	}
	if m.MemTables < 1 {
		bad("store.memtables", "store.memtables %d: want at least 1", m.MemTables)
	}
	if m.BlockCacheBytes < 0 {
		bad("store.block_cache_bytes", "store.block_cache_bytes %d: must not be negative", m.BlockCacheBytes)
	}
	return errors.Join(errs...)
}

// validate reports every invalid field of o (after withDefaults) at once.
func (o Options) validate() error {
	var errs []error
	if o.Dir == "" && !o.InMemory {
		errs = append(errs, errors.New("dir is required unless in-memory"))
	}
	if o.Durability != SyncEachBatch && o.Durability != NoSync {
		errs = append(errs, fmt.Errorf("durability %d: want sync or none", int(o.Durability)))
	}
	if o.TrimInterval < 0 {
		errs = append(errs, fmt.Errorf("trim interval %v is negative", o.TrimInterval))
	}
	if o.IdempotencyTTL < 0 {
		errs = append(errs, fmt.Errorf("idempotency ttl %v is negative", o.IdempotencyTTL))
	}
	if o.MaxBatchRecords < 0 || o.MaxBatchRecords > maxBatchRecordsLimit {
		errs = append(errs, fmt.Errorf("max batch records %d: want 1 to %d", o.MaxBatchRecords, maxBatchRecordsLimit))
	}
	if o.MaxBatchBytes < 0 || o.MaxBatchBytes > maxBatchBytesLimit {
		errs = append(errs, fmt.Errorf("max batch bytes %d: want 1 to %d", o.MaxBatchBytes, maxBatchBytesLimit))
	}
	if err := o.Validate(); err != nil {
		errs = append(errs, err)
	}
	if err := o.Outbox.validate(); err != nil {
		errs = append(errs, err)
	}
	if o.WALSegmentBytes < minWALSegmentBytes {
		errs = append(errs, fmt.Errorf("write-ahead log segment of %d bytes: want at least %d", o.WALSegmentBytes, minWALSegmentBytes))
	}
	if len(errs) > 0 {
		return fmt.Errorf("store: invalid options: %w", errors.Join(errs...))
	}
	return nil
}

// badgerOptions derives Badger's options from o.
//
// Herald has one writer (the committer) plus a trimmer that writes disjoint
// keys, so conflict detection is off: it would only cost a map of read keys
// per transaction. Badger never syncs: the write-ahead log makes batches
// durable (wal.go). Memory is bounded by o.Memory (see Memory); the index
// cache is off (indices stay in table memory). Badger builds each table in
// memory and keeps up to eight of its table builders' buffers for reuse,
// each as large as the largest table it built: tables of 512 KiB (not
// 2 MiB) and no compression (a compressed copy of every block, in the
// same buffers) keep those small. Measured under sustained publishing,
// compression doubled the store's heap; without it, tables take more
// disk, which retention bounds. On disk, values over valueThreshold (a
// message's payload) go to value-log files of 64 MiB (or MaxBatchBytes
// plus 1 MiB, so that any record fits), which the trimmer's value-log GC
// reclaims; see valueThreshold. In memory, Badger keeps every value in
// its LSM tree.
func (o Options) badgerOptions() badger.Options {
	dir := o.Dir
	if o.InMemory {
		dir = ""
	}
	bo := badger.DefaultOptions(dir).
		WithInMemory(o.InMemory).
		WithSyncWrites(false).
		WithDetectConflicts(false).
		WithMemTableSize(int64(o.Memory.MemTableBytes)).
		WithNumMemtables(o.Memory.MemTables).
		WithBlockCacheSize(int64(o.Memory.BlockCacheBytes)).
		WithIndexCacheSize(0).
		WithNumCompactors(2).
		WithBaseTableSize(512 << 10).
		WithValueLogFileSize(max(64<<20, int64(o.MaxBatchBytes)+1<<20)).
		WithMetricsEnabled(false).
		WithCompression(badgeropts.None).
		WithLogger(badgerLogger{log: o.Logger.With("component", "badger")})
	if !o.InMemory {
		bo = bo.WithValueThreshold(valueThreshold)
	}
	return bo
}

// valueThreshold is the largest value Badger keeps in its LSM tree on
// disk; larger ones (message payloads, with their header) are appended to
// its value log and the tree keeps a pointer. Why: with payloads in the
// tree, every message was copied again by each memtable flush and each
// compaction (with a 3 MiB index buffer allocated per table built), which
// took two thirds of the server's CPU under batched publishing; with
// them in the value log, a message is written once there and the tree
// moves only keys and pointers. Measured on the development machine
// (batches of 100 to 100 channels, server on one core): 35–46k to 68–74k
// durable messages/s, and a third less peak memory when publishing
// one at a time. What it costs: a trimmed message's payload stays on disk
// until value-log GC (run by the trimmer, a few files each trim interval)
// rewrites its file, so disk use trails retention by up to a few
// value-log files; and a history read fetches each payload from the value
// log (a file read from the page cache for recent messages) instead of
// the tree's block. It changes nothing about durability: the write-ahead
// log holds every batch until a checkpoint has synced Badger's value log
// with its memtable logs (checkpoint.go).
const valueThreshold = 64

// inMemoryMaxValue is the largest value an in-memory Badger accepts: it
// keeps every value in the LSM tree and caps them at its 1 MiB value
// threshold.
const inMemoryMaxValue = 1 << 20

// maxRecordBytes is the largest record (payload, ID and idempotency key)
// Append accepts: MaxBatchBytes, or less in memory, where the stored value
// (payload or ID plus a small header) must fit in inMemoryMaxValue.
func (o Options) maxRecordBytes() int {
	if o.InMemory {
		return min(o.MaxBatchBytes, inMemoryMaxValue-idemValueHeaderLen)
	}
	return o.MaxBatchBytes
}

// batchEntryOverhead is what Badger counts per entry on top of key and value
// (meta bytes and the 8-byte version), rounded up. See Txn.checkSize.
const batchEntryOverhead = 16

// badgerLogger routes Badger's warnings and errors to slog. Badger's info
// and debug lines (compaction and flush chatter) are dropped.
type badgerLogger struct{ log *slog.Logger }

func (l badgerLogger) Errorf(format string, args ...any) {
	l.log.Error(strings.TrimSpace(fmt.Sprintf(format, args...)))
}

func (l badgerLogger) Warningf(format string, args ...any) {
	l.log.Warn(strings.TrimSpace(fmt.Sprintf(format, args...)))
}

func (badgerLogger) Infof(string, ...any)  {}
func (badgerLogger) Debugf(string, ...any) {}
