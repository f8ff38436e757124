package server

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// Flow control in the core, so that it holds on every transport: publish
// rate limits from the rules, a per-session op limit, a per-IP connection
// rate, subscriber and session caps, bans.

// limiterSet is a bounded set of token buckets keyed by string. When it
// grows past max it forgets the buckets that are full again (idle keys).
type limiterSet struct {
	limit rate.Limit
	burst int
	max   int

	mu sync.Mutex // guards m
	m  map[string]*rate.Limiter
}

func newLimiterSet(limit rate.Limit, burst, max int) *limiterSet {
	return &limiterSet{limit: limit, burst: burst, max: max, m: make(map[string]*rate.Limiter)}
}

// forget drops key's bucket.
func (l *limiterSet) forget(key string) {
	l.mu.Lock()
	delete(l.m, key)
	l.mu.Unlock()
}

// allow takes a token for key at now, or says how long until one is free.
func (l *limiterSet) allow(key string, now time.Time) (bool, time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	lim := l.m[key]
	if lim == nil {
		if len(l.m) >= l.max {
			for k, x := range l.m {
				if x.TokensAt(now) >= float64(l.burst) {
					delete(l.m, k)
				}
			}
		}
		lim = rate.NewLimiter(l.limit, l.burst)
		l.m[key] = lim
	}
	r := lim.ReserveN(now, 1)
	if d := r.DelayFrom(now); d > 0 {
		r.CancelAt(now)
		return false, d
	}
	return true, 0
}

// maxLimiterKeys bounds each limiter set before it sweeps idle keys.
const maxLimiterKeys = 100_000

func rateLimited(channel string, retry time.Duration, format string, args ...any) *Error {
	e := newError(http.StatusTooManyRequests, ErrRateLimited, format, args...)
	e.Channel, e.RetryAfter = channel, retry
	return e
}

// allowPublish applies the rule's rate_limit to a user's publishes on a
// channel. The API key is not limited.
func (s *Server) allowPublish(id Identity, channel string) error {
	if id.System {
		return nil
	}
	var caps captures
	r := s.rules.match(channel, &caps)
	if r == nil || r.publishLimits == nil {
		return nil
	}
	key := id.User + "\x00" + channel
	if ok, retry := r.publishLimits.allow(key, s.now()); !ok {
		s.metrics.rateLimited.WithLabelValues("publish").Inc()
		rl := r.cfg.RateLimit
		return rateLimited(channel, retry, "publishing to channel %q is limited to %d per %s", channel, rl.Limit, rl.Window)
	}
	return nil
}

// AllowOp takes one of the session's op tokens (WebSocket ops): a client
// that sends ops faster than limits.ops_per_second is refused with 429
// until it slows down. The API key (the backend) is not limited.
func (s *Server) AllowOp(sess *Session) error {
	if sess.Identity().System {
		return nil
	}
	if ok, retry := s.opLimits.allow(sess.ID, s.now()); !ok {
		s.metrics.rateLimited.WithLabelValues("ops").Inc()
		return rateLimited("", retry, "more than %g ops per second on this connection", s.cfg.OpsPerSecond)
	}
	return nil
}

// allowConnect applies the per-IP rate of new sessions. Loopback
// addresses are exempt: a proxy on the same host, or a load test.
func (s *Server) allowConnect(remoteAddr string) error {
	host, _, err := net.SplitHostPort(remoteAddr)
	if err != nil {
		host = remoteAddr
	}
	ip := net.ParseIP(host)
	if ip == nil || ip.IsLoopback() {
		return nil
	}
	if ok, retry := s.connectLimits.allow(ip.String(), s.now()); !ok {
		s.metrics.rateLimited.WithLabelValues("connect").Inc()
		return rateLimited("", retry, "more than %g new connections per second from %s", s.cfg.ConnectsPerSecond, ip)
	}
	return nil
}

// subscriberRetryAfter is the retry time of a subscription refused by
// max_subscribers. Nothing says when a subscriber will leave: 5 s lets a
// client come back soon enough to take a freed place, and spaces out a
// crowd retrying (a chat room that is full at the start of an event)
// far enough not to make a flood of it.
const subscriberRetryAfter = 5 * time.Second

// checkCapacity refuses a subscription past the rule's max_subscribers.
func (s *Server) checkCapacity(channel string) error {
	var caps captures
	r := s.rules.match(channel, &caps)
	if r == nil || r.cfg.MaxSubscribers == 0 {
		return nil
	}
	if n := s.hub.subscribers(channel); n >= r.cfg.MaxSubscribers {
		return rateLimited(channel, subscriberRetryAfter, "channel %q has %d subscribers, the limit is %d", channel, n, r.cfg.MaxSubscribers)
	}
	return nil
}

// inflight counts each user's API publishes being served.
type inflight struct {
	mu sync.Mutex // guards n
	n  map[string]int
}

// maxInflightPerUser bounds one user's publishes being served at once: a
// client that pipelines hundreds of requests is refused at the door
// instead of crowding everyone else off the CPU.
const maxInflightPerUser = 64

// enterUser admits one more request of id's user, or refuses it with 429;
// done releases it. The API key and anonymous callers are not counted.
func (s *Server) enterUser(id Identity) (done func(), err error) {
	if !member(id) {
		return func() {}, nil
	}
	f := &s.inflight
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.n == nil {
		f.n = make(map[string]int)
	}
	if f.n[id.User] >= maxInflightPerUser {
		s.metrics.rateLimited.WithLabelValues("publish").Inc()
		return nil, rateLimited("", 100*time.Millisecond, "user %q has %d requests in flight, the limit is %d", id.User, f.n[id.User], maxInflightPerUser)
	}
	f.n[id.User]++
	return func() {
		f.mu.Lock()
		if f.n[id.User]--; f.n[id.User] == 0 {
			delete(f.n, id.User)
		}
		f.mu.Unlock()
	}, nil
}

