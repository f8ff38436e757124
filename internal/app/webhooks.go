package app

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/heraldrt/herald/engine/jetstream"
	"github.com/heraldrt/herald/store"
	"github.com/heraldrt/herald/webhooks"
)

// newWebhooks compiles the webhooks: section and returns its Service,
// with the outbox options the engine must store its entries with; nil
// and none without endpoints.
func (c Config) newWebhooks(logger *slog.Logger) (*webhooks.Service, store.Outbox, error) {
	eps, err := c.Webhooks.Compile(c.env())
	if err != nil || len(eps) == 0 {
		return nil, store.Outbox{}, err
	}
	// On a cluster every node runs the service; the holder of the
	// webhooks lease delivers (see startWebhooks).
	svc, err := webhooks.New(webhooks.Options{Endpoints: eps, Logger: logger, Standby: c.Engine.NATS != nil})
	if err != nil {
		return nil, store.Outbox{}, err
	}
	return svc, store.Outbox{
		Queues: svc.Queues(),
		Route:  func(channel string, rec *store.Record) uint64 { return svc.Route(channel, rec.Payload) },
		Notify: svc.Notify,
	}, nil
}

// startWebhooks starts the webhooks on the engine's outbox. On a cluster
// the outbox is the JetStream engine's, shared by the nodes, and the node
// holding the webhooks lease routes stored messages into it and delivers
// them: the cluster sends each event once, not once per node.
func (a *App) startWebhooks(routes store.Outbox) error {
	if a.badger != nil {
		return a.hooks.Start(a.srv, outbox{a.badger})
	}
	js, ok := a.engine.(*jetstream.Engine)
	if !ok {
		return fmt.Errorf("webhooks: engine %T has no outbox", a.engine)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	ob, err := js.OpenOutbox(ctx, routes)
	cancel()
	if err != nil {
		return fmt.Errorf("webhooks: %w", err)
	}
	if err := a.hooks.Start(a.srv, outbox{ob}); err != nil {
		ob.Close()
		return err
	}
	a.lead(js, "webhooks", func(term context.Context) {
		var wg sync.WaitGroup
		wg.Go(func() { _ = ob.Route(term) })
		a.hooks.Lead(term)
		wg.Wait()
	})
	a.leadStops = append(a.leadStops, ob.Close) // after the bid has ended
	return nil
}

// outboxStore is an engine's outbox queues: the Badger store's, or the
// JetStream engine's.
type outboxStore interface {
	Enqueue(ctx context.Context, queue string, entries []store.OutboxEntry) error
	ReadOutbox(ctx context.Context, queue string, after uint64, limit int) ([]store.OutboxEntry, error)
	Remove(ctx context.Context, queue string, seqs []uint64) error
	Bury(ctx context.Context, queue string, entries []store.OutboxEntry, reason string) error
	ReadDead(ctx context.Context, queue string, after uint64, limit int) ([]store.DeadEntry, error)
	Revive(ctx context.Context, queue string, dead []store.DeadEntry) error
	OutboxDepth(queue string) (depth, dead int64, err error)
}

var (
	_ outboxStore = (*store.Store)(nil)
	_ outboxStore = (*jetstream.Outbox)(nil)
)

// outbox adapts an engine's outbox queues to what the webhooks deliver
// from.
type outbox struct{ s outboxStore }

func (o outbox) Enqueue(ctx context.Context, entries map[string][]webhooks.Entry) error {
	for queue, es := range entries {
		out := make([]store.OutboxEntry, len(es))
		for i, e := range es {
			out[i] = toStore(e)
		}
		if err := o.s.Enqueue(ctx, queue, out); err != nil {
			return err
		}
	}
	return nil
}

func (o outbox) Read(ctx context.Context, queue string, after uint64, limit int) ([]webhooks.Entry, error) {
	es, err := o.s.ReadOutbox(ctx, queue, after, limit)
	out := make([]webhooks.Entry, len(es))
	for i, e := range es {
		out[i] = fromStore(e)
	}
	return out, err
}

func (o outbox) Remove(ctx context.Context, queue string, seqs []uint64) error {
	return o.s.Remove(ctx, queue, seqs)
}

func (o outbox) Bury(ctx context.Context, queue string, entries []webhooks.Entry, reason string) error {
	out := make([]store.OutboxEntry, len(entries))
	for i, e := range entries {
		out[i] = toStore(e)
	}
	return o.s.Bury(ctx, queue, out, reason)
}

func (o outbox) ReadDead(ctx context.Context, queue string, after uint64, limit int) ([]webhooks.DeadEntry, error) {
	ds, err := o.s.ReadDead(ctx, queue, after, limit)
	out := make([]webhooks.DeadEntry, len(ds))
	for i, d := range ds {
		out[i] = webhooks.DeadEntry{Entry: fromStore(d.OutboxEntry), Died: d.Died, Reason: d.Reason}
	}
	return out, err
}

func (o outbox) Revive(ctx context.Context, queue string, dead []webhooks.DeadEntry) error {
	out := make([]store.DeadEntry, len(dead))
	for i, d := range dead {
		out[i] = store.DeadEntry{OutboxEntry: toStore(d.Entry), Died: d.Died, Reason: d.Reason}
	}
	return o.s.Revive(ctx, queue, out)
}

func (o outbox) Depth(queue string) (int64, int64, error) { return o.s.OutboxDepth(queue) }

func toStore(e webhooks.Entry) store.OutboxEntry {
	return store.OutboxEntry{Seq: e.Seq, Time: e.Time, Channel: e.Channel, Offset: e.Offset, Epoch: e.Epoch, Payload: e.Payload}
}

func fromStore(e store.OutboxEntry) webhooks.Entry {
	return webhooks.Entry{Seq: e.Seq, Time: e.Time, Channel: e.Channel, Offset: e.Offset, Epoch: e.Epoch, Payload: e.Payload}
}
