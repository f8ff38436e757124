package store

import (
	"cmp"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math/bits"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/dgraph-io/badger/v4"
)

// The outbox: durable queues of entries written in the same commit as the
// records they report. Outbound webhooks are built on it: a stored message
// is never missing its webhook entry, and no entry reports a message that
// was not stored, whatever moment a crash picks — the entry and the record
// are in one group-commit batch, one write-ahead log frame, replayed
// together.
//
// Every entry gets a sequence number from one counter for all queues, in
// commit order. The entries a commit batch adds — its routed records and
// what Enqueue and Revive queue — are written as one chunk: one Badger
// write per batch, however many records and queues, each record with the
// set of queues that take it. A routed record is not copied: its entry
// refers to its log entry, which the trimmer keeps while a chunk refers
// to it (outboxPin); only a channel whose retention keeps nothing has its
// payloads copied into the chunk. Each queue keeps a durable cursor
// (every entry of the queue below it is done) and, in memory, the
// sequence numbers it still holds, rebuilt at Open from the chunks; a
// chunk is deleted once every queue is done with every entry in it.
// Entries are read in sequence order, removed once delivered, or moved to
// the queue's dead letters (a full copy) with a reason. Additions, dead
// letters and revivals go through the group committer (and so the
// write-ahead log); removals do not wait for a sync (see Remove).

// Outbox configures the store's outbox queues (Options.Outbox). The zero
// value has none.
type Outbox struct {
	// Queues names the queues, at most 64; a name is 1 to 255 bytes. A
	// queue's entries are kept across restarts under its name, whatever
	// its place in the list.
	Queues []string
	// Route returns the queues that get an entry for rec, just stored in
	// channel: bit i set for Queues[i]. It is called on the committer
	// goroutine for every stored record (not for duplicates), so it must
	// be quick and must not call the store. Nil routes no record.
	Route func(channel string, rec *Record) uint64
	// Notify is called after a commit that added entries, with the queues
	// that got some (bit i for Queues[i]). It runs on the committer
	// goroutine: it must return at once (signal a channel, never wait).
	Notify func(queues uint64)
}

// maxOutboxQueues is how many queues Outbox.Queues may name: one bit each.
const maxOutboxQueues = 64

func (o Outbox) validate() error {
	if len(o.Queues) > maxOutboxQueues {
		return fmt.Errorf("outbox: %d queues, at most %d", len(o.Queues), maxOutboxQueues)
	}
	seen := make(map[string]bool, len(o.Queues))
	for _, q := range o.Queues {
		if q == "" || len(q) > maxChannelLen {
			return fmt.Errorf("outbox: queue name %q: want 1 to %d bytes", q, maxChannelLen)
		}
		if seen[q] {
			return fmt.Errorf("outbox: queue %q named twice", q)
		}
		seen[q] = true
	}
	return nil
}

// OutboxEntry is one queued entry: a stored record (Channel, Offset and
// Epoch set) or something queued with Enqueue (Channel may be empty).
type OutboxEntry struct {
	// Seq is the entry's place in its queue, in commit order: ascending,
	// not contiguous (one counter numbers the entries of every queue).
	Seq uint64
	// Time is the record's time, or the time given to Enqueue.
	Time    time.Time
	Channel string
	Offset  uint64
	Epoch   string
	// Payload is the record's payload or the enqueued bytes. A record's
	// is read from its channel's log, which keeps it past the channel's
	// retention while the entry is queued (or, for a channel that keeps
	// nothing, from a copy made with the entry).
	Payload []byte
}

// DeadEntry is an entry moved to its queue's dead letters.
type DeadEntry struct {
	OutboxEntry
	// Died is when it was moved, and Reason why.
	Died   time.Time
	Reason string
}

// ErrNoQueue is returned for a queue name Options.Outbox does not list.
var ErrNoQueue = errors.New("store: no such outbox queue")

// outboxQueue is one queue: its counters, and (under outboxes.mu) the
// entries it holds.
type outboxQueue struct {
	name  string
	bit   uint // its bit in entries' keys, kept across restarts
	depth atomic.Int64
	dead  atomic.Int64

	// Guarded by outboxes.mu.
	pending []uint64        // sequences held, ascending, from pending[front]
	front   int             // index of the oldest held
	done    map[uint64]bool // held sequences removed or buried, not yet at the front
	cursor  uint64          // every entry of the queue below it is done (durable)
}

// holds reports whether q holds seq and is not done with it.
func (q *outboxQueue) holds(seq uint64) bool {
	live := q.pending[q.front:]
	i, found := slices.BinarySearch(live, seq)
	return found && i >= 0 && !q.done[seq]
}

