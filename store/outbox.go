package store

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
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
// A record routed to several queues is stored once more, as one payload
// entry under a sequence number taken from one counter for all queues, in
// commit order; each queue holds a key per entry naming that sequence,
// with no value. So a record costs one payload copy and a small key per
// queue, however many queues take it. The payload goes when the last
// queue's key does (a reference count, rebuilt from the keys at Open).
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
	// Payload is the record's payload (a copy, kept until the entry is
	// removed, whatever the channel's retention) or the enqueued bytes.
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

// outboxQueue is one queue's counters.
type outboxQueue struct {
	name  string
	depth atomic.Int64
	dead  atomic.Int64
}

// outboxes is the store's set of queues.
type outboxes struct {
	cfg    Outbox
	queues []*outboxQueue
	index  map[string]int
	// next is the last sequence assigned (committer only). A revived
	// entry gets a new one; a buried one keeps its.
	next uint64

	mu sync.Mutex // guards refs
	// refs counts, per payload sequence, the queue keys naming it.
	refs map[uint64]int32
}

// outboxOp is an outbox change queued for the committer.
type outboxOp struct {
	queue  int
	add    []OutboxEntry // new entries; the committer assigns Seq
	bury   []OutboxEntry // entries moved to dead letters, with reason
	reason string
	revive []DeadEntry // dead letters queued again as new entries
}

// Keys: 'o' len(queue) queue seq(8) for a queue's entry (no value), 'p'
// seq(8) for its payload, 'x' len(queue) queue seq(8) for a dead letter.
const (
	kindOutbox  byte = 'o'
	kindPayload byte = 'p'
	kindDead    byte = 'x'
)

func payloadKey(seq uint64) []byte {
	return binary.BigEndian.AppendUint64([]byte{kindPayload}, seq)
}

func outboxPrefix(kind byte, queue string) []byte {
	p := make([]byte, 0, 2+len(queue)+8)
	p = append(p, kind, byte(len(queue)))
	return append(p, queue...)
}

