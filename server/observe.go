package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"
)

// Life events. The core tells observers what happens in it — sessions
// opening and closing, users joining and leaving channels, channels
// becoming occupied and vacated, messages committed, moderation — so
// that webhooks, metrics and the admin dashboard are built beside the
// core, from its events, without fields or methods of their own on
// Server.
//
// Observers never slow the core down. Each has a bounded queue
// (ObserverQueue events) drained by a goroutine the Server owns; emitting
// an event appends it to the queues of the observers that want its kind,
// under a lock held for that append only, and never waits. An observer
// that falls behind by more than the bound loses the events past it:
// they are counted (Observer.Dropped, and herald_observer_events_dropped_total
// in the metrics) and logged, at most once per dropLogEvery per
// observer. A kind no observer wants costs the core one atomic load where
// it would be emitted, so message events cost nothing while nobody
// listens.

// EventKind says what happened.
type EventKind uint8

// The kinds of life events, with the Event fields each one sets (At and
// Kind are always set).
const (
	// SessionOpened: Session, Transport, User (empty for the API key and
	// anonymous clients).
	SessionOpened EventKind = iota + 1
	// SessionClosed: Session, Transport, User, Reason.
	SessionClosed
	// UserJoined: User, Channel, Session, Transport (the session that
	// joined) — the user's first session subscribed to
	// a channel whose rule keeps presence. A user who leaves and comes
	// back within the presence grace neither leaves nor joins again.
	UserJoined
	// UserLeft: User, Channel — the user's last session left the channel
	// and did not come back within the presence grace.
	UserLeft
	// StateChanged: User, Channel, State (null once cleared) — a member's
	// short-lived state (typing), set, cleared or expired.
	StateChanged
	// UserOnline: User, Session, Transport (the session that opened) —
	// the user's first session opened (none was open, or none within the
	// presence grace).
	UserOnline
	// UserOffline: User — the user's last session closed and none opened
	// within the presence grace.
	UserOffline
	// ChannelOccupied: Channel — the channel has a subscriber again (it
	// had none).
	ChannelOccupied
	// ChannelVacated: Channel — the channel's last subscriber left.
	ChannelVacated
	// MessageCommitted: Channel, Message — a message is stored. Per
	// channel, events come in offset order. Ephemeral messages are never
	// committed and have no event.
	MessageCommitted
	// UserDisconnected: User, Count — the backend disconnected the user's
	// sessions (POST /api/disconnect); Count is how many there were.
	UserDisconnected
	// UserBanned: User, Until, Count — the backend banned the user and
	// closed Count sessions of theirs.
	UserBanned
	// UserUnbanned: User — the backend lifted the user's ban.
	UserUnbanned

	numEventKinds
)

var eventKindNames = [...]string{
	SessionOpened:    "session_opened",
	SessionClosed:    "session_closed",
	UserJoined:       "user_joined",
	UserLeft:         "user_left",
	StateChanged:     "state_changed",
	UserOnline:       "user_online",
	UserOffline:      "user_offline",
	ChannelOccupied:  "channel_occupied",
	ChannelVacated:   "channel_vacated",
	MessageCommitted: "message_committed",
	UserDisconnected: "user_disconnected",
	UserBanned:       "user_banned",
	UserUnbanned:     "user_unbanned",
}

func (k EventKind) String() string {
	if k > 0 && k < numEventKinds {
		return eventKindNames[k]
	}
	return fmt.Sprintf("event_kind(%d)", int(k))
}

// Event is one life event. Which fields are set depends on Kind (see the
// kinds); the others are zero.
type Event struct {
	Kind EventKind
	// At is when it happened, on the server's clock (Config.Now).
	At time.Time
	// Session is the session's id ("s_…").
	Session string
	// Transport is the label the session's transport registered with
	// (Server.Transport).
	Transport string
	User      string
	Channel   string
	// Reason is why a session closed.
	Reason Reason
	// Until is when a ban ends.
	Until time.Time
	// Count is how many sessions a moderation action closed.
	Count int
	// State is a member's new state: JSON, null once cleared.
	State json.RawMessage
	// Message is the committed message. Shared with every session it is
	// delivered to: read it, never modify it.
	Message *Message
}