// finish marks seqs done and drops the done ones from the front. It
// returns the sequences dropped, whose entries may go.
func (q *outboxQueue) finish(seqs []uint64) (marked int, dropped []uint64) {
	for _, seq := range seqs {
		if q.holds(seq) {
			q.done[seq] = true
			marked++
		}
	}
	for q.front < len(q.pending) && q.done[q.pending[q.front]] {
		seq := q.pending[q.front]
		delete(q.done, seq)
		dropped = append(dropped, seq)
		q.front++
		q.cursor = seq + 1
	}
	if q.front > 1024 && q.front > len(q.pending)/2 {
		q.pending = append(q.pending[:0], q.pending[q.front:]...)
		q.front = 0
	}
	return marked, dropped
}

// outboxes is the store's set of queues.
type outboxes struct {
	cfg    Outbox
	queues []*outboxQueue // in the order of Outbox.Queues
	index  map[string]int
	// next is the last sequence assigned (committer only). A revived
	// entry gets a new one; a buried one keeps its.
	next uint64

	mu sync.Mutex // guards chunks, starts and the queues' entries
	// chunks are the stored chunks by first sequence, each with how many
	// (queue, entry) pairs are not done; starts lists their first
	// sequences, ascending (with some of deleted chunks, dropped lazily).
	chunks map[uint64]*chunk
	starts []uint64
	// pins are, per channel, the chunks referring to its log entries,
	// oldest first, with the lowest offset each refers to (outboxPin).
	pins map[string][]pin
}

// chunk is a stored chunk: its entries are first … first+n-1.
type chunk struct {
	n    int
	held int // (queue, entry) pairs not done
}

// pin is a chunk's lowest offset referred to in a channel: the channel's
// log keeps it and what follows while the chunk is stored.
type pin struct {
	first  uint64 // the chunk
	offset uint64
}

// addPins records the lowest offset per channel that a chunk's entries
// refer to. Called with outboxes.mu held, in commit order.
func (o *outboxes) addPins(first uint64, entries []chunkEntry) {
	for i := range entries {
		if !entries[i].ref {
			continue
		}
		e := &entries[i].e
		ps := o.pins[e.Channel]
		if n := len(ps); n > 0 && ps[n-1].first == first {
			continue // this chunk's lowest offset in the channel is recorded
		}
		o.pins[e.Channel] = append(ps, pin{first: first, offset: e.Offset})
	}
}

// outboxPin returns the lowest offset of channel an entry still queued
// refers to, or 0: the trimmer keeps it and every later one. A channel's
// offsets grow with the chunks' sequences, so it is the offset of the
// oldest stored chunk that refers to the channel.
func (s *Store) outboxPin(channel string) uint64 {
	o := &s.outbox
	o.mu.Lock()
	defer o.mu.Unlock()
	ps := o.pins[channel]
	for len(ps) > 0 {
		if _, stored := o.chunks[ps[0].first]; stored {
			o.pins[channel] = ps
			return ps[0].offset
		}
		ps = ps[1:]
	}
	delete(o.pins, channel)
	return 0
}

// chunkOf returns the first sequence of the chunk holding seq. Called
// with outboxes.mu held.
func (o *outboxes) chunkOf(seq uint64) (uint64, *chunk) {
	i, found := slices.BinarySearch(o.starts, seq)
	if !found {
		i--
	}
	for ; i >= 0; i-- {
		if c, ok := o.chunks[o.starts[i]]; ok {
			if seq < o.starts[i]+uint64(c.n) {
				return o.starts[i], c
			}
			return 0, nil
		}
	}
	return 0, nil
}

// outboxOp is an outbox change queued for the committer.
type outboxOp struct {
	queue  int
	add    []OutboxEntry // new entries; the committer assigns Seq
	bury   []OutboxEntry // entries moved to dead letters, with reason
	reason string
	revive []DeadEntry // dead letters queued again as new entries
}

// Keys:
//
//	'p' first(8)                a chunk of entries first, first+1, …
//	'q' len(queue) queue        a queue's bit and cursor
//	'x' len(queue) queue seq(8) a dead letter (a full copy)
const (
	kindChunk byte = 'p'
	kindQueue byte = 'q'
	kindDead  byte = 'x'
)

func chunkKey(first uint64) []byte {
	return binary.BigEndian.AppendUint64([]byte{kindChunk}, first)
}

// chunkEntry is an entry of a chunk being written or read: its queues
// (bits of the queues' persisted bits) and its entry.
type chunkEntry struct {
	bits uint64
	e    OutboxEntry
	ref  bool // the payload is the record's log entry (refValue)
}

// A chunk's value: format, count(4), then per entry its queue bits(8)
// and outboxValue without the format byte, prefixed by its length(4).
func chunkValue(entries []chunkEntry) []byte {
	n := 5
	for i := range entries {
		e := &entries[i].e
		n += 12 + 19 + len(e.Channel) + len(e.Epoch) + len(e.Payload)
	}
	v := make([]byte, 0, n)
	v = append(v, valueFormat)
	v = binary.BigEndian.AppendUint32(v, uint32(len(entries)))
	for i := range entries {
		e := &entries[i].e
		v = binary.BigEndian.AppendUint64(v, entries[i].bits)
		if entries[i].ref {
			v = binary.BigEndian.AppendUint32(v, uint32(19+len(e.Channel)+len(e.Epoch)))
			v = refValue(v, e)
			continue
		}
		v = binary.BigEndian.AppendUint32(v, uint32(19+len(e.Channel)+len(e.Epoch)+len(e.Payload)))
		v = outboxValue(v, e)
	}
	return v
}

