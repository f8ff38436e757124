package jetstream

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/heraldrt/herald/store"
)

// The outbox on JetStream: the queues outbound webhooks are delivered
// from, shared by the nodes, so that the cluster delivers each event once
// and not once per node.
//
// A second stream (<stream>_OUTBOX) holds one subject per queue, each
// message an entry (a copy of a stored record, or what Enqueue queued),
// its stream sequence the entry's Seq, and one subject per queue for its
// dead letters. Removing an entry deletes its message; burying it
// publishes it on the dead letters' subject first. Every node can read
// the queues, count them (GET /api/webhooks) and add to them (a replay);
// one node at a time, the holder of the "webhooks" lease (Lead), routes
// and delivers.
//
// Routing: the holder reads the channels' stream through a durable
// consumer (made by the first holder ever, from the stream's end: what
// was stored before is not for the webhooks, as with the embedded store,
// whose queues take what is stored once the endpoint is configured) and, for each record, publishes an entry on each queue the
// record is routed to, with the message id "<stream sequence>.<queue>":
// an entry published again (the node died before acknowledging the
// record) is a duplicate the stream drops within its window. A record is
// acknowledged once its entries are stored, and at most routeBatch
// records are unacknowledged at a time, so a node taking the lease over
// routes the records the previous one left first, in order. The trimmer
// purges no record the router has not acknowledged.

// Outbox subjects and names.
const (
	outboxPrefix = "herald.outbox."
	// routerName is the durable consumer the lease holder routes from.
	routerName = "herald-webhooks-router"
	// routeBatch bounds the records routed at once, and those a node
	// that died can have left unacknowledged.
	routeBatch = 256
	// routerIdle is how long the router's consumer lives unread: a
	// cluster whose webhooks were removed from its configuration stops
	// pinning its records then.
	routerIdle = 24 * time.Hour
)

// Entry headers, beyond the records' own.
const (
	hdrChannel = "Herald-Channel" // base64url of the channel's name
	hdrEpoch   = "Herald-Epoch"
	hdrDied    = "Herald-Died"   // Unix nanoseconds
	hdrReason  = "Herald-Reason" // base64url
)

// Outbox is the engine's outbox queues. It has the Badger store's outbox
// methods, so the webhooks take either.
type Outbox struct {
	e      *Engine
	cfg    store.Outbox
	stream jetstream.Stream
	index  map[string]int
	stop   func() // ends the wake-up listener

	mu     sync.Mutex
	counts map[string]int64 // messages per subject, as last counted
	at     time.Time        // when counted
}

// OpenOutbox makes the outbox's stream when missing and returns its
// queues, cfg.Queues. Every node opens it with the same queues; Route
// runs on the lease holder only.
func (e *Engine) OpenOutbox(ctx context.Context, cfg store.Outbox) (*Outbox, error) {
	if err := e.begin(); err != nil {
		return nil, err
	}
	defer e.inflight.Done()
	o := &Outbox{e: e, cfg: cfg, index: map[string]int{}}
	for i, q := range cfg.Queues {
		if q == "" {
			return nil, errors.New("jetstream: outbox: a queue has no name")
		}
		o.index[q] = i
	}
	var err error
	o.stream, err = e.js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name:       e.opts.Stream + "_OUTBOX",
		Subjects:   []string{outboxPrefix + ">"},
		Storage:    jetstream.FileStorage,
		Replicas:   e.opts.Replicas,
		Duplicates: dedupeWindow,
	})
	if err != nil {
		return nil, fmt.Errorf("jetstream: outbox stream: %w", err)
	}
	// An entry queued through any node wakes the holder's deliveries.
	o.stop, err = e.Listen("outbox", func(data []byte) {
		if i, ok := o.index[string(data)]; ok && cfg.Notify != nil {
			cfg.Notify(1 << i)
		}
	})
	if err != nil {
		return nil, err
	}
	return o, nil
}

// Close stops listening for entries queued through other nodes.
func (o *Outbox) Close() { o.stop() }

func queueSubject(queue string) string { return outboxPrefix + "q." + key(queue) }
func deadSubject(queue string) string  { return outboxPrefix + "d." + key(queue) }

func (o *Outbox) check(queue string) error {
	if _, ok := o.index[queue]; !ok {
		return fmt.Errorf("%w: %q", store.ErrNoQueue, queue)
	}
	return nil
}