// ObserverQueue bounds the events waiting for one observer. Past it, new
// events for that observer are dropped and counted: an observer that
// cannot keep up loses events rather than slowing the core.
const ObserverQueue = 8192

// dropLogEvery paces the log line about an observer's drops.
const dropLogEvery = 10 * time.Second

// observerDrainTimeout bounds how long Shutdown waits for observers to
// handle what is queued for them.
const observerDrainTimeout = 5 * time.Second

// Observer is an observer registered with Server.Observe. Its handler
// runs on a goroutine of its own, owned by the Server: started by
// Observe, stopped by Shutdown once it has handled what was queued.
type Observer struct {
	name   string
	kinds  uint32 // one bit per EventKind
	handle func(Event)
	logger *slog.Logger
	limit  int // the queue's bound: ObserverQueue

	ready   chan struct{} // one slot: the queue may have events, or it closed
	done    chan struct{} // closed when the goroutine has returned
	dropped atomic.Uint64
	lastLog atomic.Int64 // unix nanoseconds of the last drop log line

	mu     sync.Mutex // guards the fields below
	queue  []observed
	closed bool
}

// observed is one queue entry: an event, or a flush marker.
type observed struct {
	ev    Event
	flush chan struct{} // closed once everything before it is handled
}

// Name returns the observer's name.
func (o *Observer) Name() string { return o.name }

// Dropped returns how many events the observer lost to a full queue.
func (o *Observer) Dropped() uint64 { return o.dropped.Load() }

