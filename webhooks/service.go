package webhooks

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/heraldrt/herald/server"
)

// Options configures a Service. Zero fields take the defaults given.
type Options struct {
	// Endpoints are the compiled endpoints (Config.Compile), at most 64.
	Endpoints []*Endpoint
	// Client sends the requests. Default: a client of its own, keeping
	// connections to each endpoint alive; each endpoint's timeout applies.
	Client *http.Client
	// UserAgent is sent with every request. Default "Herald-Webhooks/1".
	UserAgent string
	// Logger receives the logs. Default slog.Default().
	Logger *slog.Logger
	// Now is the clock. Default time.Now.
	Now func() time.Time
	// Jitter returns a number in [0,1) spreading retries. Default
	// math/rand/v2's Float64.
	Jitter func() float64
	// BreakerTimeout, when set, replaces every endpoint's breaker.timeout
	// (tests).
	BreakerTimeout time.Duration
	// Standby makes the Service deliver and queue life events only during
	// a call of Lead: the nodes of a cluster all run one, and the node
	// holding the webhooks lease leads. Default false: it delivers from
	// Start to Shutdown.
	Standby bool
}

// maxEndpoints is how many endpoints a Service takes: one outbox queue
// bit each.
const maxEndpoints = 64

// lifeBuffer bounds the life events waiting to be queued; past it they
// are dropped, counted and logged.
const lifeBuffer = 1 << 16

// Service delivers webhooks: one delivery loop per endpoint, reading the
// endpoint's outbox queue, and an observer of the core's life events that
// queues them. New makes it, the composition root hands Route and Notify
// to the engine's outbox, then Start runs it and Shutdown stops it.
//
// Goroutines: per endpoint, one delivery loop (started by Start, ended by
// Shutdown), and up to the endpoint's parallel bound of requests in
// flight, each owned by its loop, which waits for them; one goroutine
// queueing life events, ended by Shutdown.
type Service struct {
	opts    Options
	sender  *Sender
	workers []*worker
	byName  map[string]*worker
	metrics *metrics

	outbox Outbox
	obs    *server.Observer
	cancel context.CancelFunc
	wg     sync.WaitGroup

	lifeMu      sync.Mutex
	lifePending map[string][]Entry
	lifeCount   int
	// lastClosed is, per user, their last session to close, for the
	// disconnect that follows once the grace passes. Only the observer's
	// goroutine touches it; an entry goes with the user's disconnect.
	lastClosed map[string]server.Event
	lifeReady  chan struct{}
	lifeDone   chan struct{}
	stopOnce   sync.Once

	termMu sync.Mutex
	// term is the current term (nil between terms, or done and about to
	// be cleared); termChanged is closed, and replaced, when term changes.
	term        context.Context
	termChanged chan struct{}
}