// Bans.

const banPrefix = "ban/"

// bans holds the users refused until a time.
type bans struct {
	mu    sync.Mutex // guards until
	until map[string]time.Time
}

func (s *Server) loadBans(ctx context.Context) error {
	s.bans.until = make(map[string]time.Time)
	return s.engine.ScanState(ctx, banPrefix, func(key string, value []byte) error {
		user, err := url.PathUnescape(strings.TrimPrefix(key, banPrefix))
		if err != nil {
			return fmt.Errorf("ban key %q: %w", key, err)
		}
		var t time.Time
		if err := t.UnmarshalText(value); err != nil {
			return fmt.Errorf("ban %q: %w", key, err)
		}
		s.bans.until[user] = t
		return nil
	})
}

// banned returns until when user is banned (zero when not).
func (s *Server) banned(user string) time.Time {
	if user == "" {
		return time.Time{}
	}
	s.bans.mu.Lock()
	defer s.bans.mu.Unlock()
	t, ok := s.bans.until[user]
	if ok && !s.now().Before(t) {
		delete(s.bans.until, user) // over; the stored entry is removed lazily
		return time.Time{}
	}
	return t
}

// Ban refuses user until now+d (stored durably) and closes their sessions.
func (s *Server) Ban(ctx context.Context, user string, d time.Duration) (time.Time, error) {
	if user == "" {
		return time.Time{}, invalidf("user is required")
	}
	if d <= 0 {
		return time.Time{}, invalidf("duration %s: want a positive duration such as 10m or 24h", d)
	}
	until := s.now().Add(d).UTC()
	b, _ := until.MarshalText()
	if err := s.engine.PutState(ctx, banPrefix+url.PathEscape(user), b); err != nil {
		return time.Time{}, fmt.Errorf("store ban: %w", err)
	}
	s.bans.mu.Lock()
	s.bans.until[user] = until
	s.bans.mu.Unlock()
	n := s.DisconnectUser(user, ReasonBanned)
	s.metrics.moderation.WithLabelValues("ban").Inc()
	s.logger.Warn("user banned", "user", user, "until", until, "sessions_closed", n)
	return until, nil
}

// Unban lifts a ban.
func (s *Server) Unban(ctx context.Context, user string) error {
	if err := s.engine.DeleteState(ctx, banPrefix+url.PathEscape(user)); err != nil {
		return fmt.Errorf("remove ban: %w", err)
	}
	s.bans.mu.Lock()
	delete(s.bans.until, user)
	s.bans.mu.Unlock()
	s.logger.Info("ban lifted", "user", user)
	return nil
}

// DisconnectUser closes every session of user with reason and returns how
// many there were.
func (s *Server) DisconnectUser(user string, reason Reason) int {
	s.mu.Lock()
	var mine []*Session
	for _, sess := range s.sessions {
		if id := sess.Identity(); id.User == user && !id.System {
			mine = append(mine, sess)
		}
	}
	s.mu.Unlock()
	for _, sess := range mine {
		sess.fail(reason)
		if sess.detached() {
			sess.Close(reason)
		}
	}
	if reason == ReasonKicked {
		s.metrics.moderation.WithLabelValues("disconnect").Inc()
		s.logger.Warn("user disconnected", "user", user, "sessions_closed", len(mine))
	}
	return len(mine)
}

type userRequest struct {
	User     string `json:"user"`
	Duration string `json:"duration,omitempty"`
}

// readUserRequest reads the body of the moderation routes: the API key,
// and a user.
func (s *Server) readUserRequest(w http.ResponseWriter, r *http.Request, what string) (userRequest, bool) {
	var req userRequest
	if !s.requireSystem(w, r, what) {
		return req, false
	}
	err := s.decodeBody(w, r, &req)
	if err == nil && req.User == "" {
		err = invalidf("user is required")
	}
	if err != nil {
		s.WriteError(w, r, err)
		return req, false
	}
	return req, true
}

func (s *Server) handleDisconnect(w http.ResponseWriter, r *http.Request) {
	req, ok := s.readUserRequest(w, r, "disconnecting users")
	if !ok {
		return
	}
	n := s.DisconnectUser(req.User, ReasonKicked)
	writeJSON(w, http.StatusOK, map[string]any{"user": req.User, "sessions_closed": n}, s.logger)
}

func (s *Server) handleBan(w http.ResponseWriter, r *http.Request) {
	req, ok := s.readUserRequest(w, r, "banning users")
	if !ok {
		return
	}
	d, err := time.ParseDuration(req.Duration)
	if err != nil {
		s.WriteError(w, r, invalidf("duration %q: want a duration such as 10m or 24h", req.Duration))
		return
	}
	until, err := s.Ban(r.Context(), req.User, d)
	if err != nil {
		s.WriteError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"user": req.User, "until": until.Format(timeFormat)}, s.logger)
}

func (s *Server) handleUnban(w http.ResponseWriter, r *http.Request) {
	req, ok := s.readUserRequest(w, r, "lifting bans")
	if !ok {
		return
	}
	if err := s.Unban(r.Context(), req.User); err != nil {
		s.WriteError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"user": req.User, "banned": false}, s.logger)
}
