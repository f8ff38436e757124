package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/heraldrt/herald/protocol"
	"github.com/heraldrt/herald/store"
	"golang.org/x/time/rate"
)

// Server is the channel core: it authenticates and authorises, runs the
// publish pipeline, holds the hub and the sessions, and serves the HTTP
// API. Transports call it; it knows nothing of them.
type Server struct {
	cfg    Config
	engine store.Engine // channel logs, commit feed, small state
	logger *slog.Logger
	hub    *hub
	rules  *rules
	grants *grantSet

	ready        atomic.Bool
	shuttingDown atomic.Bool

	presence      presenceState
	metrics       *metrics
	bans          bans
	opLimits      *limiterSet // per session: WebSocket ops
	connectLimits *limiterSet // per client IP: new sessions
	inflight      inflight    // per user: API publishes being served
	tokens        tokenCache  // verified user tokens
	ids           sessionIDs  // mints session ids and checks whose they are

	mu           sync.Mutex // guards sessions and userSessions
	sessions     map[string]*Session
	userSessions map[string]int // open sessions per user

	verifier *verifier // user-token keys, loaded once by New
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
	rules, err := compileRules(cfg.Rules, cfg.History, cfg.Tokens)
	if err != nil {
		return nil, fmt.Errorf("server config: %w", err)
	}
	grants, err := loadGrants(context.Background(), engine)
	if err != nil {
		return nil, err
	}
	v, err := newVerifier(cfg)
	if err != nil {
		return nil, fmt.Errorf("server config: %w", err)
	}
	ids, err := loadSessionIDs(context.Background(), engine)
	if err != nil {
		return nil, err
	}
	s := &Server{
		cfg:      cfg,
		engine:   engine,
		logger:   cfg.Logger,
		hub:      newHub(cfg.MaxPending, cfg.Logger),
		rules:    rules,
		grants:   grants,
		sessions: make(map[string]*Session),
		verifier: v,
		ids:      ids,
	}
	s.userSessions = make(map[string]int)
	s.metrics = newMetrics(s)
	s.opLimits = newLimiterSet(rate.Limit(cfg.OpsPerSecond), cfg.OpsBurst, maxLimiterKeys)
	s.connectLimits = newLimiterSet(rate.Limit(cfg.ConnectsPerSecond), cfg.ConnectsBurst, maxLimiterKeys)
	if err := s.loadBans(context.Background()); err != nil {
		return nil, fmt.Errorf("load bans: %w", err)
	}
	cfg.warnUndeclaredTokens()
	if err := engine.Feed(s.committed); err != nil {
		return nil, fmt.Errorf("server: take the engine's commit feed: %w", err)
	}
	s.startPresence()
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
	for i := range batch {
		c := &batch[i]
		m, err := newMessage(c.Channel, c.Offset, c.Epoch, c.Record.Payload)
		if err != nil {
			s.logger.Error("undeliverable commit", "err", err)
			continue
		}
		m.at = now
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

// OpenRequest opens a session on a fixed set of channels (SSE, poll).
type OpenRequest struct {
	// Transport names the transport, for logs and metrics.
	Transport string
	// Channels to subscribe, in order. Duplicates are ignored.
	Channels []string
	// Cursor resumes the channels it covers ("" for none).
	Cursor string
	// Session is the session the client continues ("" for a new one); when
	// empty, the one Cursor names. It is taken only when it is the caller's
	// own; see NewSession.
	Session string
	// RemoteAddr is the client's address, for the per-IP connection rate.
	RemoteAddr string
	// rebuild marks a long-poll session rebuilt from its client's cursor:
	// not a new connection, so the per-IP connection rate does not apply.
	rebuild bool
	// Positions, when not nil, holds one position per channel (a nil
	// entry means "from the head"). It applies to the channels Cursor does
	// not cover: a cursor is the stream's newer truth (a browser sends it
	// as Last-Event-ID on every reconnect to the same URL).
	Positions []*Position
}

// OpenInfo is what a new session reports to its client: the data of
// herald.connected (the wire shape, whose home is protocol). UserChannel
// is the user's system channel (broadcasts to users).
type OpenInfo = protocol.Connected

// Open authorises every channel, then creates a session subscribed to all
// of them, whose stored messages carry the stream's cursor (SSE, poll).
// Nothing is created when any channel is bad or denied.
func (s *Server) Open(ctx context.Context, id Identity, req OpenRequest) (*Session, OpenInfo, error) {
	if s.shuttingDown.Load() {
		return nil, OpenInfo{}, ErrShuttingDown
	}
	if len(req.Channels) == 0 {
		return nil, OpenInfo{}, invalidf("name at least one channel")
	}
	if len(req.Channels) > s.cfg.MaxChannelsPerRequest {
		return nil, OpenInfo{}, invalidf("%d channels requested, the limit is %d", len(req.Channels), s.cfg.MaxChannelsPerRequest)
	}
	if req.Positions != nil && len(req.Positions) != len(req.Channels) {
		return nil, OpenInfo{}, invalidf("%d positions for %d channels: give one per channel, in the same order", len(req.Positions), len(req.Channels))
	}
	seen := make(map[string]bool, len(req.Channels))
	for _, ch := range req.Channels {
		if err := ValidateChannel(ch); err != nil {
			return nil, OpenInfo{}, err
		}
		if err := s.authorize(id, ActionSubscribe, ch); err != nil {
			return nil, OpenInfo{}, err
		}
		seen[ch] = true
	}
	var cur Cursor
	if req.Cursor != "" {
		var err error
		if cur, err = ParseCursor(req.Cursor); err != nil {
			return nil, OpenInfo{}, err
		}
	}

	want := req.Session
	if want == "" {
		want = cur.Session()
	}
	sess, err := s.newSession(id, req.Transport, true, want, req.RemoteAddr, req.rebuild)
	if err != nil {
		return nil, OpenInfo{}, err
	}
	info := OpenInfo{Session: sess.ID, UserChannel: UserChannel(id.User)}
	clear(seen)
	for i, ch := range req.Channels {
		if seen[ch] {
			continue
		}
		seen[ch] = true
		var from *Position
		if epoch, off, ok := cur.position(ch); ok {
			from = &Position{Since: off, Epoch: epoch}
		} else if req.Positions != nil {
			from = req.Positions[i]
		}
		res, err := s.Subscribe(ctx, sess, SubscribeRequest{Channel: ch, From: from})
		if errors.Is(err, ErrClosed) {
			// The server ended the session while it opened (the user was
			// disconnected or banned, a newer connection took it over,
			// the server is stopping): the transport tells the client
			// why, as it does for any session that ends.
			return sess, info, nil
		}
		if err != nil {
			sess.Close(ReasonClientGone)
			return nil, OpenInfo{}, err
		}
		info.Channels = append(info.Channels, res)
	}
	return sess, info, nil
}

// NewSession creates an empty session for a transport that subscribes
// channel by channel (WebSocket); remoteAddr is the client's address.
//
// resume is the session the client continues (the id it was given before
// and passes back), "" for a new one. The session takes that id when the
// id is the caller's own — its exclusions then follow it — and a session
// of that id still open (the client's previous connection, not yet seen to
// be gone) is closed as replaced. An id that is not the caller's is
// ignored: the session gets a new one, as if none had been given.
func (s *Server) NewSession(id Identity, transport, remoteAddr, resume string) (*Session, error) {
	if s.shuttingDown.Load() {
		return nil, ErrShuttingDown
	}
	return s.newSession(id, transport, false, resume, remoteAddr, false)
}

// newSession registers a session under want, when that is id's own, or a
// new id. A user at the session limit is refused. rebuild skips the per-IP
// connection rate (a long-poll session rebuilt for a poll that is already
// counted).
func (s *Server) newSession(id Identity, transport string, fixed bool, want, remoteAddr string, rebuild bool) (*Session, error) {
	if !rebuild {
		if err := s.allowConnect(remoteAddr); err != nil {
			return nil, err
		}
	}
	sessID := s.ids.mint(id)
	if want != "" && s.ids.owns(id, want) {
		sessID = want
	}
	ctx, cancel := context.WithCancel(context.Background())
	sess := &Session{
		opened:     s.now(),
		ID:         sessID,
		identity:   id,
		Transport:  transport,
		srv:        s,
		q:          newQueue(s.cfg.QueueMessages, s.cfg.QueueBytes),
		done:       make(chan struct{}),
		ctx:        ctx,
		cancel:     cancel,
		wantCursor: fixed,
		fixed:      fixed,
	}
	if counted(id) && s.cfg.CloseOldest {
		s.closeOldestOver(id.User, s.cfg.MaxSessionsPerUser-1)
	}
	// A session of the same id still open is the client's previous
	// connection, not yet seen to be gone: the newest connection wins.
	// Close unregisters it before it returns.
	for {
		s.mu.Lock()
		old := s.sessions[sessID]
		if old == nil {
			break // s.mu stays held
		}
		s.mu.Unlock()
		old.Close(ReasonReplaced)
	}
	if counted(id) && s.userSessions[id.User] >= s.cfg.MaxSessionsPerUser {
		n := s.userSessions[id.User]
		s.mu.Unlock()
		cancel()
		e := newError(http.StatusTooManyRequests, ErrRateLimited, "user %q has %d open sessions, the limit is %d", id.User, n, s.cfg.MaxSessionsPerUser)
		e.RetryAfter = time.Second
		return nil, e
	}
	if counted(id) {
		s.userSessions[id.User]++
	}
	s.sessions[sess.ID] = sess
	s.mu.Unlock()
	sess.expiry = s.expiryTimer(sess, id)
	s.connectPresence(sess)
	s.metrics.opened.WithLabelValues(transport).Inc()
	return sess, nil
}

// closeOldestOver closes user's oldest sessions until at most keep remain
// (limits.on_connection_limit: close_oldest).
func (s *Server) closeOldestOver(user string, keep int) {
	s.mu.Lock()
	var mine []*Session
	for _, sess := range s.sessions {
		if sess.Identity().User == user {
			mine = append(mine, sess)
		}
	}
	s.mu.Unlock()
	sort.Slice(mine, func(i, j int) bool { return mine[i].opened.Before(mine[j].opened) })
	for i := 0; i < len(mine)-keep; i++ {
		mine[i].Close(ReasonReplaced)
	}
}

// counted reports whether id's sessions count against the per-user limit.
func counted(id Identity) bool { return id.User != "" && !id.System }

// expiryTimer returns a timer that closes sess when id's token expires, or
// nil for a token without expiry. The token was accepted within the
// leeway; the session ends where the leeway ends, so a token is never cut
// short of what it was accepted for.
func (s *Server) expiryTimer(sess *Session, id Identity) *time.Timer {
	if id.Expires.IsZero() {
		return nil
	}
	return time.AfterFunc(id.Expires.Add(s.verifier.leeway).Sub(s.now()), func() { sess.fail(ReasonTokenExpired) })
}

// Refresh replaces a session's identity with a fresh token's, for the
// same user: the expiry moves to the new token's, and subscriptions the
// new identity may not hold are revoked.
func (s *Server) Refresh(sess *Session, id Identity) error {
	old := sess.Identity()
	if id.System != old.System || id.Anonymous || id.User != old.User {
		return newError(http.StatusForbidden, ErrForbidden, "a refreshed token must be for the same user as the session")
	}
	sess.mu.Lock()
	if sess.closed {
		sess.mu.Unlock()
		return ErrClosed
	}
	sess.identity = id
	if sess.expiry != nil {
		sess.expiry.Stop()
	}
	sess.expiry = s.expiryTimer(sess, id)
	sess.mu.Unlock()
	s.recheck(sess)
	return nil
}

// sessionClosed records a closed session (logs now, metrics later).
func (s *Server) sessionClosed(sess *Session, reason Reason) {
	s.metrics.closed.WithLabelValues(sess.Transport, reason.String()).Inc()
	level := slog.LevelDebug
	if reason == ReasonSlowConsumer || reason == ReasonInternal {
		level = slog.LevelWarn
	}
	s.logger.Log(context.Background(), level, "session closed", "session", sess.ID,
		"transport", sess.Transport, "user", sess.Identity().User, "reason", reason.String())
}

// forget drops a released session from the registry.
func (s *Server) forget(sess *Session) {
	s.mu.Lock()
	if s.sessions[sess.ID] == sess {
		delete(s.sessions, sess.ID)
		if id := sess.Identity(); counted(id) {
			if s.userSessions[id.User]--; s.userSessions[id.User] <= 0 {
				delete(s.userSessions, id.User)
			}
		}
	}
	s.mu.Unlock()
}

// ownsSession reports whether session is an id of id's own — open, closed
// or yet to be continued. It checks the id alone (sessionid.go), so the
// answer says nothing about which sessions exist.
func (s *Server) ownsSession(id Identity, session string) bool {
	return s.ids.owns(id, session)
}

// Sessions returns how many sessions are open.
func (s *Server) Sessions() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.sessions)
}

// Ready reports whether the server takes traffic (false once shutting
// down).
func (s *Server) Ready() bool { return s.ready.Load() && !s.shuttingDown.Load() }

// Shutdown refuses new sessions and closes every open one with reason
// shutdown, which tells clients to reconnect (to this server once it is
// back, or to another). Transports flush that notice and return. Publishes
// keep working until the caller closes the store.
func (s *Server) Shutdown() {
	s.shuttingDown.Store(true)
	s.mu.Lock()
	all := make([]*Session, 0, len(s.sessions))
	for _, sess := range s.sessions {
		all = append(all, sess)
	}
	s.mu.Unlock()
	for _, sess := range all {
		sess.fail(ReasonShutdown)
		if sess.detached() {
			sess.Close(ReasonShutdown) // a parked poll session has no transport to close it
		}
	}
	s.stopPresence()
	// Users still online are last seen now.
	for _, user := range s.onlineUsers(all) {
		s.storeLastSeen(user, s.now())
	}
}
