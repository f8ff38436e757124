package webhooks

import (
	"context"
	"crypto/sha256"
	"encoding/base32"
	"encoding/json"
	"fmt"
	"slices"
	"sync"
	"time"
)

// worker is one endpoint's delivery loop. It owns the endpoint's pending
// window: up to window entries read from the outbox, in sequence order,
// each waiting, in flight, or due again later. Deliveries stream from
// the outbox: however long the endpoint is down, memory holds the window
// and no more. The loop is the only writer of the window; requests in
// flight report back on results, which has room for every one of them,
// so a request never waits for the loop.
type worker struct {
	svc *Service
	ep  *Endpoint

	wantsMessages, wantsLife bool
	limit                    int // requests in flight: 1 when ordered
	window                   int // entries held in memory

	wake    chan struct{} // 1-buffered: the outbox got entries
	quit    chan struct{} // closed by stop
	results chan result
	stopped sync.Once

	// Owned by the loop.
	pending  []*item
	after    uint64 // the last sequence read
	more     bool   // the outbox may hold entries after after
	inflight int
	// reload asks to read the window again from the queue's start once
	// nothing is in flight: a dead-letter move failed, and the entries it
	// dropped from the window are still queued.
	reload bool

	mu sync.Mutex // guards st
	st status
}

// item is one entry of the window.
type item struct {
	e         Entry
	loaded    time.Time // when it was read: a partial batch waits from then
	failures  int
	firstFail time.Time
	due       time.Time // not sent before (after a failure)
	busy      bool      // in flight
	done      bool      // delivered or buried: leaves the window
}

// result is what a request in flight reports.
type result struct {
	items   []*item
	attempt Attempt
	bad     []*item // entries that could not be turned into events
	took    time.Duration
}

// status is what the API shows of an endpoint.
type status struct {
	disabled    bool
	lastSuccess time.Time
	lastErrorAt time.Time
	lastError   string
	lastStatus  int
}

func newWorker(s *Service, ep *Endpoint) *worker {
	w := &worker{svc: s, ep: ep, limit: ep.Parallel, wake: make(chan struct{}, 1), quit: make(chan struct{}), more: true}
	if ep.Ordered {
		w.limit = 1
	}
	for _, t := range ep.Events {
		if t == EventMessage {
			w.wantsMessages = true
		} else {
			w.wantsLife = true
		}
	}
	w.window = min(max(2*w.limit*ep.Batch.Size, 256), 4096)
	w.results = make(chan result, w.limit)
	return w
}