// entryMsg is an entry as a message on subject.
func entryMsg(subject string, e *store.OutboxEntry) *nats.Msg {
	m := nats.NewMsg(subject)
	if e.Channel != "" {
		m.Header.Set(hdrChannel, key(e.Channel))
	}
	if e.Offset > 0 {
		m.Header.Set(hdrOffset, strconv.FormatUint(e.Offset, 10))
		m.Header.Set(hdrEpoch, e.Epoch)
	}
	m.Header.Set(hdrTime, strconv.FormatInt(e.Time.UnixNano(), 10))
	m.Data = e.Payload
	return m
}

// parseEntry reads an entry back from its message.
func parseEntry(seq uint64, h nats.Header, data []byte) store.OutboxEntry {
	e := store.OutboxEntry{Seq: seq, Epoch: h.Get(hdrEpoch), Payload: data}
	if k := h.Get(hdrChannel); k != "" {
		e.Channel, _ = unkey(k)
	}
	e.Offset, _ = strconv.ParseUint(h.Get(hdrOffset), 10, 64)
	t, _ := strconv.ParseInt(h.Get(hdrTime), 10, 64)
	e.Time = time.Unix(0, t)
	return e
}

// publish stores msgs in order and waits for every acknowledgement.
func (o *Outbox) publish(ctx context.Context, msgs []*nats.Msg) error {
	futures := make([]jetstream.PubAckFuture, 0, len(msgs))
	for _, m := range msgs {
		f, err := o.e.js.PublishMsgAsync(m, jetstream.WithExpectStream(o.stream.CachedInfo().Config.Name))
		if err != nil {
			return unavailable(ctx, fmt.Errorf("jetstream: outbox: %w", err))
		}
		futures = append(futures, f)
	}
	for _, f := range futures {
		select {
		case <-f.Ok():
		case err := <-f.Err():
			return unavailable(ctx, fmt.Errorf("jetstream: outbox: %w", err))
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}

// Enqueue adds entries at the end of queue, in order.
func (o *Outbox) Enqueue(ctx context.Context, queue string, entries []store.OutboxEntry) error {
	if err := o.check(queue); err != nil {
		return err
	}
	msgs := make([]*nats.Msg, len(entries))
	for i := range entries {
		msgs[i] = entryMsg(queueSubject(queue), &entries[i])
	}
	if err := o.publish(ctx, msgs); err != nil {
		return err
	}
	o.add(queueSubject(queue), int64(len(entries)))
	o.wake(queue)
	return nil
}

// wake tells the lease holder that queue got entries.
func (o *Outbox) wake(queue string) {
	if o.cfg.Notify != nil {
		o.cfg.Notify(1 << o.index[queue])
	}
	_ = o.e.Broadcast("outbox", []byte(queue)) // lost: the holder reads the queue on its next wake-up
}

// ReadOutbox returns up to limit entries of queue after Seq after, in
// order.
func (o *Outbox) ReadOutbox(ctx context.Context, queue string, after uint64, limit int) ([]store.OutboxEntry, error) {
	if err := o.check(queue); err != nil {
		return nil, err
	}
	var out []store.OutboxEntry
	err := o.scan(ctx, queueSubject(queue), after, limit, func(seq uint64, h nats.Header, data []byte) {
		out = append(out, parseEntry(seq, h, data))
	})
	return out, err
}

// scan calls fn with up to limit messages of subject after stream
// sequence after, in order.
func (o *Outbox) scan(ctx context.Context, subject string, after uint64, limit int, fn func(seq uint64, h nats.Header, data []byte)) error {
	if limit <= 0 {
		return nil
	}
	last, err := o.stream.GetLastMsgForSubject(ctx, subject)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return nil
	}
	if err != nil {
		return unavailable(ctx, fmt.Errorf("jetstream: outbox: %w", err))
	}
	if last.Sequence <= after {
		return nil
	}
	n := 0
	return consume(ctx, o.stream, subject, after+1, limit, 0, func(m jetstream.Msg) bool {
		meta, err := m.Metadata()
		if err != nil {
			return true
		}
		fn(meta.Sequence.Stream, m.Headers(), m.Data())
		n++
		return n < limit && meta.Sequence.Stream < last.Sequence
	})
}

// Remove deletes delivered entries of queue.
func (o *Outbox) Remove(ctx context.Context, queue string, seqs []uint64) error {
	if err := o.check(queue); err != nil {
		return err
	}
	return o.delete(ctx, queueSubject(queue), seqs)
}

func (o *Outbox) delete(ctx context.Context, subject string, seqs []uint64) error {
	n := int64(0)
	for _, seq := range seqs {
		err := o.stream.DeleteMsg(ctx, seq)
		if errors.Is(err, jetstream.ErrMsgNotFound) || errors.Is(err, jetstream.ErrMsgDeleteUnsuccessful) {
			continue // removed already
		}
		if err != nil {
			o.add(subject, -n)
			return unavailable(ctx, fmt.Errorf("jetstream: outbox: remove: %w", err))
		}
		n++
	}
	o.add(subject, -n)
	return nil
}

// Bury moves entries of queue to its dead letters, with a reason.
func (o *Outbox) Bury(ctx context.Context, queue string, entries []store.OutboxEntry, reason string) error {
	if err := o.check(queue); err != nil {
		return err
	}
	died := strconv.FormatInt(o.e.opts.Now().UnixNano(), 10)
	msgs := make([]*nats.Msg, len(entries))
	seqs := make([]uint64, len(entries))
	for i := range entries {
		m := entryMsg(deadSubject(queue), &entries[i])
		m.Header.Set(hdrDied, died)
		m.Header.Set(hdrReason, key(reason))
		msgs[i], seqs[i] = m, entries[i].Seq
	}
	if err := o.publish(ctx, msgs); err != nil {
		return err
	}
	o.add(deadSubject(queue), int64(len(entries)))
	return o.delete(ctx, queueSubject(queue), seqs)
}

// ReadDead returns up to limit dead letters of queue after Seq after:
// a dead letter's Seq is its own, not the entry's it was.
func (o *Outbox) ReadDead(ctx context.Context, queue string, after uint64, limit int) ([]store.DeadEntry, error) {
	if err := o.check(queue); err != nil {
		return nil, err
	}
	var out []store.DeadEntry
	err := o.scan(ctx, deadSubject(queue), after, limit, func(seq uint64, h nats.Header, data []byte) {
		d := store.DeadEntry{OutboxEntry: parseEntry(seq, h, data)}
		died, _ := strconv.ParseInt(h.Get(hdrDied), 10, 64)
		d.Died = time.Unix(0, died)
		d.Reason, _ = unkey(h.Get(hdrReason))
		out = append(out, d)
	})
	return out, err
}

// Revive queues dead letters of queue again, at its end.
func (o *Outbox) Revive(ctx context.Context, queue string, dead []store.DeadEntry) error {
	if err := o.check(queue); err != nil {
		return err
	}
	entries := make([]store.OutboxEntry, len(dead))
	seqs := make([]uint64, len(dead))
	for i, d := range dead {
		entries[i], seqs[i] = d.OutboxEntry, d.Seq
	}
	if err := o.Enqueue(ctx, queue, entries); err != nil {
		return err
	}
	return o.delete(ctx, deadSubject(queue), seqs)
}

// OutboxDepth returns how many entries wait in queue and how many dead
// letters it has, as counted at most a second ago (adjusted by what this
// node did since).
func (o *Outbox) OutboxDepth(queue string) (depth, dead int64, err error) {
	if err := o.check(queue); err != nil {
		return 0, 0, err
	}
	o.mu.Lock()
	fresh := time.Since(o.at) < time.Second
	o.mu.Unlock()
	if !fresh {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		info, err := o.stream.Info(ctx, jetstream.WithSubjectFilter(outboxPrefix+">"))
		if err != nil {
			return 0, 0, unavailable(ctx, fmt.Errorf("jetstream: outbox: count: %w", err))
		}
		o.mu.Lock()
		o.counts, o.at = map[string]int64{}, time.Now()
		for s, n := range info.State.Subjects {
			o.counts[s] = int64(n)
		}
		o.mu.Unlock()
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	return max(o.counts[queueSubject(queue)], 0), max(o.counts[deadSubject(queue)], 0), nil
}

// add adjusts the count of subject by what this node just did.
func (o *Outbox) add(subject string, n int64) {
	o.mu.Lock()
	if o.counts != nil {
		o.counts[subject] += n
	}
	o.mu.Unlock()
}

// Route copies each record stored in the channels' stream into the
// queues cfg.Route gives it, until ctx ends (it runs for the term of the
// webhooks lease). It returns ctx's error, having logged the others and
// tried again.
func (o *Outbox) Route(ctx context.Context) error {
	e := o.e
	log := e.opts.Logger
	var cons jetstream.Consumer
	for delay := 100 * time.Millisecond; cons == nil; delay = min(2*delay, 5*time.Second) {
		var err error
		cons, err = e.stream.CreateOrUpdateConsumer(ctx, jetstream.ConsumerConfig{
			Durable: routerName, FilterSubject: e.prefix + ">", DeliverPolicy: jetstream.DeliverNewPolicy,
			AckPolicy: jetstream.AckExplicitPolicy, AckWait: 5 * time.Second, MaxAckPending: routeBatch,
			InactiveThreshold: routerIdle, Replicas: e.opts.Replicas,
		})
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			log.Warn("jetstream: webhooks router", "err", err)
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(delay):
			}
		}
	}
	epochs := map[string]string{}
	for ctx.Err() == nil {
		fctx, cancel := context.WithTimeout(ctx, time.Second)
		batch, err := cons.Fetch(routeBatch, jetstream.FetchContext(fctx))
		if err != nil {
			cancel()
			if ctx.Err() == nil {
				log.Warn("jetstream: webhooks router: fetch", "err", err)
				sleep(ctx, time.Second)
			}
			continue
		}
		var msgs []jetstream.Msg
		for m := range batch.Messages() {
			msgs = append(msgs, m)
		}
		cancel()
		if len(msgs) == 0 {
			continue
		}
		for delay := 100 * time.Millisecond; ctx.Err() == nil; delay = min(2*delay, 5*time.Second) {
			mask, err := o.route(ctx, msgs, epochs)
			if err == nil {
				if o.cfg.Notify != nil && mask != 0 {
					o.cfg.Notify(mask)
				}
				break
			}
			log.Warn("jetstream: webhooks router: route", "err", err)
			sleep(ctx, delay)
		}
		if len(epochs) > 10_000 {
			clear(epochs)
		}
	}
	return ctx.Err()
}

