package jetstream

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// A lease makes one node of the cluster do something at a time: deliver
// the webhooks, for one. It is a key of the state bucket holding the
// holder's id and the time its hold ends. A node takes it when the key is
// missing or its time has passed (by the taker's clock), with a create or
// an update at the revision it read, so of two nodes trying at once one
// wins. The holder renews it every quarter of its length and gives up the
// work a quarter before it ends if it could not: clocks more than a
// quarter of the lease apart could let two nodes work at once for a
// moment, which is why the work done under a lease must tolerate that
// (webhooks are delivered at least once, with the same ids).

// DefaultLeaseTTL is a lease's length (Options.LeaseTTL).
const DefaultLeaseTTL = 10 * time.Second

// leaseValue is a lease's key's value.
type leaseValue struct {
	Node  string `json:"node"`
	Until int64  `json:"until"` // Unix nanoseconds
}

// Lead runs term each time this node holds the lease called name, with a
// context that ends when the lease is lost, and returns once ctx has
// ended and term with it (the lease is then released at once, so another
// node need not wait for it to run out). Lead owns term's goroutine.
func (e *Engine) Lead(ctx context.Context, name string, term func(ctx context.Context)) {
	k := key("lease/" + name)
	ttl := e.opts.LeaseTTL
	for ctx.Err() == nil {
		rev, until, err := e.takeLease(ctx, k, ttl)
		if err != nil && ctx.Err() == nil {
			e.opts.Logger.Warn("jetstream: lease", "lease", name, "err", err)
		}
		if rev == 0 {
			// Held by another node, or NATS did not answer: look again
			// when it may have run out.
			wait := ttl / 4
			if !until.IsZero() {
				wait = min(max(time.Until(until), 10*time.Millisecond), ttl/4)
			}
			select {
			case <-ctx.Done():
			case <-time.After(wait):
			}
			continue
		}
		e.opts.Logger.Info("jetstream: this node holds the lease", "lease", name)
		rev = e.hold(ctx, name, k, rev, term)
		if ctx.Err() != nil && rev != 0 {
			dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
			_ = e.state.Delete(dctx, k, jetstream.LastRevision(rev))
			cancel()
		}
	}
}

// takeLease takes the lease at key k if it is free or run out, and
// returns the revision this node wrote (0: not taken) and, when held by
// another node, when its hold ends.
func (e *Engine) takeLease(ctx context.Context, k string, ttl time.Duration) (rev uint64, until time.Time, err error) {
	rctx, cancel := context.WithTimeout(ctx, ttl/4)
	defer cancel()
	mine := e.leaseValue(ttl)
	ent, err := e.state.Get(rctx, k)
	switch {
	case errors.Is(err, jetstream.ErrKeyNotFound):
		rev, err = e.state.Create(rctx, k, mine)
	case err != nil:
		return 0, time.Time{}, fmt.Errorf("read: %w", err)
	default:
		var v leaseValue
		if json.Unmarshal(ent.Value(), &v) == nil && v.Node != e.node && e.opts.Now().UnixNano() < v.Until {
			return 0, time.Unix(0, v.Until), nil
		}
		rev, err = e.state.Update(rctx, k, mine, ent.Revision())
	}
	if isConflict(err) {
		return 0, time.Time{}, nil // another node took it first
	}
	if err != nil {
		return 0, time.Time{}, fmt.Errorf("take: %w", err)
	}
	return rev, time.Time{}, nil
}

// hold runs term while it renews the lease, and returns the lease's last
// revision once term has returned (0 when the lease was lost).
func (e *Engine) hold(ctx context.Context, name, k string, rev uint64, term func(ctx context.Context)) uint64 {
	ttl := e.opts.LeaseTTL
	tctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		term(tctx)
	}()
	defer func() { cancel(); <-done }()
	// The work stops a quarter of the lease before it runs out unless
	// renewed: another node may take it from then on.
	stopBy := e.opts.Now().Add(ttl - ttl/4)
	tick := time.NewTicker(ttl / 4)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return rev
		case <-done:
			return rev
		case <-tick.C:
		}
		rctx, rcancel := context.WithTimeout(ctx, ttl/4)
		next, err := e.state.Update(rctx, k, e.leaseValue(ttl), rev)
		rcancel()
		switch {
		case err == nil:
			rev, stopBy = next, e.opts.Now().Add(ttl-ttl/4)
		case isConflict(err):
			e.opts.Logger.Warn("jetstream: lease taken by another node", "lease", name)
			return 0
		case ctx.Err() != nil:
			return rev
		case !e.opts.Now().Before(stopBy):
			e.opts.Logger.Warn("jetstream: lease not renewed in time; giving the work up", "lease", name, "err", err)
			return 0
		}
	}
}

func (e *Engine) leaseValue(ttl time.Duration) []byte {
	b, _ := json.Marshal(leaseValue{Node: e.node, Until: e.opts.Now().Add(ttl).UnixNano()})
	return b
}