// parseChunk calls fn with each entry of a chunk whose first sequence is
// first, until fn returns false. The entries' payloads alias v only
// through fn's call: parseOutboxValue copies them.
func parseChunk(first uint64, v []byte, fn func(seq, bits uint64, raw []byte) bool) error {
	if len(v) < 5 || v[0] != valueFormat {
		return errBadValue
	}
	n := binary.BigEndian.Uint32(v[1:5])
	rest := v[5:]
	for i := range uint64(n) {
		if len(rest) < 12 {
			return errBadValue
		}
		bits, size := binary.BigEndian.Uint64(rest), int(binary.BigEndian.Uint32(rest[8:12]))
		if len(rest) < 12+size {
			return errBadValue
		}
		if !fn(first+i, bits, rest[12:12+size]) {
			return nil
		}
		rest = rest[12+size:]
	}
	return nil
}

func queueKey(name string) []byte {
	return append([]byte{kindQueue, byte(len(name))}, name...)
}

func queueValue(bit uint, cursor uint64) []byte {
	return binary.BigEndian.AppendUint64([]byte{valueFormat, byte(bit)}, cursor)
}

func parseQueueValue(v []byte) (bit uint, cursor uint64, err error) {
	if len(v) != 10 || v[0] != valueFormat || v[1] >= maxOutboxQueues {
		return 0, 0, errBadValue
	}
	return uint(v[1]), binary.BigEndian.Uint64(v[2:]), nil
}

func deadPrefix(queue string) []byte {
	p := make([]byte, 0, 2+len(queue)+8)
	p = append(p, kindDead, byte(len(queue)))
	return append(p, queue...)
}

func deadKey(queue string, seq uint64) []byte {
	return binary.BigEndian.AppendUint64(deadPrefix(queue), seq)
}

// outboxValue encodes an entry: format, time, offset, channel, epoch,
// payload.
func outboxValue(dst []byte, e *OutboxEntry) []byte {
	dst = append(dst, valueFormat)
	dst = binary.BigEndian.AppendUint64(dst, uint64(e.Time.UnixNano()))
	dst = binary.BigEndian.AppendUint64(dst, e.Offset)
	dst = append(dst, byte(len(e.Channel)))
	dst = append(dst, e.Channel...)
	dst = append(dst, byte(len(e.Epoch)))
	dst = append(dst, e.Epoch...)
	return append(dst, e.Payload...)
}

// refFormat marks an entry whose payload is its record's log entry, not
// a copy: the channel's log keeps it (the trimmer leaves it, see
// outboxPin) for as long as the entry is queued.
const refFormat byte = 2

// refValue appends an entry that refers to its record's log entry.
func refValue(dst []byte, e *OutboxEntry) []byte {
	start := len(dst)
	dst = outboxValue(dst, &OutboxEntry{Time: e.Time, Offset: e.Offset, Channel: e.Channel, Epoch: e.Epoch})
	dst[start] = refFormat
	return dst
}

// isRef reports whether an encoded entry refers to its log entry.
func isRef(v []byte) bool { return len(v) > 0 && v[0] == refFormat }

func parseOutboxValue(seq uint64, v []byte) (OutboxEntry, error) {
	if len(v) < 19 || (v[0] != valueFormat && v[0] != refFormat) {
		return OutboxEntry{}, errBadValue
	}
	e := OutboxEntry{Seq: seq, Time: time.Unix(0, int64(binary.BigEndian.Uint64(v[1:9]))),
		Offset: binary.BigEndian.Uint64(v[9:17])}
	rest := v[17:]
	n := int(rest[0])
	if len(rest) < 1+n+1 {
		return OutboxEntry{}, errBadValue
	}
	e.Channel, rest = string(rest[1:1+n]), rest[1+n:]
	n = int(rest[0])
	if len(rest) < 1+n {
		return OutboxEntry{}, errBadValue
	}
	e.Epoch = string(rest[1 : 1+n])
	e.Payload = append([]byte(nil), rest[1+n:]...)
	return e, nil
}

// deadValue encodes a dead letter: format, when it died, the reason's
// length (2 bytes) and text, then the entry's value.
func deadValue(e *OutboxEntry, died time.Time, reason string) []byte {
	if len(reason) > 1<<16-1 {
		reason = reason[:1<<16-1]
	}
	v := make([]byte, 0, 11+len(reason)+19+len(e.Channel)+len(e.Epoch)+len(e.Payload))
	v = append(v, valueFormat)
	v = binary.BigEndian.AppendUint64(v, uint64(died.UnixNano()))
	v = binary.BigEndian.AppendUint16(v, uint16(len(reason)))
	v = append(v, reason...)
	return outboxValue(v, e)
}

