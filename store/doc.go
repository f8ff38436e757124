// Package store defines Herald's storage contract, Engine, and implements
// it on Badger with Store.
//
// Engine is everything the channel core needs from storage: per-channel
// logs whose offsets start at 1 and grow by exactly 1 per record, each
// lifetime of a log named by an epoch; Append that answers only once a
// record is durable; Read, Head and Channels; the commit feed, which
// reports every stored record once, per channel in offset order, from one
// call at a time; idempotency keys; and small keyed state (grants, bans,
// last-seen times, the session key). Its doc comment states each guarantee
// as a second engine has to provide it, and store/storetest checks them: a
// new engine gives storetest.Run a Harness that opens it, and passes.
//
// The rest of this comment is about Store, the Badger engine. Its epoch is
// 12 lowercase hex characters from crypto/rand, stored with the head offset;
// it never changes while the Badger directory lives, and a lost or reset
// directory yields new epochs.
//
// # Durability
//
// With SyncEachBatch on disk (the default), a batch is committed by one
// frame in the store's write-ahead log (the wal directory beside Badger's
// files), made durable with one fdatasync; Badger is written without
// syncing, and is checkpointed (its unsynced files fsynced) before a log
// segment is reused. Open replays what the log holds onto Badger, so a
// batch whose frame reached the disk is in Badger after Open, whatever
// Badger kept of it through a crash or a power loss. wal.go explains the
// format and why this is safe. With NoSync nothing is synced and there is
// no log: Badger's writes reach the operating system at once and survive
// a process kill. A write to the log or to Badger that fails after it
// began leaves the store refusing writes until a restart.
//
// # Invariants
//
//   - A channel's head is written after its entries, in the same batch,
//     and replay restores whole batches, so after a crash (SIGKILL, power
//     loss with SyncEachBatch) the head found on reopen is the last entry
//     acknowledged or after it, never beyond the entries on disk, and a
//     new append continues at head+1.
//   - Append answers only once its record is committed (and its batch's
//     log frame fsynced with SyncEachBatch). An acknowledged offset is
//     never lost.
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
// and state changes are queued to one committer goroutine which takes
// every queued request (up to Options.MaxBatchRecords and
// Options.MaxBatchBytes), assigns offsets, writes the batch to the log and
// to Badger, publishes the new heads, answers the callers and then calls
// the commit feed's receiver (Feed), in that order. While a batch is being written and synced, new appends queue
// for the next one: there is no timer, so a lone append is written at once
// and a busy store pays one fsync per batch, not per record. The receiver
// is therefore called from that one goroutine, batch after batch, and sees
// each channel's records in ascending offset order; the next batch waits
// for it to return.
//
// Head of a known channel and Read take no Badger write path: Head is a
// memory read, Read is a Badger snapshot read bounded by the head it read
// first. A background trimmer owned by the Store applies retention in small
// transactions; it writes only the keys it deletes and a channel's "first"
// key, which the committer never writes, so the two never conflict. With
// the log, an applier goroutine writes each batch to Badger while the
// committer syncs the log, and a checkpointer retires full log segments.
//
// Close answers every append already queued (committing it), stops the
// trimmer and its other goroutines, closes Badger (which syncs it) and
// then empties the log. Every call made after Close returns ErrClosed.
package store
