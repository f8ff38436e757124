package server

import (
	"encoding/json"
	"fmt"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/heraldrt/herald/store"
)

// sharedState keeps this node's grants and bans in step with what the
// other nodes of a cluster write, on an engine they share
// (store.StateWatcher). Each node keeps its copy in memory for the hot
// path; the engine's watch tells it of every change, its own included
// (applying those again changes nothing).
//
// The watch starts before the grants and bans are loaded, and what it
// reports meanwhile waits in queued: applied in order after the load, it
// leaves each key at its newest value, so no change falls between the
// load and the watch.
type sharedState struct {
	mu     sync.Mutex // guards srv and queued; held while a change is applied, so they apply in order
	srv    *Server    // nil until attach
	queued []stateChange
	stop   func() // ends the watch; nil on an engine without one
}

type stateChange struct {
	key     string
	value   []byte
	deleted bool
}

// watchSharedState starts the watch when engine has one.
func watchSharedState(engine store.Engine) (*sharedState, error) {
	ss := &sharedState{}
	w, ok := engine.(store.StateWatcher)
	if !ok {
		return ss, nil
	}
	stop, err := w.WatchState("", ss.changed)
	if err != nil {
		return nil, fmt.Errorf("watch the shared state: %w", err)
	}
	ss.stop = stop
	return ss, nil
}

// changed is the watch's callback, on the engine's goroutine.
func (ss *sharedState) changed(key string, value []byte, deleted bool) {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	if ss.srv == nil {
		ss.queued = append(ss.queued, stateChange{key, value, deleted})
		return
	}
	ss.srv.applyShared(stateChange{key, value, deleted})
}

// attach applies what was queued, then every change as it comes.
func (ss *sharedState) attach(s *Server) {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	for _, c := range ss.queued {
		s.applyShared(c)
	}
	ss.queued, ss.srv = nil, s
}

// close ends the watch.
func (ss *sharedState) close() {
	if ss != nil && ss.stop != nil {
		ss.stop()
	}
}

// applyShared applies one change of the shared state: a grant (the
// user's subscriptions are checked again), a ban (the user's sessions on
// this node close) or a disconnect (those opened before it close). Other
// keys are not kept in memory.
func (s *Server) applyShared(c stateChange) {
	switch {
	case strings.HasPrefix(c.key, grantPrefix):
		var actions actionSet
		user, channel, err := parseGrantKey(c.key)
		if err == nil && !c.deleted {
			actions, err = parseGrantValue(c.key, c.value)
		}
		if err != nil {
			s.logger.Warn("shared state: a grant another node wrote cannot be read", "err", err)
			return
		}
		s.grants.set.set(user, channel, actions)
		for _, sess := range s.sessions.ofUser(user) {
			sess.recheck()
		}
	case strings.HasPrefix(c.key, banPrefix):
		user, err := url.PathUnescape(strings.TrimPrefix(c.key, banPrefix))
		var until time.Time
		if err == nil && !c.deleted {
			err = until.UnmarshalText(c.value)
		}
		if err != nil {
			s.logger.Warn("shared state: a ban another node wrote cannot be read", "key", c.key, "err", err)
			return
		}
		m := s.moderation
		m.mu.Lock()
		if c.deleted {
			delete(m.until, user)
		} else {
			m.until[user] = until
		}
		m.mu.Unlock()
		if !c.deleted && s.now().Before(until) {
			closeSessions(s.sessions.ofUser(user), ReasonBanned)
		}
	case strings.HasPrefix(c.key, kickPrefix) && !c.deleted:
		user, err := url.PathUnescape(strings.TrimPrefix(c.key, kickPrefix))
		var at time.Time
		if err == nil {
			err = at.UnmarshalText(c.value)
		}
		if err != nil {
			s.logger.Warn("shared state: a disconnect another node wrote cannot be read", "key", c.key, "err", err)
			return
		}
		var before []*Session
		for _, sess := range s.sessions.ofUser(user) {
			if sess.opened.Before(at) {
				before = append(before, sess)
			}
		}
		closeSessions(before, ReasonKicked)
	}
}

// parseGrantKey splits "grant/<user>/<channel>".
func parseGrantKey(key string) (user, channel string, err error) {
	userEsc, channel, ok := strings.Cut(strings.TrimPrefix(key, grantPrefix), "/")
	user, err = url.PathUnescape(userEsc)
	if !ok || err != nil {
		return "", "", fmt.Errorf("grant key %q is malformed", key)
	}
	return user, channel, nil
}

// parseGrantValue reads a stored grant's actions.
func parseGrantValue(key string, value []byte) (actionSet, error) {
	var v struct{ Actions []string }
	if err := json.Unmarshal(value, &v); err != nil {
		return 0, fmt.Errorf("grant %q: %w", key, err)
	}
	actions, err := parseActions(v.Actions)
	if err != nil {
		return 0, fmt.Errorf("grant %q: %w", key, err)
	}
	return actions, nil
}