func parseDeadValue(seq uint64, v []byte) (DeadEntry, error) {
	if len(v) < 11 || v[0] != valueFormat {
		return DeadEntry{}, errBadValue
	}
	died := time.Unix(0, int64(binary.BigEndian.Uint64(v[1:9])))
	n := int(binary.BigEndian.Uint16(v[9:11]))
	if len(v) < 11+n {
		return DeadEntry{}, errBadValue
	}
	e, err := parseOutboxValue(seq, v[11+n:])
	if err != nil {
		return DeadEntry{}, err
	}
	return DeadEntry{OutboxEntry: e, Died: died, Reason: string(v[11 : 11+n])}, nil
}

// openOutbox loads the queues: their bits and cursors ('q' keys; a new
// queue gets a free bit and starts after the last entry, a queue no
// longer configured is dropped), the entries each holds (from the
// chunks), their dead letters' count, and the last sequence. Chunks no
// queue holds anything of are deleted. Called by
// Open after the write-ahead log's replay, before the committer starts.
func (s *Store) openOutbox() error {
	s.outbox = outboxes{cfg: s.opts.Outbox, index: make(map[string]int, len(s.opts.Outbox.Queues)),
		chunks: make(map[uint64]*chunk), pins: make(map[string][]pin)}
	type known struct {
		bit    uint
		cursor uint64
	}
	saved := map[string]known{}
	var ops []kvOp
	err := s.db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: []byte{kindQueue}, PrefetchValues: true})
		defer it.Close()
		for it.Seek([]byte{kindQueue}); it.ValidForPrefix([]byte{kindQueue}); it.Next() {
			v, err := it.Item().ValueCopy(nil)
			if err != nil {
				return err
			}
			bit, cursor, err := parseQueueValue(v)
			if err != nil {
				return fmt.Errorf("queue %q: %w", it.Item().Key()[2:], err)
			}
			saved[string(it.Item().Key()[2:])] = known{bit, cursor}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("store: open the outbox: %w", err)
	}
	var used uint64
	for _, name := range s.opts.Outbox.Queues {
		if k, ok := saved[name]; ok {
			used |= 1 << k.bit
		}
	}
	for name := range saved {
		if !slices.Contains(s.opts.Outbox.Queues, name) {
			ops = append(ops, kvOp{key: queueKey(name), del: true})
			s.opts.Logger.Warn("store: an outbox queue is no longer configured; its entries are dropped", "queue", name)
		}
	}
	var fresh []*outboxQueue
	for i, name := range s.opts.Outbox.Queues {
		q := &outboxQueue{name: name, done: map[uint64]bool{}}
		if k, ok := saved[name]; ok {
			q.bit, q.cursor = k.bit, k.cursor
		} else {
			q.bit = uint(bits.TrailingZeros64(^used))
			used |= 1 << q.bit
			fresh = append(fresh, q)
		}
		s.outbox.queues = append(s.outbox.queues, q)
		s.outbox.index[name] = i
	}
	byBit := [maxOutboxQueues]*outboxQueue{}
	for _, q := range s.outbox.queues {
		byBit[q.bit] = q
	}
	stored := s.storedCheck()
	err = s.db.View(func(txn *badger.Txn) error {
		for _, q := range s.outbox.queues {
			n, last := countKeys(txn, deadPrefix(q.name))
			q.dead.Store(n)
			s.outbox.next = max(s.outbox.next, last) // never reuse a buried entry's sequence
		}
		it := txn.NewIterator(badger.IteratorOptions{Prefix: []byte{kindChunk}, PrefetchValues: true})
		defer it.Close()
		for it.Seek([]byte{kindChunk}); it.ValidForPrefix([]byte{kindChunk}); it.Next() {
			item := it.Item()
			if len(item.Key()) != 9 {
				continue
			}
			first := binary.BigEndian.Uint64(item.Key()[1:])
			c := &chunk{}
			var refs []chunkEntry
			var perr error
			err := item.Value(func(v []byte) error {
				return parseChunk(first, v, func(seq, mask uint64, raw []byte) bool {
					c.n++
					s.outbox.next = max(s.outbox.next, seq)
					if isRef(raw) {
						e, err := parseOutboxValue(seq, raw)
						if err != nil {
							perr = err
							return false
						}
						refs = append(refs, chunkEntry{e: e, ref: true})
					}
					if stored != nil {
						e, err := parseOutboxValue(seq, raw)
						if err != nil {
							perr = err
							return false
						}
						if ok, err := stored(txn, &e); err != nil || !ok {
							perr = err
							return err == nil
						}
					}
					for m := mask; m != 0; m &= m - 1 {
						q := byBit[bits.TrailingZeros64(m)]
						if q == nil || seq < q.cursor || slices.Contains(fresh, q) {
							continue
						}
						q.pending = append(q.pending, seq)
						c.held++
					}
					return true
				})
			})
			if err == nil {
				err = perr
			}
			if err != nil {
				return fmt.Errorf("chunk %d: %w", first, err)
			}
			if c.held == 0 {
				ops = append(ops, kvOp{key: item.KeyCopy(nil), del: true})
				continue
			}
			s.outbox.chunks[first] = c
			s.outbox.starts = append(s.outbox.starts, first)
			s.outbox.addPins(first, refs)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("store: open the outbox: %w", err)
	}
	for _, q := range fresh {
		q.cursor = s.outbox.next + 1
		ops = append(ops, kvOp{key: queueKey(q.name), value: queueValue(q.bit, q.cursor)})
	}
	for _, q := range s.outbox.queues {
		q.depth.Store(int64(len(q.pending)))
	}
	if len(ops) == 0 {
		return nil
	}
	return s.apply(ops)
}

// countKeys counts the keys under prefix, reading no value, and returns
// the sequence ending the last.
func countKeys(txn *badger.Txn, prefix []byte) (n int64, last uint64) {
	it := txn.NewIterator(badger.IteratorOptions{Prefix: prefix})
	defer it.Close()
	for it.Seek(prefix); it.ValidForPrefix(prefix); it.Next() {
		n++
		if key := it.Item().Key(); len(key) >= len(prefix)+8 {
			last = binary.BigEndian.Uint64(key[len(key)-8:])
		}
	}
	return n, last
}

// storedCheck returns, for a store without the write-ahead log (NoSync
// on disk), a check that an entry's record is stored; nil otherwise.
// Without the log a batch too large for one Badger transaction is
// applied in several, its chunk before its heads, so a crash between them
// can leave a chunk with records whose head was not written: those
// records are not stored (never acknowledged; their offsets are given
// again), so their entries are not queued.
func (s *Store) storedCheck() func(*badger.Txn, *OutboxEntry) (bool, error) {
	if s.opts.Durability != NoSync || s.opts.InMemory {
		return nil
	}
	heads := map[string]Position{}
	return func(txn *badger.Txn, e *OutboxEntry) (bool, error) {
		if e.Channel == "" || e.Offset == 0 {
			return true, nil // queued by Enqueue: no record
		}
		pos, ok := heads[e.Channel]
		if !ok {
			item, err := txn.Get(headKey(e.Channel))
			if err == nil {
				err = item.Value(func(b []byte) error {
					var perr error
					pos.Head, pos.Epoch, perr = parseHeadValue(b)
					return perr
				})
			}
			if err != nil && !errors.Is(err, badger.ErrKeyNotFound) {
				return false, err
			}
			heads[e.Channel] = pos
		}
		return e.Offset <= pos.Head && e.Epoch == pos.Epoch, nil
	}
}

// queueIndex returns the index of the queue named name.
func (s *Store) queueIndex(name string) (int, error) {
	i, ok := s.outbox.index[name]
	if !ok {
		return 0, fmt.Errorf("%w: %q", ErrNoQueue, name)
	}
	return i, nil
}

// Enqueue adds entries to the queue, in order, and returns once they are
// durable. Each entry's Seq is assigned (the one given is ignored); Time
// defaults to the store's clock.
func (s *Store) Enqueue(ctx context.Context, queue string, entries []OutboxEntry) error {
	q, err := s.queueIndex(queue)
	if err != nil {
		return err
	}
	now := s.opts.Now()
	add := make([]OutboxEntry, len(entries))
	for i, e := range entries {
		if err := checkEntry(&e); err != nil {
			return err
		}
		if e.Time.IsZero() {
			e.Time = now
		}
		add[i] = e
	}
	return s.submitOutbox(ctx, outboxOp{queue: q, add: add})
}

func checkEntry(e *OutboxEntry) error {
	if len(e.Channel) > maxChannelLen || len(e.Epoch) > 255 {
		return fmt.Errorf("store: outbox entry: channel or epoch over 255 bytes: %w", ErrBadChannel)
	}
	return nil
}

// Remove marks delivered entries of the queue done, and deletes the
// entries no queue holds any more. It writes Badger at once, without the
// write-ahead log and without waiting for a sync: a delivery is
// acknowledged by the endpoint, not by the disk, so waiting would only
// slow deliveries down. After a crash, entries removed just before it may
// come back (the queue's cursor, or the write-ahead log's replay, is a
// little behind) and be delivered again — at least once, never lost.
// Removing an entry the queue does not hold does nothing.
func (s *Store) Remove(ctx context.Context, queue string, seqs []uint64) error {
	qi, err := s.queueIndex(queue)
	if err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	if !s.enter() {
		return ErrClosed
	}
	defer s.exit()
	q := s.outbox.queues[qi]
	s.outbox.mu.Lock()
	marked, dropped := q.finish(seqs)
	q.depth.Add(-int64(marked))
	var ops []kvOp
	if len(dropped) > 0 {
		ops = s.release(nil, dropped)
		ops = append(ops, kvOp{key: queueKey(q.name), value: queueValue(q.bit, q.cursor)})
	}
	s.outbox.mu.Unlock()
	if len(ops) == 0 {
		return nil
	}
	// Written outside the lock, so that the committer never waits for
	// it: two removals of a queue may store their cursors out of order,
	// which after a crash only sends a few entries again.
	if err := s.apply(ops); err != nil {
		return fmt.Errorf("store: outbox %s: remove: %w", queue, err)
	}
	return nil
}

// release counts the entries of seqs done for one more queue, and
// appends to ops the deletion of the chunks no queue holds anything of
// any more. Called with outboxes.mu held.
func (s *Store) release(ops []kvOp, seqs []uint64) []kvOp {
	o := &s.outbox
	for _, seq := range seqs {
		first, c := o.chunkOf(seq)
		if c == nil {
			continue
		}
		if c.held--; c.held > 0 {
			continue
		}
		delete(o.chunks, first)
		ops = append(ops, kvOp{key: chunkKey(first), del: true})
	}
	if len(o.starts) > 2*len(o.chunks)+64 {
		o.starts = slices.DeleteFunc(o.starts, func(first uint64) bool { _, ok := o.chunks[first]; return !ok })
	}
	return ops
}

// Bury moves entries (as read from the queue) to its dead letters, with
// reason, keeping their sequences. Entries the queue no longer holds are
// left alone.
func (s *Store) Bury(ctx context.Context, queue string, entries []OutboxEntry, reason string) error {
	q, err := s.queueIndex(queue)
	if err != nil {
		return err
	}
	return s.submitOutbox(ctx, outboxOp{queue: q, bury: entries, reason: reason})
}

// Revive queues dead letters (as read with ReadDead) again, as new entries
// at the queue's end, and removes them from the dead letters.
func (s *Store) Revive(ctx context.Context, queue string, dead []DeadEntry) error {
	q, err := s.queueIndex(queue)
	if err != nil {
		return err
	}
	return s.submitOutbox(ctx, outboxOp{queue: q, revive: dead})
}

func (s *Store) submitOutbox(ctx context.Context, op outboxOp) error {
	err := s.change(ctx, func(r *request) { r.kind, r.outbox = requestOutbox, &op })
	if err != nil {
		return fmt.Errorf("store: outbox %s: %w", s.outbox.queues[op.queue].name, err)
	}
	return nil
}

// beginRead starts a read of a queue: it returns the queue's index and
// the page size (limit, or 1,000 when limit <= 0). On success the caller
// calls s.exit when done.
func (s *Store) beginRead(ctx context.Context, queue string, limit int) (int, int, error) {
	qi, err := s.queueIndex(queue)
	if err != nil {
		return 0, 0, err
	}
	if err := ctx.Err(); err != nil {
		return 0, 0, err
	}
	if !s.enter() {
		return 0, 0, ErrClosed
	}
	if limit <= 0 {
		limit = 1000
	}
	return qi, limit, nil
}

// ReadOutbox returns up to limit entries the queue holds with sequences
// greater than after, in order. limit <= 0 means 1,000.
func (s *Store) ReadOutbox(ctx context.Context, queue string, after uint64, limit int) ([]OutboxEntry, error) {
	qi, limit, err := s.beginRead(ctx, queue, limit)
	if err != nil {
		return nil, err
	}
	defer s.exit()
	// Which entries, from memory; then the chunks holding them, from
	// Badger, each read once.
	q := s.outbox.queues[qi]
	type part struct {
		first uint64
		seqs  []uint64
	}
	var parts []part
	s.outbox.mu.Lock()
	live := q.pending[q.front:]
	i, _ := slices.BinarySearch(live, after+1)
	for n := 0; i < len(live) && n < limit; i++ {
		seq := live[i]
		if q.done[seq] {
			continue
		}
		first, c := s.outbox.chunkOf(seq)
		if c == nil {
			continue
		}
		if len(parts) == 0 || parts[len(parts)-1].first != first {
			parts = append(parts, part{first: first})
		}
		parts[len(parts)-1].seqs = append(parts[len(parts)-1].seqs, seq)
		n++
	}
	s.outbox.mu.Unlock()
	if len(parts) == 0 {
		return nil, nil
	}
	var out []OutboxEntry
	var refs []int // out's entries whose payload is in their channel's log
	err = s.db.View(func(txn *badger.Txn) error {
		for _, p := range parts {
			item, err := txn.Get(chunkKey(p.first))
			if errors.Is(err, badger.ErrKeyNotFound) {
				continue // done meanwhile
			}
			if err != nil {
				return err
			}
			want := p.seqs
			var perr error
			err = item.Value(func(v []byte) error {
				return parseChunk(p.first, v, func(seq, _ uint64, raw []byte) bool {
					if seq != want[0] {
						return true
					}
					e, err := parseOutboxValue(seq, raw)
					if err != nil {
						perr = err
						return false
					}
					if isRef(raw) {
						refs = append(refs, len(out))
					}
					out = append(out, e)
					want = want[1:]
					return len(want) > 0
				})
			})
			if err == nil {
				err = perr
			}
			if err != nil {
				return fmt.Errorf("chunk %d: %w", p.first, err)
			}
		}
		return s.logPayloads(txn, out, refs)
	})
	if err != nil {
		return nil, fmt.Errorf("store: read outbox %s: %w", queue, err)
	}
	return out, nil
}

// ReadDead returns up to limit dead letters of the queue with sequences
// greater than after, in order. limit <= 0 means 1,000.
func (s *Store) ReadDead(ctx context.Context, queue string, after uint64, limit int) ([]DeadEntry, error) {
	_, limit, err := s.beginRead(ctx, queue, limit)
	if err != nil {
		return nil, err
	}
	defer s.exit()
	var out []DeadEntry
	prefix := deadPrefix(queue)
	err = s.db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: prefix, PrefetchValues: true, PrefetchSize: min(limit, 100)})
		defer it.Close()
		for it.Seek(deadKey(queue, after+1)); it.ValidForPrefix(prefix) && len(out) < limit; it.Next() {
			item := it.Item()
			seq := binary.BigEndian.Uint64(item.Key()[len(prefix):])
			if err := item.Value(func(v []byte) error {
				e, err := parseDeadValue(seq, v)
				out = append(out, e)
				return err
			}); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("store: read the dead letters of %s: %w", queue, err)
	}
	return out, nil
}

