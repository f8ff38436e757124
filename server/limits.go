package server

import (
	"net"
	"net/http"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// Flow control in the core, so that it holds on every transport: publish
// rate limits from the rules, a per-session op limit, a per-IP connection
// rate, subscriber caps, requests in flight. (Session caps are in
// sessions.go, bans in moderation.go.)

// limiterSet is a bounded set of token buckets keyed by string. When it
// grows past max it forgets the buckets that are full again (idle keys).
type limiterSet struct {
	limit rate.Limit
	burst int
	max   int

	mu sync.Mutex // guards m and latest
	m  map[string]*rate.Limiter
	// latest is the latest time any bucket was asked at. Callers read
	// the clock before they take mu, so their times can arrive out of
	// order; rate.Limiter takes an earlier time as its new last update
	// and credits the same interval again on the next call, so a steady
	// flood of slightly reordered requests would be let through above
	// the limit. Times are clamped to never go back.
	latest time.Time
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
	if now.Before(l.latest) {
		now = l.latest
	} else {
		l.latest = now
	}
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

// exhausted reports whether key's bucket has no token at now, and how
// long until it has one; it takes none.
func (l *limiterSet) exhausted(key string, now time.Time) (bool, time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	lim := l.m[key]
	if lim == nil {
		return false, 0
	}
	if now.Before(l.latest) {
		now = l.latest
	}
	if tokens := lim.TokensAt(now); tokens < 1 {
		return true, time.Duration((1 - tokens) / float64(l.limit) * float64(time.Second))
	}
	return false, 0
}

// maxLimiterKeys bounds each limiter set before it sweeps idle keys.
const maxLimiterKeys = 100_000

func rateLimited(channel string, retry time.Duration, format string, args ...any) *Error {
	e := newError(http.StatusTooManyRequests, ErrRateLimited, format, args...)
	e.Channel, e.RetryAfter = channel, retry
	return e
}

// limits are the core's rate limits and caps that are not a channel
// rule's: a WebSocket connection's ops, new sessions per client IP, a
// user's API requests in flight.
type limits struct {
	stats    *stats      // counts the refusals
	ops      *limiterSet // per session: WebSocket ops
	connects *limiterSet // per client IP: new sessions
	// authFails is per client IP: requests whose credentials failed.
	authFails *limiterSet
	inflight  inflight // per user: API publishes being served
}

func newLimits(cfg Config, st *stats) limits {
	return limits{
		stats:     st,
		ops:       newLimiterSet(rate.Limit(cfg.Limits.OpsPerSecond), cfg.Limits.OpsBurst, maxLimiterKeys),
		connects:  newLimiterSet(rate.Limit(cfg.Limits.ConnectsPerSecond), cfg.Limits.ConnectsBurst, maxLimiterKeys),
		authFails: newLimiterSet(rate.Limit(cfg.Limits.AuthFailuresPerSecond), cfg.Limits.AuthFailuresBurst, maxLimiterKeys),
	}
}

// allowPublish applies the rule's rate_limit to a user's publishes on a
// channel. The API key is not limited.
func (l *limits) allowPublish(id Identity, cr *channelRule, now time.Time) error {
	r := cr.rule
	if id.System || r == nil || r.publishLimits == nil {
		return nil
	}
	key := id.User + "\x00" + cr.channel
	if ok, retry := r.publishLimits.allow(key, now); !ok {
		l.stats.rateLimited.WithLabelValues("publish").Inc()
		rl := r.cfg.RateLimit
		return rateLimited(cr.channel, retry, "publishing to channel %q is limited to %d per %s", cr.channel, rl.Limit, rl.Window)
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
	if ok, retry := s.limits.ops.allow(sess.ID, s.now()); !ok {
		s.stats.rateLimited.WithLabelValues("ops").Inc()
		return rateLimited("", retry, "more than %g ops per second on this connection", s.cfg.Limits.OpsPerSecond)
	}
	return nil
}

// limitedIP returns the client IP of remoteAddr that per-IP limits
// apply to, or "" for none: loopback addresses are exempt (a proxy on the
// same host, or a load test).
func limitedIP(remoteAddr string) string {
	host, _, err := net.SplitHostPort(remoteAddr)
	if err != nil {
		host = remoteAddr
	}
	ip := net.ParseIP(host)
	if ip == nil || ip.IsLoopback() {
		return ""
	}
	return ip.String()
}

// allowConnect applies the per-IP rate of new sessions.
func (l *limits) allowConnect(remoteAddr string, now time.Time) error {
	ip := limitedIP(remoteAddr)
	if ip == "" {
		return nil
	}
	if ok, retry := l.connects.allow(ip, now); !ok {
		l.stats.rateLimited.WithLabelValues("connect").Inc()
		return rateLimited("", retry, "more than %g new connections per second from %s", float64(l.connects.limit), ip)
	}
	return nil
}

// checkAuth refuses a request that brings credentials from an IP past
// its rate of failed ones, before they are checked; failed counts a
// failure (call it after a check that failed).
func (l *limits) checkAuth(ip string, now time.Time) error {
	if ip == "" {
		return nil
	}
	if out, retry := l.authFails.exhausted(ip, now); out {
		l.stats.rateLimited.WithLabelValues("auth").Inc()
		return rateLimited("", retry, "too many requests with bad credentials from %s (more than %g per second)", ip, float64(l.authFails.limit))
	}
	return nil
}

func (l *limits) failed(ip string, now time.Time) {
	if ip != "" {
		l.authFails.allow(ip, now)
	}
}

// subscriberRetryAfter is the retry time of a subscription refused by
// max_subscribers. Nothing says when a subscriber will leave: 5 s lets a
// client come back soon enough to take a freed place, and spaces out a
// crowd retrying (a chat room that is full at the start of an event)
// far enough not to make a flood of it.
const subscriberRetryAfter = 5 * time.Second

// checkCapacity refuses a subscription past the rule's max_subscribers.
func checkCapacity(h *hub, cr *channelRule) error {
	r := cr.rule
	if r == nil || r.cfg.MaxSubscribers == 0 {
		return nil
	}
	if n := h.subscribers(cr.channel); n >= r.cfg.MaxSubscribers {
		return rateLimited(cr.channel, subscriberRetryAfter, "channel %q has %d subscribers, the limit is %d", cr.channel, n, r.cfg.MaxSubscribers)
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

// EnterUser admits one more API request of id's user, or refuses it with
// 429 when the user has 64 being served; done releases it. The HTTP API
// calls it before it reads a publish's body. The API key and anonymous
// callers are not counted.
func (s *Server) EnterUser(id Identity) (done func(), err error) {
	if !member(id) {
		return func() {}, nil
	}
	f := &s.limits.inflight
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.n == nil {
		f.n = make(map[string]int)
	}
	if f.n[id.User] >= maxInflightPerUser {
		s.stats.rateLimited.WithLabelValues("publish").Inc()
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
