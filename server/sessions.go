package server

import (
	"context"
	"errors"
	"net/http"
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/heraldrt/herald/protocol"
)

// OpenRequest opens a session on a fixed set of channels (SSE, poll).
type OpenRequest struct {
	// Channels to subscribe, in order. Duplicates are ignored.
	Channels []string
	// Cursor resumes the channels it covers ("" for none).
	Cursor string
	// Session is the session the client continues ("" for a new one); when
	// empty, the one Cursor names. It is taken only when it is the caller's
	// own; see Transport.NewSession.
	Session string
	// RemoteAddr is the client's address, for the per-IP connection rate.
	RemoteAddr string
	// Positions, when not nil, holds one position per channel (a nil
	// entry means "from the head"). It applies to the channels Cursor does
	// not cover: a cursor is the stream's newer truth (a browser sends it
	// as Last-Event-ID on every reconnect to the same URL).
	Positions []*Position
}

// OpenInfo is what a new session reports to its client.
type OpenInfo = protocol.Connected

// sessionOptions say how a session is made.
type sessionOptions struct {
	// fixed sessions (SSE, poll) have the channels they were opened with
	// and carry a cursor; others (WebSocket) subscribe as they go.
	fixed bool
	// detachable sessions outlive their connections (park.go).
	detachable bool
	// want is the id the client continues ("" for a new one).
	want       string
	remoteAddr string
	// rebuild marks a detachable session rebuilt from its client's
	// cursor: not a new connection, so the per-IP connection rate does
	// not apply.
	rebuild bool
}

// open authorises every channel, matching each channel's rule once, then
// creates a session subscribed to all of them.
func (s *Server) open(ctx context.Context, t *Transport, id Identity, req OpenRequest, opts sessionOptions) (*Session, OpenInfo, error) {
	if s.shuttingDown.Load() {
		return nil, OpenInfo{}, ErrShuttingDown
	}
	if len(req.Channels) == 0 {
		return nil, OpenInfo{}, invalidf("name at least one channel")
	}
	if len(req.Channels) > s.cfg.Limits.MaxChannelsPerRequest {
		return nil, OpenInfo{}, invalidf("%d channels requested, the limit is %d", len(req.Channels), s.cfg.Limits.MaxChannelsPerRequest)
	}
	if req.Positions != nil && len(req.Positions) != len(req.Channels) {
		return nil, OpenInfo{}, invalidf("%d positions for %d channels: give one per channel, in the same order", len(req.Positions), len(req.Channels))
	}
	rules := make([]channelRule, len(req.Channels))
	for i, ch := range req.Channels {
		if err := ValidateChannel(ch); err != nil {
			return nil, OpenInfo{}, err
		}
		rules[i] = s.rules.lookup(ch)
		if err := s.authorize(id, ActionSubscribe, &rules[i]); err != nil {
			return nil, OpenInfo{}, err
		}
	}
	var cur Cursor
	if req.Cursor != "" {
		var err error
		if cur, err = ParseCursor(req.Cursor); err != nil {
			return nil, OpenInfo{}, err
		}
	}

	opts.want = req.Session
	if opts.want == "" {
		opts.want = cur.Session()
	}
	opts.remoteAddr = req.RemoteAddr
	sess, err := s.newSession(t, id, opts)
	if err != nil {
		return nil, OpenInfo{}, err
	}
	info := OpenInfo{Session: sess.ID, UserChannel: UserChannel(id.User)}
	seen := make(map[string]bool, len(req.Channels))
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
		res, err := s.subscribe(ctx, sess, SubscribeRequest{Channel: ch, From: from}, &rules[i])
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

// newSession registers a session of transport t under opts.want, when that
// is id's own, or a new id. A user at the session limit is refused.
func (s *Server) newSession(t *Transport, id Identity, opts sessionOptions) (*Session, error) {
	if !opts.rebuild {
		if err := s.limits.allowConnect(opts.remoteAddr, s.now()); err != nil {
			return nil, err
		}
	}
	sessID := s.ids.mint(id)
	if opts.want != "" && s.ids.owns(id, opts.want) {
		sessID = opts.want
	}
	ctx, cancel := context.WithCancel(context.Background())
	sess := &Session{
		opened:     s.now(),
		ID:         sessID,
		identity:   id,
		transport:  t,
		srv:        s,
		q:          newQueue(s.cfg.Limits.QueueMessages, s.cfg.Limits.QueueBytes),
		done:       make(chan struct{}),
		ctx:        ctx,
		cancel:     cancel,
		wantCursor: opts.fixed,
		fixed:      opts.fixed,
		detachable: opts.detachable,
	}
	if counted(id) && s.cfg.Limits.OnConnectionLimit == CloseOldest {
		for _, old := range s.sessions.oldestOver(id.User, s.cfg.Limits.MaxSessionsPerUser-1) {
			old.Close(ReasonReplaced)
		}
	}
	remote := 0
	if counted(id) {
		remote = s.counts.remote(id.User) // on the other nodes of a cluster
	}
	n, ok := s.sessions.add(sess, s.cfg.Limits.MaxSessionsPerUser-remote, func() {
		if s.obs.want(SessionOpened) {
			s.obs.emit(Event{Kind: SessionOpened, At: sess.opened, Session: sess.ID, Transport: t.name, User: id.User})
		}
	})
	if !ok {
		cancel()
		e := newError(http.StatusTooManyRequests, ErrRateLimited, "user %q has %d open sessions, the limit is %d", id.User, n+remote, s.cfg.Limits.MaxSessionsPerUser)
		e.RetryAfter = time.Second
		return nil, e
	}
	sess.mu.Lock()
	sess.expiry = expiryTimer(sess, id, s.verifier.leeway, s.now())
	sess.mu.Unlock()
	s.presence.connect(sess)
	return sess, nil
}

// counted reports whether id's sessions count against the per-user limit.
func counted(id Identity) bool { return id.User != "" && !id.System }

// expiryTimer returns a timer that closes sess when id's token expires, or
// nil for a token without expiry. The token was accepted within the
// leeway; the session ends where the leeway ends, so a token is never cut
// short of what it was accepted for.
func expiryTimer(sess *Session, id Identity, leeway time.Duration, now time.Time) *time.Timer {
	if id.Expires.IsZero() {
		return nil
	}
	return time.AfterFunc(id.Expires.Add(leeway).Sub(now), func() { sess.fail(ReasonTokenExpired) })
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
	sess.expiry = expiryTimer(sess, id, s.verifier.leeway, s.now())
	sess.mu.Unlock()
	sess.recheck()
	return nil
}

// registry is the set of open sessions, by id, and how many each user
// has open.
type registry struct {
	mu      sync.Mutex // guards the fields below
	byID    map[string]*Session
	perUser map[string]int // open sessions of each counted user
}

func (r *registry) init() {
	r.byID = make(map[string]*Session)
	r.perUser = make(map[string]int)
}

// add registers sess unless its user already has max sessions open; it
// returns how many they have then. A session of the same id still open is
// the client's previous connection, not yet seen to be gone: the newest
// connection wins, and the old one is closed as replaced. opened runs
// under the registry's lock, once sess is registered and before anyone
// else can find it, so that nothing about the session is told before its
// opening.
func (r *registry) add(sess *Session, max int, opened func()) (int, bool) {
	for {
		r.mu.Lock()
		old := r.byID[sess.ID]
		if old == nil {
			break // r.mu stays held
		}
		r.mu.Unlock()
		old.Close(ReasonReplaced) // unregisters it before it returns
	}
	defer r.mu.Unlock()
	id := sess.identity
	if counted(id) {
		if n := r.perUser[id.User]; n >= max {
			return n, false
		}
		r.perUser[id.User]++
	}
	r.byID[sess.ID] = sess
	opened()
	return 0, true
}

// forget drops a released session.
func (r *registry) forget(sess *Session) {
	r.mu.Lock()
	if r.byID[sess.ID] == sess {
		delete(r.byID, sess.ID)
		if id := sess.Identity(); counted(id) {
			if r.perUser[id.User]--; r.perUser[id.User] <= 0 {
				delete(r.perUser, id.User)
			}
		}
	}
	r.mu.Unlock()
}

// userCounts returns how many sessions each counted user has open.
func (r *registry) userCounts() map[string]int {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make(map[string]int, len(r.perUser))
	for u, n := range r.perUser {
		out[u] = n
	}
	return out
}

// get returns the open session with that id, or nil.
func (r *registry) get(id string) *Session {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.byID[id]
}

func (r *registry) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.byID)
}