// OutboxDepth returns how many entries wait in the queue, and how many
// dead letters it has.
func (s *Store) OutboxDepth(queue string) (depth, dead int64, err error) {
	i, err := s.queueIndex(queue)
	if err != nil {
		return 0, 0, err
	}
	q := s.outbox.queues[i]
	return q.depth.Load(), q.dead.Load(), nil
}

// outboxBatch is what a batch changes in the queues, applied once it is
// persisted.
type outboxBatch struct {
	first   uint64       // the chunk's first sequence
	entries []chunkEntry // the chunk: entries the batch adds
	queues  []uint64     // per entry, the queue indexes (bits of Queues) holding it
	dead    []int64      // per queue
	buried  uint64       // queues whose cursor a dead-letter move advanced
	notify  uint64       // per queue index
}

func (b *outboxBatch) reset(n int) {
	if cap(b.dead) < n {
		b.dead = make([]int64, n)
	}
	b.dead = b.dead[:n]
	clear(b.dead)
	clear(b.entries) // drop payload references
	b.entries, b.queues = b.entries[:0], b.queues[:0]
	b.buried, b.notify = 0, 0
}

// routeRecord adds the record just given offset in c's batch to the
// batch's chunk when Route gives it queues. The chunk is written with the
// batch's log entries, before any head (flushChunk), so that a head is
// never durable without the entries of its records.
func (s *Store) routeRecord(c *committer, r *request) {
	route := s.outbox.cfg.Route
	if route == nil || len(s.outbox.queues) == 0 {
		return
	}
	mask := route(r.ch.name, &r.rec) & (1<<len(s.outbox.queues) - 1)
	if mask == 0 {
		return
	}
	e := OutboxEntry{Time: r.rec.Time, Channel: r.ch.name, Offset: r.res.Offset, Epoch: r.res.Epoch, Payload: r.rec.Payload}
	// A record the log keeps is referred to, not copied: its log entry is
	// pinned until no queue holds it.
	s.addEntry(c, mask, &e, r.store)
}