func (w *worker) signal() {
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

func (w *worker) stop() { w.stopped.Do(func() { close(w.quit) }) }

func (w *worker) status() status {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.st
}

// run delivers in each of the Service's terms until stop. Between terms
// it holds nothing: a term that ends cancels what is in flight (those
// entries stay queued) and the next one reads the queue from its start.
func (w *worker) run(parent context.Context) {
	for {
		term, ok := w.svc.awaitTerm(w.quit)
		if !ok || w.runTerm(parent, term) {
			return
		}
		w.pending, w.after, w.more, w.reload = nil, 0, true, false
	}
}

// runTerm delivers until term or parent ends (false) or stop (true),
// then cancels what is in flight and waits for it.
func (w *worker) runTerm(parent, term context.Context) (stopped bool) {
	ctx, cancel := context.WithCancel(term)
	defer cancel()
	defer context.AfterFunc(parent, cancel)()
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	drain := func() {
		cancel()
		for w.inflight > 0 {
			r := <-w.results
			w.inflight--
			w.svc.metrics.observe(w.ep.Name, r)
		}
	}
	for {
		if w.reload && w.inflight == 0 {
			w.pending, w.after, w.more, w.reload = nil, 0, true, false
		}
		w.bound(ctx)
		w.load(ctx)
		next := w.dispatch(ctx)
		var tick <-chan time.Time
		if !next.IsZero() {
			timer.Reset(max(next.Sub(w.svc.opts.Now()), time.Millisecond))
			tick = timer.C
		}
		select {
		case r := <-w.results:
			w.handle(ctx, r)
		case <-w.wake:
			w.more = true
		case <-tick:
		case <-ctx.Done():
			drain()
			return false
		case <-w.quit:
			drain()
			return true
		}
	}
}

// load fills the window from the outbox.
func (w *worker) load(ctx context.Context) {
	// Refill once half the window is free (or it is empty), not after
	// every delivery: a read costs the same for one entry as for many.
	room := w.window - len(w.pending)
	if !w.more || room <= 0 || (len(w.pending) > 0 && room < w.window/2) {
		return
	}
	es, err := w.svc.outbox.Read(ctx, w.ep.Name, w.after, room)
	if err != nil {
		if ctx.Err() == nil {
			w.svc.opts.Logger.Error("webhooks: read the outbox", "endpoint", w.ep.Name, "err", err)
		}
		return // tried again on the next wake-up
	}
	now := w.svc.opts.Now()
	for _, e := range es {
		w.pending = append(w.pending, &item{e: e, loaded: now})
		w.after = e.Seq
	}
	w.more = len(es) == room
}

// bound moves the oldest entries past the endpoint's outbox size to its
// dead letters. Entries in flight are left to finish.
func (w *worker) bound(ctx context.Context) {
	depth, _, err := w.svc.outbox.Depth(w.ep.Name)
	excess := depth - int64(w.ep.OutboxSize)
	if err != nil || excess <= 0 {
		return
	}
	reason := fmt.Sprintf("outbox full: more than %d events waited for this endpoint", w.ep.OutboxSize)
	var victims []Entry
	for _, it := range w.pending {
		if int64(len(victims)) == excess {
			break
		}
		if !it.busy && !it.done {
			it.done = true
			victims = append(victims, it.e)
		}
	}
	for int64(len(victims)) < excess {
		es, err := w.svc.outbox.Read(ctx, w.ep.Name, w.after, int(min(excess-int64(len(victims)), 1000)))
		if err != nil || len(es) == 0 {
			break
		}
		victims = append(victims, es...)
		w.after = es[len(es)-1].Seq
	}
	w.compact()
	if len(victims) > 0 {
		w.bury(ctx, victims, reason)
	}
}

func (w *worker) bury(ctx context.Context, es []Entry, reason string) {
	if err := w.svc.outbox.Bury(context.WithoutCancel(ctx), w.ep.Name, es, reason); err != nil {
		w.svc.opts.Logger.Error("webhooks: move events to the dead letters", "endpoint", w.ep.Name, "events", len(es), "err", err)
		w.reload = true
		return
	}
	w.svc.metrics.dead.WithLabelValues(w.ep.Name).Add(float64(len(es)))
	w.svc.opts.Logger.Warn("webhooks: events moved to the dead letters", "endpoint", w.ep.Name, "events", len(es), "reason", reason)
}

// compact drops finished items from the window.
func (w *worker) compact() {
	w.pending = slices.DeleteFunc(w.pending, func(it *item) bool { return it.done })
}

// dispatch sends what is due, within the endpoint's bound of requests in
// flight, and returns when it should run again (zero: on an event).
// Ordered endpoints send the window's head only, so a failed event holds
// back those after it.
func (w *worker) dispatch(ctx context.Context) time.Time {
	if w.status().disabled {
		return time.Time{}
	}
	now := w.svc.opts.Now()
	var next time.Time
	later := func(t time.Time) {
		if next.IsZero() || t.Before(next) {
			next = t
		}
	}
	size := w.ep.Batch.Size
	var batch []*item
	for _, it := range w.pending {
		if w.inflight >= w.limit {
			return next
		}
		if it.busy || it.done {
			if w.ep.Ordered {
				return next
			}
			continue
		}
		if it.due.After(now) {
			later(it.due)
			if w.ep.Ordered {
				break
			}
			continue
		}
		batch = append(batch, it)
		if len(batch) == size {
			w.send(ctx, batch)
			batch = nil
		}
	}
	if len(batch) == 0 || w.inflight >= w.limit {
		return next
	}
	// A partial batch waits for more events, up to the batch timeout from
	// when its oldest was read, unless it was sent before.
	if deadline := batch[0].loaded.Add(w.ep.Batch.Timeout); size > 1 && batch[0].failures == 0 && now.Before(deadline) {
		later(deadline)
		return next
	}
	w.send(ctx, batch)
	return next
}

// send starts a request for batch.
func (w *worker) send(ctx context.Context, batch []*item) {
	for _, it := range batch {
		it.busy = true
	}
	w.inflight++
	go func() {
		w.results <- w.deliver(ctx, batch)
	}()
}

// deliver makes one attempt for batch and, once delivered, removes its
// entries from the outbox.
func (w *worker) deliver(ctx context.Context, batch []*item) result {
	r := result{items: batch}
	if w.svc.sender.BreakerState(w.ep.Name) == "open" {
		// Refused before anything is read or rendered: a dead endpoint
		// costs its retries nothing but this check.
		r.attempt = Attempt{Outcome: Retry, Err: ErrBreakerOpen}
		return r
	}
	events := make([]Event, 0, len(batch))
	for _, it := range batch {
		ev, err := decode(&it.e)
		if err != nil {
			r.bad = append(r.bad, it)
			continue
		}
		events = append(events, ev)
	}
	if len(events) == 0 {
		r.attempt = Attempt{Outcome: Delivered}
		return r
	}
	body, err := w.ep.Render(events)
	if err != nil {
		r.attempt = Attempt{Outcome: Retry, Err: err}
		return r
	}
	id := events[0].ID
	if w.ep.Batch.Size > 1 {
		id = batchID(events)
	}
	start := time.Now() // the machine's time: this measures latency
	r.attempt = w.svc.sender.Send(ctx, w.ep, id, w.svc.opts.Now(), body)
	r.took = time.Since(start)
	if r.attempt.Outcome == Delivered {
		seqs := make([]uint64, 0, len(batch))
		for _, it := range batch {
			if !slices.Contains(r.bad, it) {
				seqs = append(seqs, it.e.Seq)
			}
		}
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer cancel()
		if err := w.svc.outbox.Remove(rctx, w.ep.Name, seqs); err != nil {
			// Delivered, but still queued: it goes out again after a
			// restart, with the same id.
			w.svc.opts.Logger.Error("webhooks: remove delivered events", "endpoint", w.ep.Name, "err", err)
		}
	}
	return r
}

// handle takes a request's result.
func (w *worker) handle(ctx context.Context, r result) {
	w.inflight--
	w.svc.metrics.observe(w.ep.Name, r)
	now := w.svc.opts.Now()
	if len(r.bad) > 0 {
		es := make([]Entry, len(r.bad))
		for i, it := range r.bad {
			it.done = true
			es[i] = it.e
		}
		w.bury(ctx, es, "the queued event could not be read")
	}
	a := r.attempt
	w.mu.Lock()
	switch a.Outcome {
	case Delivered:
		w.st.lastSuccess = now
	default:
		w.st.lastErrorAt, w.st.lastStatus = now, a.Status
		if a.Err != nil {
			w.st.lastError = a.Err.Error()
		}
	}
	if a.Outcome == Gone && !w.st.disabled {
		w.st.disabled = true
		w.svc.opts.Logger.Error("webhooks: the endpoint answered 410 Gone; it is disabled until a test delivery succeeds or the server restarts; its events stay queued",
			"endpoint", w.ep.Name, "url", w.ep.URLParsed.Redacted())
	}
	w.mu.Unlock()

	var expired []Entry
	for _, it := range r.items {
		if it.done {
			continue
		}
		it.busy = false
		switch a.Outcome {
		case Delivered:
			it.done = true
		case Retry:
			it.failures++
			if it.firstFail.IsZero() {
				it.firstFail = now
			}
			if now.Sub(it.firstFail) >= w.ep.Retry.For {
				it.done = true
				expired = append(expired, it.e)
				continue
			}
			it.due = now.Add(NextDelay(w.ep.Retry, it.failures, a.RetryAfter, w.svc.opts.Jitter()))
		}
	}
	if len(expired) > 0 {
		w.bury(ctx, expired, fmt.Sprintf("gave up after %s of failed attempts: %v", w.ep.Retry.For, a.Err))
	}
	w.compact()
}

// enable lets a disabled endpoint deliver again.
func (w *worker) enable() {
	w.mu.Lock()
	w.st.disabled = false
	w.mu.Unlock()
	w.signal()
}

// batchID is the webhook-id of a batch: "batch_" and a digest of its
// events' ids, in order. The same events sent again (a retry) have the
// same id; a batch regrouped after a failure has another even when it
// starts with the same event and is as long, so that a receiver deduping
// on webhook-id never drops events it has not had. Receivers of batches
// dedupe on the id of each event in them.
func batchID(events []Event) string {
	h := sha256.New()
	for _, ev := range events {
		h.Write([]byte(ev.ID))
		h.Write([]byte{0})
	}
	return "batch_" + base32.StdEncoding.WithPadding(base32.NoPadding).EncodeToString(h.Sum(nil)[:20])
}

func mustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(fmt.Sprintf("webhooks: marshal %T: %v", v, err)) // only types of this package, which always marshal
	}
	return b
}