// route queues the entries of msgs and acknowledges them, returning the
// queues that got entries.
func (o *Outbox) route(ctx context.Context, msgs []jetstream.Msg, epochs map[string]string) (uint64, error) {
	var out []*nats.Msg
	var mask uint64
	for _, m := range msgs {
		meta, err := m.Metadata()
		if err != nil {
			return 0, err
		}
		ch, ok := unkey(m.Subject()[len(o.e.prefix):])
		if !ok {
			continue
		}
		h := m.Headers()
		t, _ := strconv.ParseInt(h.Get(hdrTime), 10, 64)
		rec := store.Record{ID: h.Get(hdrID), Time: time.Unix(0, t), Payload: m.Data()}
		bits := uint64(0)
		if o.cfg.Route != nil {
			bits = o.cfg.Route(ch, &rec)
		}
		if bits == 0 {
			continue
		}
		ep, ok := epochs[ch]
		if !ok {
			if ep, err = o.e.epoch(ctx, ch, false); err != nil {
				return 0, err
			}
			epochs[ch] = ep
		}
		off, _ := strconv.ParseUint(h.Get(hdrOffset), 10, 64)
		entry := store.OutboxEntry{Time: rec.Time, Channel: ch, Offset: off, Epoch: ep, Payload: rec.Payload}
		for i, q := range o.cfg.Queues {
			if bits&(1<<i) == 0 {
				continue
			}
			em := entryMsg(queueSubject(q), &entry)
			em.Header.Set(jetstream.MsgIDHeader, strconv.FormatUint(meta.Sequence.Stream, 10)+"."+key(q))
			out = append(out, em)
			mask |= 1 << i
		}
	}
	if err := o.publish(ctx, out); err != nil {
		return 0, err
	}
	for _, em := range out {
		o.add(em.Subject, 1)
	}
	for _, m := range msgs {
		if err := m.Ack(); err != nil {
			return 0, fmt.Errorf("acknowledge: %w", err)
		}
	}
	return mask, nil
}

// routed returns the stream sequence below which every record has been
// routed (the trimmer keeps what follows), or 0 when no router runs.
func (e *Engine) routed(ctx context.Context) (uint64, error) {
	info, err := e.stream.Consumer(ctx, routerName)
	if errors.Is(err, jetstream.ErrConsumerNotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	return info.CachedInfo().AckFloor.Stream + 1, nil
}

func sleep(ctx context.Context, d time.Duration) {
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}