// all returns every open session.
func (r *registry) all() []*Session {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]*Session, 0, len(r.byID))
	for _, sess := range r.byID {
		out = append(out, sess)
	}
	return out
}

// ofUser returns user's open sessions (never the API key's).
func (r *registry) ofUser(user string) []*Session {
	r.mu.Lock()
	defer r.mu.Unlock()
	var mine []*Session
	for _, sess := range r.byID {
		if id := sess.Identity(); id.User == user && !id.System {
			mine = append(mine, sess)
		}
	}
	return mine
}

// oldestOver returns user's oldest sessions past the newest keep
// (limits.on_connection_limit: close_oldest).
func (r *registry) oldestOver(user string, keep int) []*Session {
	mine := r.ofUser(user)
	if len(mine) <= keep {
		return nil
	}
	sort.Slice(mine, func(i, j int) bool { return mine[i].opened.Before(mine[j].opened) })
	return mine[:len(mine)-keep]
}

// byTransport counts the open sessions of each transport.
func (r *registry) byTransport() map[*Transport]int {
	r.mu.Lock()
	defer r.mu.Unlock()
	counts := make(map[*Transport]int)
	for _, sess := range r.byID {
		counts[sess.transport]++
	}
	return counts
}

// users returns the distinct members (users, not the API key or anonymous
// clients) with an open session whose token attributes match filter (each
// key's values contain the wanted value), sorted.
func (r *registry) users(filter map[string]string) []string {
	r.mu.Lock()
	seen := make(map[string]bool)
	for _, sess := range r.byID {
		id := sess.Identity()
		if !member(id) || seen[id.User] {
			continue
		}
		match := true
		for k, v := range filter {
			if !slices.Contains(id.Attrs[k], v) {
				match = false
				break
			}
		}
		if match {
			seen[id.User] = true
		}
	}
	r.mu.Unlock()
	out := make([]string, 0, len(seen))
	for u := range seen {
		out = append(out, u)
	}
	slices.Sort(out)
	return out
}

// onlineUsers returns the distinct members among sessions.
func onlineUsers(sessions []*Session) []string {
	seen := make(map[string]bool)
	var users []string
	for _, sess := range sessions {
		if id := sess.Identity(); member(id) && !seen[id.User] {
			seen[id.User] = true
			users = append(users, id.User)
		}
	}
	return users
}