// Flush waits until the observer has handled every event emitted before
// the call, or ctx is done. A reader of what an observer keeps (a metrics
// scrape) calls it to see every event that happened before its request.
func (o *Observer) Flush(ctx context.Context) error {
	mark := make(chan struct{})
	o.mu.Lock()
	if o.closed {
		o.mu.Unlock()
		mark = o.done // stopping: what is left is handled before done
	} else {
		// A marker is never dropped: it carries no event, only a wait.
		o.queue = append(o.queue, observed{flush: mark})
		o.mu.Unlock()
		o.signal()
	}
	select {
	case <-mark:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (o *Observer) wants(k EventKind) bool { return o.kinds&(1<<k) != 0 }

// push queues ev, or drops and counts it when the queue is full. It never
// blocks.
func (o *Observer) push(ev Event) {
	o.mu.Lock()
	if o.closed {
		o.mu.Unlock()
		return // after Shutdown: nothing is delivered any more
	}
	if len(o.queue) >= o.limit {
		o.mu.Unlock()
		o.drop()
		return
	}
	o.queue = append(o.queue, observed{ev: ev})
	o.mu.Unlock()
	o.signal()
}

func (o *Observer) drop() {
	n := o.dropped.Add(1)
	now := time.Now().UnixNano() // the machine's time: this paces a log
	last := o.lastLog.Load()
	if now-last < int64(dropLogEvery) || !o.lastLog.CompareAndSwap(last, now) {
		return
	}
	o.logger.Warn("observer is not keeping up; its events are dropped", "observer", o.name,
		"queue", o.limit, "dropped_total", n)
}

func (o *Observer) signal() {
	select {
	case o.ready <- struct{}{}:
	default:
	}
}

// run hands queued events to the handler, in order, one at a time, until
// the observer is closed and its queue is empty.
func (o *Observer) run() {
	defer close(o.done)
	var batch []observed
	for {
		o.mu.Lock()
		for len(o.queue) == 0 && !o.closed {
			o.mu.Unlock()
			<-o.ready
			o.mu.Lock()
		}
		if len(o.queue) == 0 { // closed, and all is handled
			o.mu.Unlock()
			return
		}
		batch, o.queue = o.queue, batch[:0]
		o.mu.Unlock()
		for i := range batch {
			if batch[i].flush != nil {
				close(batch[i].flush)
			} else {
				o.handle(batch[i].ev)
			}
		}
		clear(batch) // drop message references while idle
	}
}

// close stops the observer once what is queued is handled.
func (o *Observer) close() {
	o.mu.Lock()
	o.closed = true
	o.mu.Unlock()
	o.signal()
}

// observers is the Server's set of observers.
type observers struct {
	logger   *slog.Logger
	queueLen int // the bound of new observers' queues, when not ObserverQueue (tests)
	// wanted has one bit per EventKind some observer wants: the one
	// check an emitter makes before it builds an event.
	wanted atomic.Uint32
	list   atomic.Pointer[[]*Observer] // copied on write

	mu      sync.Mutex // guards the list's writes and closed
	closed  bool
	stopped sync.Once
}

// Observe registers an observer named name (for logs and metrics) for
// the given kinds of events: handle is called with each, one at a time,
// in the order they were emitted (so per channel, committed messages come
// in offset order), on a goroutine the Server owns. handle may take its
// time — the core never waits for it — but whatever it falls behind by
// past ObserverQueue events is dropped and counted. Events emitted
// before Observe are not replayed: the composition root registers
// observers before it serves traffic. After Shutdown, Observe fails.
func (s *Server) Observe(name string, handle func(Event), kinds ...EventKind) (*Observer, error) {
	if name == "" || handle == nil || len(kinds) == 0 {
		return nil, errors.New("observe: an observer needs a name, a handler and at least one kind")
	}
	o := &Observer{name: name, handle: handle, logger: s.logger, limit: ObserverQueue,
		ready: make(chan struct{}, 1), done: make(chan struct{})}
	if s.obs.queueLen > 0 {
		o.limit = s.obs.queueLen // a test's smaller bound
	}
	for _, k := range kinds {
		if k == 0 || k >= numEventKinds {
			return nil, fmt.Errorf("observe: observer %q: %s is not a kind of event", name, k)
		}
		o.kinds |= 1 << k
	}
	obs := &s.obs
	obs.mu.Lock()
	defer obs.mu.Unlock()
	if obs.closed {
		return nil, fmt.Errorf("observe: observer %q: %w", name, ErrShuttingDown)
	}
	var list []*Observer
	for _, x := range obs.all() {
		if x.name == name {
			return nil, fmt.Errorf("observe: an observer named %q is registered already", name)
		}
		list = append(list, x)
	}
	list = append(list, o)
	obs.list.Store(&list)
	obs.wanted.Store(obs.wanted.Load() | o.kinds)
	go o.run() // owned: stopped and waited for by Shutdown (observers.stop)
	return o, nil
}

// want reports whether some observer wants events of kind k.
func (obs *observers) want(k EventKind) bool { return obs.wanted.Load()&(1<<k) != 0 }

// emit queues ev for every observer that wants its kind. It never blocks;
// callers check want first, to build no event nobody wants.
func (obs *observers) emit(ev Event) {
	p := obs.list.Load()
	if p == nil {
		return
	}
	for _, o := range *p {
		if o.wants(ev.Kind) {
			o.push(ev)
		}
	}
}

// all returns the registered observers.
func (obs *observers) all() []*Observer {
	if p := obs.list.Load(); p != nil {
		return *p
	}
	return nil
}

// stop closes every observer and waits, up to observerDrainTimeout, for
// them to handle what is queued. Idempotent.
func (obs *observers) stop() {
	obs.stopped.Do(func() {
		obs.mu.Lock()
		obs.closed = true
		obs.mu.Unlock()
		list := obs.all()
		for _, o := range list {
			o.close()
		}
		timer := time.NewTimer(observerDrainTimeout)
		defer timer.Stop()
		for _, o := range list {
			select {
			case <-o.done:
			case <-timer.C:
				obs.logger.Warn("observers still busy at shutdown; leaving them", "observer", o.name)
				return
			}
		}
	})
}