func outboxKey(kind byte, queue string, seq uint64) []byte {
	return binary.BigEndian.AppendUint64(outboxPrefix(kind, queue), seq)
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

func parseOutboxValue(seq uint64, v []byte) (OutboxEntry, error) {
	if len(v) < 19 || v[0] != valueFormat {
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

// openOutbox loads the queues' counts, the payloads' reference counts and
// the last sequence. Called by Open after the write-ahead log's replay,
// before the committer starts.
func (s *Store) openOutbox() error {
	s.outbox = outboxes{cfg: s.opts.Outbox, index: make(map[string]int, len(s.opts.Outbox.Queues)),
		refs: make(map[uint64]int32)}
	if s.opts.Durability == NoSync && !s.opts.InMemory {
		if err := s.dropUncommittedOutbox(); err != nil {
			return err
		}
	}
	var orphans [][]byte
	err := s.db.View(func(txn *badger.Txn) error {
		for i, name := range s.opts.Outbox.Queues {
			q := &outboxQueue{name: name}
			n, _ := countKeys(txn, outboxPrefix(kindOutbox, name), nil)
			q.depth.Store(n)
			n, last := countKeys(txn, outboxPrefix(kindDead, name), nil)
			q.dead.Store(n)
			s.outbox.next = max(s.outbox.next, last) // never reuse a buried entry's sequence
			s.outbox.queues = append(s.outbox.queues, q)
			s.outbox.index[name] = i
		}
		// Every queue key counts, also those of queues no longer
		// configured: their payloads stay until the queue is emptied.
		countKeys(txn, []byte{kindOutbox}, func(key []byte) {
			s.outbox.refs[binary.BigEndian.Uint64(key[len(key)-8:])]++
		})
		_, last := countKeys(txn, []byte{kindPayload}, func(key []byte) {
			if seq := binary.BigEndian.Uint64(key[1:]); s.outbox.refs[seq] == 0 {
				orphans = append(orphans, append([]byte(nil), key...))
			}
		})
		s.outbox.next = max(s.outbox.next, last)
		return nil
	})
	if err != nil || len(orphans) == 0 {
		return err
	}
	ops := make([]kvOp, len(orphans))
	for i, k := range orphans {
		ops[i] = kvOp{key: k, del: true}
	}
	return s.apply(ops)
}

// countKeys counts the keys under prefix (reading no value), calls each
// with every key when not nil, and returns the sequence ending the last.
func countKeys(txn *badger.Txn, prefix []byte, each func(key []byte)) (n int64, last uint64) {
	it := txn.NewIterator(badger.IteratorOptions{Prefix: prefix})
	defer it.Close()
	for it.Seek(prefix); it.ValidForPrefix(prefix); it.Next() {
		n++
		key := it.Item().Key()
		if len(key) >= len(prefix)+8 {
			last = binary.BigEndian.Uint64(key[len(key)-8:])
		}
		if each != nil {
			each(key)
		}
	}
	return n, last
}

// dropUncommittedOutbox removes outbox entries of records beyond their
// channel's head. Without the write-ahead log (NoSync) a batch too large
// for one Badger transaction is applied in several, heads last, so a crash
// between them can leave a record's entries without the head that makes
// the record stored: the record is not stored (it was never acknowledged,
// and its offset is given again), so its entries must go too.
func (s *Store) dropUncommittedOutbox() error {
	var drop [][]byte
	heads := map[string]Position{}
	err := s.db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: []byte{kindPayload}, PrefetchValues: true})
		defer it.Close()
		for it.Seek([]byte{kindPayload}); it.ValidForPrefix([]byte{kindPayload}); it.Next() {
			item := it.Item()
			v, err := item.ValueCopy(nil)
			if err != nil {
				return err
			}
			e, err := parseOutboxValue(0, v)
			if err != nil || e.Channel == "" || e.Offset == 0 {
				continue
			}
			pos, ok := heads[e.Channel]
			if !ok {
				hv, err := txn.Get(headKey(e.Channel))
				if err == nil {
					err = hv.Value(func(b []byte) error {
						var perr error
						pos.Head, pos.Epoch, perr = parseHeadValue(b)
						return perr
					})
				}
				if err != nil && !errors.Is(err, badger.ErrKeyNotFound) {
					return err
				}
				heads[e.Channel] = pos
			}
			if e.Offset > pos.Head || e.Epoch != pos.Epoch {
				drop = append(drop, item.KeyCopy(nil))
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("store: check the outbox: %w", err)
	}
	if len(drop) == 0 {
		return nil
	}
	var ops []kvOp
	for _, k := range drop {
		ops = append(ops, kvOp{key: k, del: true})
		seq := binary.BigEndian.Uint64(k[1:])
		for _, q := range s.opts.Outbox.Queues {
			ops = append(ops, kvOp{key: outboxKey(kindOutbox, q, seq), del: true})
		}
	}
	s.opts.Logger.Warn("store: dropped outbox entries of records a crash left unstored", "entries", len(drop))
	return s.apply(ops)
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

// Remove deletes delivered entries from the queue, and the payloads no
// other queue holds. It writes Badger at once, without the write-ahead
// log and without waiting for a sync: a delivery is acknowledged by the
// endpoint, not by the disk, so waiting would only slow deliveries down.
// After a crash, entries removed just before it may come back (from the
// log's replay) and be delivered again — at least once, never lost.
// Removing an entry that is not queued does nothing.
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
	defer s.outbox.mu.Unlock()
	var removed []uint64
	err = s.db.Update(func(txn *badger.Txn) error {
		for _, seq := range seqs {
			key := outboxKey(kindOutbox, queue, seq)
			if _, err := txn.Get(key); errors.Is(err, badger.ErrKeyNotFound) || slices.Contains(removed, seq) {
				continue
			} else if err != nil {
				return err
			}
			if err := txn.Delete(key); err != nil {
				return err
			}
			removed = append(removed, seq)
			if s.outbox.refs[seq] <= 1 {
				if err := txn.Delete(payloadKey(seq)); err != nil {
					return err
				}
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("store: outbox %s: remove: %w", queue, err)
	}
	for _, seq := range removed {
		if s.outbox.refs[seq] <= 1 {
			delete(s.outbox.refs, seq)
		} else {
			s.outbox.refs[seq]--
		}
	}
	q.depth.Add(-int64(len(removed)))
	return nil
}

// Bury moves entries (as read from the queue) to its dead letters, with
// reason, keeping their sequences.
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
	if err := ctx.Err(); err != nil {
		return err
	}
	if !s.enter() {
		return ErrClosed
	}
	defer s.exit()
	r := s.newRequest(nil)
	r.kind = requestOutbox
	r.outbox = &op
	r.setCost()
	if _, err := s.submit(ctx, r); err != nil {
		return fmt.Errorf("store: outbox %s: %w", s.outbox.queues[op.queue].name, err)
	}
	return nil
}

// ReadOutbox returns up to limit entries of the queue with sequences
// greater than after, in order. limit <= 0 means 1,000.
func (s *Store) ReadOutbox(ctx context.Context, queue string, after uint64, limit int) ([]OutboxEntry, error) {
	var out []OutboxEntry
	err := s.readQueue(ctx, kindOutbox, queue, after, limit, func(txn *badger.Txn, seq uint64, _ []byte) error {
		item, err := txn.Get(payloadKey(seq))
		if err != nil {
			return fmt.Errorf("payload of entry %d: %w", seq, err)
		}
		return item.Value(func(v []byte) error {
			e, err := parseOutboxValue(seq, v)
			out = append(out, e)
			return err
		})
	})
	return out, err
}

// ReadDead returns up to limit dead letters of the queue with sequences
// greater than after, in order. limit <= 0 means 1,000.
func (s *Store) ReadDead(ctx context.Context, queue string, after uint64, limit int) ([]DeadEntry, error) {
	var out []DeadEntry
	err := s.readQueue(ctx, kindDead, queue, after, limit, func(txn *badger.Txn, seq uint64, v []byte) error {
		e, err := parseDeadValue(seq, v)
		out = append(out, e)
		return err
	})
	return out, err
}

func (s *Store) readQueue(ctx context.Context, kind byte, queue string, after uint64, limit int, fn func(*badger.Txn, uint64, []byte) error) error {
	if _, err := s.queueIndex(queue); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	if !s.enter() {
		return ErrClosed
	}
	defer s.exit()
	if limit <= 0 {
		limit = 1000
	}
	prefix := outboxPrefix(kind, queue)
	err := s.db.View(func(txn *badger.Txn) error {
		values := kind != kindOutbox // a queue's keys have none
		it := txn.NewIterator(badger.IteratorOptions{Prefix: prefix, PrefetchValues: values, PrefetchSize: min(limit, 100)})
		defer it.Close()
		n := 0
		for it.Seek(outboxKey(kind, queue, after+1)); it.ValidForPrefix(prefix) && n < limit; it.Next() {
			item := it.Item()
			seq := binary.BigEndian.Uint64(item.Key()[len(prefix):])
			var err error
			if values {
				err = item.Value(func(v []byte) error { return fn(txn, seq, v) })
			} else {
				err = fn(txn, seq, nil)
			}
			if err != nil {
				return err
			}
			n++
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("store: read outbox %s: %w", queue, err)
	}
	return nil
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

// outboxBatch is what a batch changes in the queues, applied to their
// counters once it is persisted.
type outboxBatch struct {
	depth, dead []int64
	notify      uint64
	refs        []outboxRef // payloads written, with their queue keys
}

type outboxRef struct {
	seq uint64
	n   int32
}

func (b *outboxBatch) reset(n int) {
	if cap(b.depth) < n {
		b.depth, b.dead = make([]int64, n), make([]int64, n)
	}
	b.depth, b.dead = b.depth[:n], b.dead[:n]
	clear(b.depth)
	clear(b.dead)
	b.notify = 0
	b.refs = b.refs[:0]
}

// routeRecord queues the outbox entries of a record just given offset in
// c's batch: its payload and a key per queue, right after its log entry,
// before any head, so that a head is never durable without the entries of
// its records.
func (s *Store) routeRecord(c *committer, r *request) {
	route := s.outbox.cfg.Route
	if route == nil || len(s.outbox.queues) == 0 {
		return
	}
	mask := route(r.ch.name, &r.rec)
	if mask == 0 {
		return
	}
	e := OutboxEntry{Time: r.rec.Time, Channel: r.ch.name, Offset: r.res.Offset, Epoch: r.res.Epoch, Payload: r.rec.Payload}
	s.outbox.next++
	seq := s.outbox.next
	c.ops = append(c.ops, kvOp{key: payloadKey(seq),
		value: outboxValue(make([]byte, 0, 19+len(e.Channel)+len(e.Epoch)+len(e.Payload)), &e)})
	var n int32
	for i, q := range s.outbox.queues {
		if mask&(1<<i) == 0 {
			continue
		}
		c.ops = append(c.ops, kvOp{key: outboxKey(kindOutbox, q.name, seq)})
		c.outbox.depth[i]++
		c.outbox.notify |= 1 << i
		n++
	}
	c.outbox.refs = append(c.outbox.refs, outboxRef{seq: seq, n: n})
}

// addPayload queues a new payload with one queue key.
func (s *Store) addPayload(c *committer, queue int, e *OutboxEntry) {
	s.outbox.next++
	e.Seq = s.outbox.next
	c.ops = append(c.ops,
		kvOp{key: payloadKey(e.Seq), value: outboxValue(nil, e)},
		kvOp{key: outboxKey(kindOutbox, s.outbox.queues[queue].name, e.Seq)})
	c.outbox.refs = append(c.outbox.refs, outboxRef{seq: e.Seq, n: 1})
}

// prepareOutbox collects an outbox request's writes.
func (s *Store) prepareOutbox(c *committer, op *outboxOp) {
	q := s.outbox.queues[op.queue]
	now := s.opts.Now()
	for i := range op.add {
		s.addPayload(c, op.queue, &op.add[i])
	}
	if len(op.bury) > 0 {
		s.outbox.mu.Lock()
		for i := range op.bury {
			e := &op.bury[i]
			c.ops = append(c.ops,
				kvOp{key: outboxKey(kindDead, q.name, e.Seq), value: deadValue(e, now, op.reason)},
				kvOp{key: outboxKey(kindOutbox, q.name, e.Seq), del: true})
			if s.outbox.refs[e.Seq] <= 1 {
				delete(s.outbox.refs, e.Seq)
				c.ops = append(c.ops, kvOp{key: payloadKey(e.Seq), del: true})
			} else {
				s.outbox.refs[e.Seq]--
			}
		}
		s.outbox.mu.Unlock()
	}
	for i := range op.revive {
		e := op.revive[i].OutboxEntry
		dead := e.Seq
		s.addPayload(c, op.queue, &e)
		c.ops = append(c.ops, kvOp{key: outboxKey(kindDead, q.name, dead), del: true})
	}
	added := int64(len(op.add) + len(op.revive))
	c.outbox.depth[op.queue] += added - int64(len(op.bury))
	c.outbox.dead[op.queue] += int64(len(op.bury) - len(op.revive))
	if added > 0 {
		c.outbox.notify |= 1 << op.queue
	}
}

// commitOutbox applies a persisted batch's counts and tells Notify.
func (s *Store) commitOutbox(c *committer) {
	if len(c.outbox.refs) > 0 {
		s.outbox.mu.Lock()
		for _, r := range c.outbox.refs {
			s.outbox.refs[r.seq] += r.n
		}
		s.outbox.mu.Unlock()
	}
	for i, q := range s.outbox.queues {
		if d := c.outbox.depth[i]; d != 0 {
			q.depth.Add(d)
		}
		if d := c.outbox.dead[i]; d != 0 {
			q.dead.Add(d)
		}
	}
	if c.outbox.notify != 0 && s.outbox.cfg.Notify != nil {
		s.outbox.cfg.Notify(c.outbox.notify)
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
