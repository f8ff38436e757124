package server

import (
	"context"
	"fmt"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/heraldrt/herald/store"
)

// banPrefix keys a user's ban in the store's small state; kickPrefix
// the time of a user's last disconnect, on an engine several nodes share.
const (
	banPrefix  = "ban/"
	kickPrefix = "kick/"
)

// Moderation is the backend's hold on users: it disconnects them, and
// bans them for a while — stored durably, so a ban survives a restart —
// or lifts a ban. A banned user's credentials are refused (403) on every
// transport until the ban ends. The Server owns it; Server.Moderation
// hands it out. Each action is logged and told to observers.
type Moderation struct {
	srv *Server

	mu    sync.Mutex // guards until
	until map[string]time.Time
}

// Moderation returns the server's moderation.
func (s *Server) Moderation() *Moderation { return s.moderation }

// load reads every stored ban.
func (m *Moderation) load(ctx context.Context) error {
	m.until = make(map[string]time.Time)
	return m.srv.engine.ScanState(ctx, banPrefix, func(key string, value []byte) error {
		user, err := url.PathUnescape(strings.TrimPrefix(key, banPrefix))
		if err != nil {
			return fmt.Errorf("ban key %q: %w", key, err)
		}
		var t time.Time
		if err := t.UnmarshalText(value); err != nil {
			return fmt.Errorf("ban %q: %w", key, err)
		}
		m.until[user] = t
		return nil
	})
}

// banned returns until when user is banned (zero when not).
func (m *Moderation) banned(user string) time.Time {
	if user == "" {
		return time.Time{}
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	t, ok := m.until[user]
	if ok && !m.srv.now().Before(t) {
		delete(m.until, user) // over; the stored entry is removed lazily
		return time.Time{}
	}
	return t
}

// Ban refuses user until now+d (stored durably) and closes their sessions
// with reason banned.
func (m *Moderation) Ban(ctx context.Context, user string, d time.Duration) (time.Time, error) {
	s := m.srv
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
	m.mu.Lock()
	m.until[user] = until
	m.mu.Unlock()
	n := closeSessions(s.sessions.ofUser(user), ReasonBanned)
	s.logger.Warn("user banned", "user", user, "until", until, "sessions_closed", n)
	if s.obs.want(UserBanned) {
		s.obs.emit(Event{Kind: UserBanned, At: s.now(), User: user, Until: until, Count: n})
	}
	return until, nil
}

// Unban lifts a ban.
func (m *Moderation) Unban(ctx context.Context, user string) error {
	s := m.srv
	if user == "" {
		return invalidf("user is required")
	}
	if err := s.engine.DeleteState(ctx, banPrefix+url.PathEscape(user)); err != nil {
		return fmt.Errorf("remove ban: %w", err)
	}
	m.mu.Lock()
	delete(m.until, user)
	m.mu.Unlock()
	s.logger.Info("ban lifted", "user", user)
	if s.obs.want(UserUnbanned) {
		s.obs.emit(Event{Kind: UserUnbanned, At: s.now(), User: user})
	}
	return nil
}

// Disconnect closes every session of user with reason disconnected (the
// client is told not to reconnect by itself) and returns how many there
// were on this node. On a cluster the other nodes close theirs too, those
// opened before the call. The user may connect again at once; Ban keeps
// them out.
func (m *Moderation) Disconnect(user string) (int, error) {
	s := m.srv
	if user == "" {
		return 0, invalidf("user is required")
	}
	at := s.now()
	n := closeSessions(s.sessions.ofUser(user), ReasonKicked)
	if _, shared := s.engine.(store.StateWatcher); shared {
		// The other nodes of a cluster close theirs when they see it
		// (sharedState): those opened before at.
		b, _ := at.UTC().MarshalText()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		err := s.engine.PutState(ctx, kickPrefix+url.PathEscape(user), b)
		cancel()
		if err != nil {
			return n, fmt.Errorf("tell the other nodes: %w", err)
		}
	}
	s.logger.Warn("user disconnected", "user", user, "sessions_closed", n)
	if s.obs.want(UserDisconnected) {
		s.obs.emit(Event{Kind: UserDisconnected, At: s.now(), User: user, Count: n})
	}
	return n, nil
}

// closeSessions ends sessions for reason and returns how many there were.
func closeSessions(sessions []*Session, reason Reason) int {
	for _, sess := range sessions {
		sess.fail(reason)
		if sess.parked() {
			sess.Close(reason) // a parked session has no transport to close it
		}
	}
	return len(sessions)
}
