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

	// maxBatchRecordsLimit and maxBatchBytesLimit cap one batch, because
	// Badger sizes its memtable (and so the store's memory) from them.
	maxBatchRecordsLimit = 1 << 16
	maxBatchBytesLimit   = 64 << 20

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
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	return o
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
// per transaction. Memory is kept modest because tests open many in-memory
// stores in parallel under -race, and a channel log is read mostly at its
// tail: the memtable is 32 MiB (Badger allocates its whole arena up front,
// 64 MiB by default), at most 3 memtables wait to be flushed, the block cache
// is 16 MiB and the index cache is off (indices stay in table memory). The
// memtable grows only when MaxBatchBytes needs it: Badger refuses a
// transaction larger than 15% of the memtable, and one batch is one
// transaction. Values up to 1 MiB stay in the LSM tree (Badger's default
// threshold), so a catch-up read is one sequential scan; larger ones go to
// value-log files of 64 MiB (or MaxBatchBytes plus 1 MiB, so that any record
// fits), which the trimmer's value-log GC can reclaim.
func (o Options) badgerOptions() badger.Options {
	dir := o.Dir
	if o.InMemory {
		dir = ""
	}
	bo := badger.DefaultOptions(dir).
		WithInMemory(o.InMemory).
		WithSyncWrites(false). // the write-ahead log or NoSync: see wal.go

		WithDetectConflicts(false).
		WithMemTableSize(memTableSize(o.MaxBatchBytes, o.MaxBatchRecords)).
		WithNumMemtables(3).
		WithBlockCacheSize(16 << 20).
		WithIndexCacheSize(0).
		WithNumCompactors(2).
		WithValueLogFileSize(max(64<<20, int64(o.MaxBatchBytes)+1<<20)).
		WithMetricsEnabled(false).
		WithLogger(badgerLogger{log: o.Logger.With("component", "badger")})
	if o.InMemory {
		// Tables never reach a disk: compressing them only burns CPU.
		bo = bo.WithCompression(badgeropts.None)
	}
	return bo
}

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

// skiplistNodeSize is Badger's skl.MaxNodeSize on 64-bit platforms: Badger
// allows (15% of the memtable)/skiplistNodeSize entries per transaction.
const skiplistNodeSize = 96

// memTableSize returns a memtable size, a whole number of MiB and at least
// 32 MiB, whose Badger transaction limits (15% of it, in bytes and in
// entries) hold one full batch. A batch's cost, as counted by Badger, is at
// most maxBytes (see request.cost), or one record of maxBytes plus its keys;
// it has at most three entries (log, idempotency, head) per record.
func memTableSize(maxBytes, maxRecords int) int64 {
	const mib = 1 << 20
	need := int64(maxBytes) + 256<<10
	if byCount := int64(3*maxRecords+16) * skiplistNodeSize; byCount > need {
		need = byCount
	}
	size := need * 100 / 15
	size = (size + mib - 1) / mib * mib
	return max(size, 32*mib)
}

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
