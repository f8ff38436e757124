package webhooks

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"
)

// memOutbox is an Outbox in memory that behaves as the store's does:
// every queue numbers its entries from 1 in the order they were added, a
// buried entry keeps its sequence as a dead letter, a revived one gets a
// new sequence at the queue's end, and after Enqueue and Revive the
// Service's Notify is told which queues got entries, as the store's
// committer does. It also checks the Outbox contract: an entry removed or
// buried that is not queued (twice, or never) fails the test.
type memOutbox struct {
	t      *testing.T
	now    func() time.Time
	notify func(uint64)
	bits   map[string]uint64

	mu       sync.Mutex // guards the following
	queues   map[string]*memQueue
	problems []string
	// handed are, per queue, the entries Read has returned that are still
	// queued: what the delivery loop may hold in memory.
	handed map[string]map[uint64]bool
	// mostHanded is the largest size handed reached, per queue.
	mostHanded map[string]int
}

type memQueue struct {
	next     uint64
	entries  []Entry     // ascending Seq
	dead     []DeadEntry // ascending Seq
	enqueued int         // entries ever added by Enqueue
}

// newMemOutbox returns an outbox with one queue per endpoint of svc,
// notifying svc. The test fails at its end if the contract was broken.
func newMemOutbox(t *testing.T, svc *Service, now func() time.Time) *memOutbox {
	o := &memOutbox{t: t, now: now, notify: svc.Notify, bits: map[string]uint64{}, queues: map[string]*memQueue{}}
	for i, name := range svc.Queues() {
		o.bits[name] = 1 << i
		o.queues[name] = &memQueue{}
	}
	t.Cleanup(func() {
		o.mu.Lock()
		defer o.mu.Unlock()
		for _, p := range o.problems {
			t.Errorf("outbox contract: %s", p)
		}
	})
	return o
}

func (o *memOutbox) queueLocked(name string) (*memQueue, error) {
	q, ok := o.queues[name]
	if !ok {
		return nil, fmt.Errorf("memoutbox: no queue %q", name)
	}
	return q, nil
}

func (o *memOutbox) Enqueue(ctx context.Context, entries map[string][]Entry) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	var bits uint64
	o.mu.Lock()
	for name, es := range entries {
		q, err := o.queueLocked(name)
		if err != nil {
			o.mu.Unlock()
			return err
		}
		for _, e := range es {
			q.next++
			e.Seq = q.next
			if e.Time.IsZero() {
				e.Time = o.now()
			}
			e.Payload = slices.Clone(e.Payload)
			q.entries = append(q.entries, e)
			q.enqueued++
		}
		if len(es) > 0 {
			bits |= o.bits[name]
		}
	}
	o.mu.Unlock()
	if bits != 0 {
		o.notify(bits)
	}
	return nil
}

// after returns up to limit items of list with Seq greater than after.
func after[T any](list []T, seq func(T) uint64, after uint64, limit int) []T {
	if limit <= 0 {
		limit = 1000
	}
	var out []T
	for _, x := range list {
		if seq(x) > after {
			out = append(out, x)
			if len(out) == limit {
				break
			}
		}
	}
	return out
}

func (o *memOutbox) Read(ctx context.Context, queue string, from uint64, limit int) ([]Entry, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	q, err := o.queueLocked(queue)
	if err != nil {
		return nil, err
	}
	out := after(q.entries, func(e Entry) uint64 { return e.Seq }, from, limit)
	if o.handed == nil {
		o.handed, o.mostHanded = map[string]map[uint64]bool{}, map[string]int{}
	}
	h := o.handed[queue]
	if h == nil {
		h = map[uint64]bool{}
		o.handed[queue] = h
	}
	for _, e := range out {
		h[e.Seq] = true
	}
	for seq := range h {
		if !slices.ContainsFunc(q.entries, func(e Entry) bool { return e.Seq == seq }) {
			delete(h, seq)
		}
	}
	o.mostHanded[queue] = max(o.mostHanded[queue], len(h))
	return out, nil
}

// most returns the most entries of queue Read had handed out at once
// that were still queued.
func (o *memOutbox) most(queue string) int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.mostHanded[queue]
}

// takeLocked removes the entry seq from q and returns it.
func (o *memOutbox) takeLocked(q *memQueue, queue, op string, seq uint64) (Entry, bool) {
	i := slices.IndexFunc(q.entries, func(e Entry) bool { return e.Seq == seq })
	if i < 0 {
		o.problems = append(o.problems, fmt.Sprintf("%s %s/%d: the entry is not queued", op, queue, seq))
		return Entry{}, false
	}
	e := q.entries[i]
	q.entries = slices.Delete(q.entries, i, i+1)
	return e, true
}

func (o *memOutbox) Remove(ctx context.Context, queue string, seqs []uint64) error {
	o.mu.Lock()
	defer o.mu.Unlock()
	q, err := o.queueLocked(queue)
	if err != nil {
		return err
	}
	for _, seq := range seqs {
		o.takeLocked(q, queue, "remove", seq)
	}
	return nil
}

func (o *memOutbox) Bury(ctx context.Context, queue string, entries []Entry, reason string) error {
	o.mu.Lock()
	defer o.mu.Unlock()
	q, err := o.queueLocked(queue)
	if err != nil {
		return err
	}
	for _, e := range entries {
		if got, ok := o.takeLocked(q, queue, "bury", e.Seq); ok {
			q.dead = append(q.dead, DeadEntry{Entry: got, Died: o.now(), Reason: reason})
		}
	}
	slices.SortFunc(q.dead, func(a, b DeadEntry) int { return cmp.Compare(a.Seq, b.Seq) })
	return nil
}

func (o *memOutbox) ReadDead(ctx context.Context, queue string, from uint64, limit int) ([]DeadEntry, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	q, err := o.queueLocked(queue)
	if err != nil {
		return nil, err
	}
	return after(q.dead, func(d DeadEntry) uint64 { return d.Seq }, from, limit), nil
}

func (o *memOutbox) Revive(ctx context.Context, queue string, dead []DeadEntry) error {
	o.mu.Lock()
	q, err := o.queueLocked(queue)
	if err != nil {
		o.mu.Unlock()
		return err
	}
	for _, d := range dead {
		i := slices.IndexFunc(q.dead, func(x DeadEntry) bool { return x.Seq == d.Seq })
		if i < 0 {
			o.problems = append(o.problems, fmt.Sprintf("revive %s/%d: no such dead letter", queue, d.Seq))
			continue
		}
		e := q.dead[i].Entry
		q.dead = slices.Delete(q.dead, i, i+1)
		q.next++
		e.Seq = q.next
		q.entries = append(q.entries, e)
	}
	o.mu.Unlock()
	if len(dead) > 0 {
		o.notify(o.bits[queue])
	}
	return nil
}

func (o *memOutbox) Depth(queue string) (depth, dead int64, err error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	q, err := o.queueLocked(queue)
	if err != nil {
		return 0, 0, err
	}
	return int64(len(q.entries)), int64(len(q.dead)), nil
}

// depth is Depth for a queue the test knows exists.
func (o *memOutbox) depth(queue string) (depth, dead int64) {
	d, x, err := o.Depth(queue)
	if err != nil {
		o.t.Fatal(err)
	}
	return d, x
}

// enqueued is how many entries Enqueue ever added to queue.
func (o *memOutbox) enqueued(queue string) int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.queues[queue].enqueued
}

// dead returns the queue's dead letters.
func (o *memOutbox) deadLetters(queue string) []DeadEntry {
	o.mu.Lock()
	defer o.mu.Unlock()
	return slices.Clone(o.queues[queue].dead)
}