// addEntry adds e to the batch's chunk, held by the queues of mask (bit i
// for Queues[i]), and assigns its sequence.
func (s *Store) addEntry(c *committer, mask uint64, e *OutboxEntry, ref bool) {
	s.outbox.next++
	e.Seq = s.outbox.next
	b := &c.outbox
	if len(b.entries) == 0 {
		b.first = e.Seq
	}
	var keyBits uint64
	for m := mask; m != 0; m &= m - 1 {
		keyBits |= 1 << s.outbox.queues[bits.TrailingZeros64(m)].bit
	}
	b.entries = append(b.entries, chunkEntry{bits: keyBits, e: *e, ref: ref})
	b.queues = append(b.queues, mask)
	b.notify |= mask
}

// flushChunk queues the batch's chunk, if it has entries: called by
// prepare after the batch's log entries, before its heads.
func (s *Store) flushChunk(c *committer) {
	if b := &c.outbox; len(b.entries) > 0 {
		c.ops = append(c.ops, kvOp{key: chunkKey(b.first), value: chunkValue(b.entries)})
	}
}

// prepareOutbox collects an outbox request's writes.
func (s *Store) prepareOutbox(c *committer, op *outboxOp) {
	q := s.outbox.queues[op.queue]
	for i := range op.add {
		s.addEntry(c, 1<<op.queue, &op.add[i], false)
	}
	if len(op.bury) > 0 {
		now := s.opts.Now()
		seqs := make([]uint64, 0, len(op.bury))
		s.outbox.mu.Lock()
		for i := range op.bury {
			e := &op.bury[i]
			if !q.holds(e.Seq) {
				continue // delivered or buried meanwhile
			}
			c.ops = append(c.ops, kvOp{key: deadKey(q.name, e.Seq), value: deadValue(e, now, op.reason)})
			seqs = append(seqs, e.Seq)
		}
		marked, dropped := q.finish(seqs)
		q.depth.Add(-int64(marked))
		c.ops = s.release(c.ops, dropped)
		s.outbox.mu.Unlock()
		c.outbox.dead[op.queue] += int64(marked)
		if len(dropped) > 0 {
			c.outbox.buried |= 1 << op.queue
		}
	}
	for i := range op.revive {
		e := op.revive[i].OutboxEntry
		dead := e.Seq
		s.addEntry(c, 1<<op.queue, &e, false)
		c.ops = append(c.ops, kvOp{key: deadKey(q.name, dead), del: true})
	}
	c.outbox.dead[op.queue] -= int64(len(op.revive))
}

