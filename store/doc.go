// Package store keeps Herald's durable channel logs on Badger.
//
// Every channel has a log of records numbered by offset. Offsets start at 1
// and grow by exactly 1 per appended record, with no gap and no reuse, for
// the whole lifetime of the channel's epoch. The epoch (12 lowercase hex
// characters from crypto/rand) is created the first time a channel is used,
// by Head or Append, is stored with the head offset, and never changes while
// the Badger directory lives; a lost or reset directory yields new epochs, so
// old offsets are never mistaken for new ones.
//
// # Invariants
//
//   - A channel's head offset and the entries up to it are written in one
//     Badger transaction, so after a crash (SIGKILL, power loss with
//     SyncEachBatch) the head found on reopen is exactly the last entry on
//     disk and a new append continues at head+1.
//   - Append answers only once its record is committed (and fsynced with
//     SyncEachBatch). An acknowledged offset is never lost.
//   - Entries kept for a channel are the contiguous range [First, Head].
//     Retention only ever removes the oldest entries, raising First.
//   - Read never returns an entry beyond the Head it reports, and reports
//     Trimmed when the entries right after the requested offset are gone.
//   - A repeated idempotency key, within Options.IdempotencyTTL and on the
//     same channel, returns the first append's result and stores nothing.
//
// # Concurrency
//
// A *Store is safe for concurrent use by any number of goroutines. Appends
// are queued to one committer goroutine which takes every queued append
// (up to Options.MaxBatchRecords and Options.MaxBatchBytes), assigns offsets,
// writes the batch in one Badger transaction, answers the callers and then
// calls Options.OnCommit, in that order. While a batch is being written and
// synced, new appends queue for the next one: there is no timer, so a lone
// append is written at once and a busy store pays one fsync per batch, not
// per record. OnCommit is therefore called from a single goroutine, batch
// after batch, and sees each channel's records in ascending offset order.
//
// Head of a known channel and Read take no Badger write path: Head is a
// memory read, Read is a Badger snapshot read bounded by the head it read
// first. A background trimmer owned by the Store applies retention in small
// transactions; it writes only the keys it deletes and a channel's "first"
// key, which the committer never writes, so the two never conflict.
//
// Close answers every append already queued (committing it), stops the
// trimmer and closes Badger. Every call made after Close returns ErrClosed.
package store
