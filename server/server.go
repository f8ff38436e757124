package server

import (
	"context"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/heraldrt/herald/store"
)

// Server is the channel core: it authenticates and authorises, runs the
// publish pipeline, holds the hub and the sessions, and tells observers
// what happens. Transports and the HTTP API call it; it knows nothing of
// them beyond the names transports register with (Transport).
//
// Features keep their state in types of their own that the Server owns
// and hands out (Grants, Moderation) or uses (the presence wiring, the
// limits): a new feature adds a file and a type, not fields and methods
// here.
type Server struct {
	cfg    Config
	engine store.Engine // channel logs, commit feed, small state
	logger *slog.Logger
	hub    *hub
	rules  *rules

	ready        atomic.Bool
	shuttingDown atomic.Bool

	sessions   registry     // the open sessions
	transports transportSet // the registered transports
	obs        observers    // life-event observers
	stats      *stats       // hot-path counters, read at scrape time
	presence   *presenceWiring
	grants     *Grants
	moderation *Moderation
	shared     *sharedState   // other nodes' grants and bans, on a shared engine
	counts     *clusterCounts // other nodes' sessions per user; nil on one node
	limits     limits
	tokens     tokenCache // verified user tokens
	ids        sessionIDs // mints session ids and checks whose they are
	verifier   *verifier  // user-token keys, loaded once by New
	// reads bounds the catch-up reads under way off the writers, on a
	// remote engine (catchup.go); nil on an embedded one.
	reads chan struct{}
}

// New returns a Server on engine, which it takes for its own: New sets
// itself as the engine's commit feed receiver (store.Engine.Feed), the
// only source of the live fan-out, so an engine serves one Server and
// fails New if it already feeds another. Records appended before New are
// not fanned out (nobody is subscribed yet). The caller shuts the Server
// down before closing the engine.
func New(cfg Config, engine store.Engine) (*Server, error) {
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, fmt.Errorf("server config: %w", err)
	}
	if engine == nil {
		return nil, fmt.Errorf("server: nil engine")
	}
	rules, err := compileRules(cfg.Rules, cfg.History.retention(), cfg.Tokens)
	if err != nil {
		return nil, fmt.Errorf("server config: %w", err)
	}
	rules.dev = cfg.Dev
	shared, err := watchSharedState(engine) // before the loads: see sharedState
	if err != nil {
		return nil, err
	}
	grants, err := loadGrants(context.Background(), engine)
	if err != nil {
		shared.close()
		return nil, err
	}
	v, err := newVerifier(cfg)
	if err != nil {
		shared.close()
		return nil, fmt.Errorf("server config: %w", err)
	}
	ids, err := loadSessionIDs(context.Background(), engine)
	if err != nil {
		shared.close()
		return nil, err
	}
	s := &Server{
		cfg:      cfg,
		engine:   engine,
		logger:   cfg.Logger,
		rules:    rules,
		verifier: v,
		ids:      ids,
	}
	if r, ok := engine.(store.RemoteReader); ok && r.RemoteReads() {
		s.reads = make(chan struct{}, maxReads)
	}
	s.obs.logger = cfg.Logger
	s.hub = newHub(cfg.MaxPending, cfg.Logger, &s.obs, cfg.Now)
	s.sessions.init()
	s.stats = newStats(s)
	s.limits = newLimits(cfg, s.stats)
	s.grants = &Grants{srv: s, set: grants}
	s.moderation = &Moderation{srv: s}
	if err := s.moderation.load(context.Background()); err != nil {
		shared.close()
		return nil, fmt.Errorf("load bans: %w", err)
	}
	s.shared = shared
	shared.attach(s)
	cfg.warnUndeclaredTokens()
	if err := engine.Feed(s.committed); err != nil {
		shared.close()
		return nil, fmt.Errorf("server: take the engine's commit feed: %w", err)
	}
	if s.counts, err = startClusterCounts(engine, s.sessions.userCounts, cfg.Logger); err != nil {
		shared.close()
		return nil, fmt.Errorf("server: count sessions across nodes: %w", err)
	}
	s.presence = startPresence(s)
	s.ready.Store(true)
	return s, nil
}

func (s *Server) now() time.Time { return s.cfg.Now() }

// Config returns the server's configuration with defaults applied.
func (s *Server) Config() Config { return s.cfg }

// committed is the engine's commit feed receiver (store.Engine.Feed): it
// fans out every stored message. The engine calls it one batch at a time,
// with each channel's records in ascending, contiguous offsets across
// calls, and its commits may wait for it: it never blocks on a client.
//
// A batch's messages are fanned out a channel at a time, as one run per
// session: each session queues the run under one lock and is woken once,
// so its writer sends the run in one write instead of one per message. A
// run holds consecutive offsets by construction: should the engine break
// its contract (or a record cannot be decoded), a record that does not
// follow its channel's run starts a new run, and the hub's check on each
// subscription drops what the session already has and fails a session
// that would see a gap, instead of papering over it.
func (s *Server) committed(batch []store.Committed) {
	now := time.Now()              // real time: the latency metric is about the machine, not Config.Now
	var runs map[string][]*Message // per channel, in offset order
	observed := s.obs.want(MessageCommitted)
	var at time.Time
	if observed {
		at = s.now()
	}
	for i := range batch {
		c := &batch[i]
		m, err := newMessage(c.Channel, c.Offset, c.Epoch, c.Record.Payload)
		if err != nil {
			s.logger.Error("undeliverable commit", "err", err)
			continue
		}
		m.at = now
		if observed {
			s.obs.emit(Event{Kind: MessageCommitted, At: at, Channel: m.Channel, Message: m})
		}
		if len(batch) == 1 {
			s.hub.deliver([]*Message{m})
			return
		}
		if runs == nil {
			runs = make(map[string][]*Message)
		}
		run := runs[c.Channel]
		if n := len(run); n > 0 && run[n-1].Offset+1 != c.Offset {
			s.hub.deliver(run)
			run = nil
		}
		runs[c.Channel] = append(run, m)
	}
	for _, run := range runs {
		s.hub.deliver(run)
	}
}

// Sessions returns how many sessions are open.
func (s *Server) Sessions() int { return s.sessions.count() }

// Ready reports whether the server takes traffic (false once shutting
// down).
func (s *Server) Ready() bool { return s.ready.Load() && !s.shuttingDown.Load() }

// Shutdown refuses new sessions and closes every open one with reason
// shutdown, which tells clients to reconnect (to this server once it is
// back, or to another). Transports flush that notice and return. Then it
// stops the presence clock and the observers, once they have handled what
// was queued for them (waiting up to 5 s). Publishes keep working until
// the caller closes the store, but observers hear of nothing more.
// Idempotent.
func (s *Server) Shutdown() {
	s.shuttingDown.Store(true)
	all := s.sessions.all()
	for _, sess := range all {
		sess.fail(ReasonShutdown)
		if sess.parked() {
			sess.Close(ReasonShutdown) // a parked session has no transport to close it
		}
	}
	s.shared.close()
	s.counts.halt()
	s.presence.halt()
	// Users still online are last seen now.
	for _, user := range onlineUsers(all) {
		s.presence.storeLastSeen(user, s.now())
	}
	s.obs.stop()
}