// commitOutbox hands a persisted batch's entries to their queues, stores
// the cursors its dead-letter moves advanced, and tells Notify.
func (s *Store) commitOutbox(c *committer) {
	b := &c.outbox
	if len(b.entries) > 0 || b.buried != 0 {
		s.outbox.mu.Lock()
		if len(b.entries) > 0 {
			ch := &chunk{n: len(b.entries)}
			for i, mask := range b.queues {
				seq := b.first + uint64(i)
				for m := mask; m != 0; m &= m - 1 {
					q := s.outbox.queues[bits.TrailingZeros64(m)]
					q.pending = append(q.pending, seq)
					q.depth.Add(1)
					ch.held++
				}
			}
			s.outbox.chunks[b.first] = ch
			s.outbox.starts = append(s.outbox.starts, b.first)
			s.outbox.addPins(b.first, b.entries)
		}
		var ops []kvOp
		for m := b.buried; m != 0; m &= m - 1 {
			q := s.outbox.queues[bits.TrailingZeros64(m)]
			ops = append(ops, kvOp{key: queueKey(q.name), value: queueValue(q.bit, q.cursor)})
		}
		s.outbox.mu.Unlock()
		// After the dead letters are durable, never before: a cursor past
		// an entry that is not yet a dead letter could lose it.
		if len(ops) > 0 {
			if err := s.apply(ops); err != nil {
				s.opts.Logger.Error("store: outbox: store a cursor", "err", err)
			}
		}
	}
	for i, q := range s.outbox.queues {
		if d := b.dead[i]; d != 0 {
			q.dead.Add(d)
		}
	}
	if b.notify != 0 && s.outbox.cfg.Notify != nil {
		s.outbox.cfg.Notify(b.notify)
	}
}