// New returns a Service for opts' endpoints; Start runs it.
func New(opts Options) (*Service, error) {
	if len(opts.Endpoints) > maxEndpoints {
		return nil, fmt.Errorf("webhooks: %d endpoints, at most %d", len(opts.Endpoints), maxEndpoints)
	}
	if opts.Client == nil {
		opts.Client = &http.Client{Transport: &http.Transport{
			Proxy:               http.ProxyFromEnvironment,
			DialContext:         (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
			MaxIdleConnsPerHost: MaxParallel,
			IdleConnTimeout:     90 * time.Second,
			ForceAttemptHTTP2:   true,
		}}
	}
	if opts.UserAgent == "" {
		opts.UserAgent = "Herald-Webhooks/1"
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Jitter == nil {
		opts.Jitter = rand.Float64
	}
	s := &Service{opts: opts, sender: NewSender(opts.Client, opts.UserAgent), byName: map[string]*worker{},
		lifePending: map[string][]Entry{}, lifeReady: make(chan struct{}, 1), lifeDone: make(chan struct{}),
		lastClosed: map[string]server.Event{}, termChanged: make(chan struct{})}
	if !opts.Standby {
		s.term = context.Background() // one term, from Start to Shutdown
	}
	s.sender.breakerTimeout = opts.BreakerTimeout
	for _, ep := range opts.Endpoints {
		w := newWorker(s, ep)
		s.workers = append(s.workers, w)
		s.byName[ep.Name] = w
	}
	s.metrics = newMetrics(s)
	return s, nil
}

// Queues names the outbox queues the Service reads: one per endpoint, in
// the order of Route's bits.
func (s *Service) Queues() []string {
	out := make([]string, len(s.workers))
	for i, w := range s.workers {
		out[i] = w.ep.Name
	}
	return out
}

// Route returns the queues (bit i for Queues()[i]) that take a message
// stored in channel with the stored payload payload. The engine calls it
// in its commit, so that the entries are stored with the message.
func (s *Service) Route(channel string, payload []byte) uint64 {
	var mask uint64
	event, parsed := "", false
	for i, w := range s.workers {
		if !w.wantsMessages {
			continue
		}
		if !parsed {
			event, _ = server.StoredEvent(payload)
			parsed = true
		}
		if w.ep.Wants(EventMessage, channel, event) {
			mask |= 1 << i
		}
	}
	return mask
}

// Notify wakes the delivery loops of the queues that got entries (bit i
// for Queues()[i]). It never blocks.
func (s *Service) Notify(queues uint64) {
	for i, w := range s.workers {
		if queues&(1<<i) != 0 {
			w.signal()
		}
	}
}

// Start runs the delivery loops on outbox and, when an endpoint wants life
// events, observes them on srv.
func (s *Service) Start(srv *server.Server, outbox Outbox) error {
	if outbox == nil {
		return errors.New("webhooks: no outbox")
	}
	s.outbox = outbox
	ctx, cancel := context.WithCancel(context.Background())
	s.cancel = cancel
	wantLife := false
	for _, w := range s.workers {
		wantLife = wantLife || w.wantsLife
	}
	if wantLife && srv != nil {
		obs, err := srv.Observe("webhooks", s.observe, append(lifeKinds(), server.SessionClosed)...)
		if err != nil {
			cancel()
			return fmt.Errorf("webhooks: %w", err)
		}
		s.obs = obs
	}
	s.wg.Go(func() { s.queueLife(ctx) })
	for _, w := range s.workers {
		s.wg.Go(func() { w.run(ctx) })
	}
	return nil
}

// Lead makes the Service deliver, and queue the life events it observes,
// until ctx ends (the term of the webhooks lease on a cluster); then what
// is in flight is cancelled and stays queued for the next term, here or
// on another node. Lead returns once the term is over. Only for a Service
// made with Options.Standby.
func (s *Service) Lead(ctx context.Context) {
	s.setTerm(func() { s.term = ctx })
	for _, w := range s.workers {
		w.signal()
	}
	<-ctx.Done()
	s.setTerm(func() { s.term = nil })
}

// setTerm changes the term with change, under termMu, and tells those
// waiting for it.
func (s *Service) setTerm(change func()) {
	s.termMu.Lock()
	change()
	close(s.termChanged)
	s.termChanged = make(chan struct{})
	s.termMu.Unlock()
}

// leading reports whether a term is under way.
func (s *Service) leading() bool {
	s.termMu.Lock()
	defer s.termMu.Unlock()
	return s.term != nil && s.term.Err() == nil
}

// awaitTerm returns the current term once there is one, or false once
// quit is closed.
func (s *Service) awaitTerm(quit <-chan struct{}) (context.Context, bool) {
	for {
		s.termMu.Lock()
		term, changed := s.term, s.termChanged
		s.termMu.Unlock()
		if term != nil && term.Err() == nil {
			return term, true
		}
		select {
		case <-changed:
		case <-quit:
			return nil, false
		}
	}
}

// Shutdown stops the delivery loops: requests in flight are cancelled
// (their events stay queued and go out again after a restart, with the
// same ids), life events already observed are queued first. It returns
// once every goroutine of the Service has, or when ctx ends.
func (s *Service) Shutdown(ctx context.Context) error {
	if s.cancel == nil {
		return nil
	}
	if s.obs != nil {
		_ = s.obs.Flush(ctx)
	}
	s.stopOnce.Do(func() { close(s.lifeDone) }) // queueLife queues what is buffered, then returns
	for _, w := range s.workers {
		w.stop()
	}
	done := make(chan struct{})
	go func() { s.wg.Wait(); close(done) }()
	select {
	case <-done:
		s.cancel()
		return nil
	case <-ctx.Done():
		s.cancel()
		<-done
		return ctx.Err()
	}
}

// observe queues a life event for every endpoint that wants it. It runs on
// the observer's goroutine and never waits for the store: queueLife does.
func (s *Service) observe(ev server.Event) {
	switch ev.Kind {
	case server.SessionClosed:
		if ev.User != "" {
			s.lastClosed[ev.User] = ev
		}
		return
	case server.UserOffline:
		// The disconnect names the user's last session, its transport and
		// why it closed.
		if last, ok := s.lastClosed[ev.User]; ok {
			delete(s.lastClosed, ev.User)
			ev.Session, ev.Transport, ev.Reason = last.Session, last.Transport, last.Reason
		}
	}
	typ, ok := lifeType(ev.Kind)
	if !ok || !s.leading() {
		return // between terms, the leading node queues it
	}
	l := life{ID: newEventID(), Type: typ, User: ev.User, Session: ev.Session, Channel: ev.Channel,
		Transport: ev.Transport, Reason: reasonText(ev), State: ev.State}
	var payload []byte
	s.lifeMu.Lock()
	defer s.lifeMu.Unlock()
	for _, w := range s.workers {
		if !w.ep.Wants(typ, ev.Channel, "") {
			continue
		}
		if s.lifeCount >= lifeBuffer {
			s.metrics.lifeDropped.Inc()
			s.opts.Logger.Warn("webhooks: life events arrive faster than they can be queued; dropped one",
				"endpoint", w.ep.Name, "type", typ)
			continue
		}
		if payload == nil {
			payload = mustJSON(l)
		}
		s.lifePending[w.ep.Name] = append(s.lifePending[w.ep.Name], Entry{Time: ev.At, Channel: ev.Channel, Payload: payload})
		s.lifeCount++
	}
	select {
	case s.lifeReady <- struct{}{}:
	default:
	}
}

// queueLife writes buffered life events to the outbox, all that wait at
// once, until Shutdown, after which it writes what is left and returns.
func (s *Service) queueLife(ctx context.Context) {
	for {
		stopping := false
		select {
		case <-s.lifeReady:
		case <-s.lifeDone:
			stopping = true
		}
		s.lifeMu.Lock()
		batch := s.lifePending
		s.lifePending, s.lifeCount = map[string][]Entry{}, 0
		s.lifeMu.Unlock()
		if len(batch) > 0 {
			wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
			if err := s.outbox.Enqueue(wctx, batch); err != nil {
				n := 0
				for _, es := range batch {
					n += len(es)
				}
				s.metrics.lifeDropped.Add(float64(n))
				s.opts.Logger.Error("webhooks: life events could not be queued; they are lost", "events", n, "err", err)
			}
			cancel()
		}
		if stopping {
			return
		}
	}
}

// worker returns the endpoint named name, or a 404 error.
func (s *Service) worker(name string) (*worker, error) {
	w, ok := s.byName[name]
	if !ok {
		return nil, server.Errorf(http.StatusNotFound, "no webhook endpoint is named %q", name)
	}
	return w, nil
}

// reasonText is why the user's last session closed, for a disconnect.
func reasonText(ev server.Event) string {
	if ev.Kind == server.UserOffline && ev.Session != "" {
		return ev.Reason.String()
	}
	return ""
}