// cost is what Badger counts for the change's entries, roughly.
func (op *outboxOp) cost() int {
	n := 0
	size := func(e *OutboxEntry) int {
		return 2*(2+255+8+batchEntryOverhead) + 19 + len(e.Channel) + len(e.Epoch) + len(e.Payload) + len(op.reason)
	}
	for i := range op.add {
		n += size(&op.add[i])
	}
	for i := range op.bury {
		n += size(&op.bury[i])
	}
	for i := range op.revive {
		n += size(&op.revive[i].OutboxEntry)
	}
	return n
}

// logPayloads fills in the payloads of the entries of out at refs from
// their channels' logs, which keep them (outboxPin): a channel at a time,
// walking its log from the lowest offset wanted, since a batch's records
// of a channel mostly follow each other. An entry whose log entry is gone
// all the same comes back with no payload, which the reader cannot decode
// and moves to its dead letters, saying so.
func (s *Store) logPayloads(txn *badger.Txn, out []OutboxEntry, refs []int) error {
	if len(refs) == 0 {
		return nil
	}
	byChannel := map[string][]int{}
	for _, i := range refs {
		byChannel[out[i].Channel] = append(byChannel[out[i].Channel], i)
	}
	for channel, idx := range byChannel {
		slices.SortFunc(idx, func(a, b int) int { return cmp.Compare(out[a].Offset, out[b].Offset) })
		prefix := logPrefix(channel)
		it := txn.NewIterator(badger.IteratorOptions{Prefix: prefix})
		it.Seek(logKey(channel, out[idx[0]].Offset))
		for _, i := range idx {
			want := out[i].Offset
			for steps := 0; it.ValidForPrefix(prefix) && logKeyOffset(it.Item().Key()) < want; steps++ {
				if steps == 8 {
					it.Seek(logKey(channel, want))
					break
				}
				it.Next()
			}
			if !it.ValidForPrefix(prefix) || logKeyOffset(it.Item().Key()) != want {
				s.opts.Logger.Error("store: outbox: a queued entry's message is no longer stored", "channel", channel, "offset", want)
				continue
			}
			err := it.Item().Value(func(v []byte) error {
				_, p, err := parseEntryValue(v)
				out[i].Payload = append([]byte(nil), p...)
				return err
			})
			if err != nil {
				it.Close()
				return err
			}
		}
		it.Close()
	}
	return nil
}
