package server

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"sort"
	"strings"
	"sync"

	"github.com/heraldrt/herald/protocol"
	"github.com/heraldrt/herald/store"
)

// actionSet is a set of actions, one bit each.
type actionSet uint8

const allActions = actionSet(1<<numActions - 1)

func (s actionSet) has(a Action) bool { return s&(1<<a) != 0 }

func (s actionSet) names() []string {
	names := []string{}
	for a := Action(0); a < numActions; a++ {
		if s.has(a) {
			names = append(names, a.String())
		}
	}
	return names
}

func parseActions(names []string) (actionSet, error) {
	var s actionSet
	for _, n := range names {
		a, ok := parseAction(n)
		if !ok {
			return 0, invalidf("action %q is unknown; want subscribe, publish, history or presence", n)
		}
		s |= 1 << a
	}
	return s, nil
}

// Grant is dynamic access for one user to a channel (an exact name, or a
// prefix ending in *), as the grants API reads and writes it (the wire
// shape, whose home is protocol).
type Grant = protocol.Grant

// grantSet holds every dynamic grant in memory; the store holds them
// durably under "grant/<user>/<channel>".
type grantSet struct {
	mu    sync.RWMutex // guards users
	users map[string]*userGrants
}

type userGrants struct {
	exact  map[string]actionSet
	prefix map[string]actionSet // keys without the trailing *
}

const grantPrefix = "grant/"

func grantKey(user, channel string) string {
	return grantPrefix + url.PathEscape(user) + "/" + channel
}

// loadGrants reads every stored grant.
func loadGrants(ctx context.Context, st store.Engine) (*grantSet, error) {
	g := &grantSet{users: make(map[string]*userGrants)}
	err := st.ScanState(ctx, grantPrefix, func(key string, value []byte) error {
		userEsc, channel, ok := strings.Cut(strings.TrimPrefix(key, grantPrefix), "/")
		user, err := url.PathUnescape(userEsc)
		if !ok || err != nil {
			return fmt.Errorf("grant key %q is malformed", key)
		}
		var v struct{ Actions []string }
		if err := json.Unmarshal(value, &v); err != nil {
			return fmt.Errorf("grant %q: %w", key, err)
		}
		actions, err := parseActions(v.Actions)
		if err != nil {
			return fmt.Errorf("grant %q: %w", key, err)
		}
		g.setLocked(user, channel, actions)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("load grants: %w", err)
	}
	return g, nil
}

// allows reports whether user holds a grant for action on channel.
func (g *grantSet) allows(user, channel string, a Action) bool {
	if user == "" {
		return false
	}
	g.mu.RLock()
	defer g.mu.RUnlock()
	ug := g.users[user]
	if ug == nil {
		return false
	}
	if ug.exact[channel].has(a) {
		return true
	}
	for prefix, actions := range ug.prefix {
		if actions.has(a) && strings.HasPrefix(channel, prefix) {
			return true
		}
	}
	return false
}

func (g *grantSet) get(user, channel string) actionSet {
	g.mu.RLock()
	defer g.mu.RUnlock()
	ug := g.users[user]
	if ug == nil {
		return 0
	}
	if prefix, ok := strings.CutSuffix(channel, "*"); ok {
		return ug.prefix[prefix]
	}
	return ug.exact[channel]
}

// set replaces user's actions on channel; an empty set removes the grant.
func (g *grantSet) set(user, channel string, actions actionSet) {
	g.mu.Lock()
	g.setLocked(user, channel, actions)
	g.mu.Unlock()
}

func (g *grantSet) setLocked(user, channel string, actions actionSet) {
	ug := g.users[user]
	if ug == nil {
		if actions == 0 {
			return
		}
		ug = &userGrants{exact: map[string]actionSet{}, prefix: map[string]actionSet{}}
		g.users[user] = ug
	}
	m, key := ug.exact, channel
	if prefix, ok := strings.CutSuffix(channel, "*"); ok {
		m, key = ug.prefix, prefix
	}
	if actions == 0 {
		delete(m, key)
	} else {
		m[key] = actions
	}
	if len(ug.exact) == 0 && len(ug.prefix) == 0 {
		delete(g.users, user)
	}
}

// list returns user's grants, sorted by channel.
func (g *grantSet) list(user string) []Grant {
	g.mu.RLock()
	defer g.mu.RUnlock()
	out := []Grant{}
	if ug := g.users[user]; ug != nil {
		for ch, a := range ug.exact {
			out = append(out, Grant{User: user, Channel: ch, Actions: a.names()})
		}
		for p, a := range ug.prefix {
			out = append(out, Grant{User: user, Channel: p + "*", Actions: a.names()})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Channel < out[j].Channel })
	return out
}

// validateGrantTarget checks a grant's user and channel.
func validateGrantTarget(user, channel string) error {
	if user == "" {
		return invalidf("user is required")
	}
	if len(user) > 256 {
		return invalidf("user is %d bytes long, the limit is 256", len(user))
	}
	if prefix, ok := strings.CutSuffix(channel, "*"); ok {
		if prefix == "" {
			return nil
		}
		return ValidateChannel(prefix)
	}
	return ValidateChannel(channel)
}

// SetGrant stores user's actions on channel (replacing what was granted
// there; none removes the grant), effective at once. Subscriptions the
// change no longer allows end with a herald.unsubscribed notice.
func (s *Server) SetGrant(ctx context.Context, user, channel string, actions actionSet) error {
	if err := validateGrantTarget(user, channel); err != nil {
		return err
	}
	var err error
	if actions == 0 {
		err = s.engine.DeleteState(ctx, grantKey(user, channel))
	} else {
		b, _ := json.Marshal(struct {
			Actions []string `json:"actions"`
		}{actions.names()})
		err = s.engine.PutState(ctx, grantKey(user, channel), b)
	}
	if err != nil {
		return fmt.Errorf("store grant: %w", err)
	}
	s.grants.set(user, channel, actions)
	s.recheckUser(user)
	return nil
}

// recheckUser ends every subscription of user's sessions that the rules
// no longer allow.
func (s *Server) recheckUser(user string) {
	s.mu.Lock()
	var mine []*Session
	for _, sess := range s.sessions {
		if sess.Identity().User == user && !sess.Identity().System {
			mine = append(mine, sess)
		}
	}
	s.mu.Unlock()
	for _, sess := range mine {
		s.recheck(sess)
	}
}

// recheck revokes the subscriptions of sess its identity no longer allows.
func (s *Server) recheck(sess *Session) {
	id := sess.Identity()
	for _, ch := range sess.Channels() {
		if s.authorize(id, ActionSubscribe, ch) != nil {
			s.revoke(sess, ch)
		}
	}
}

// revoke ends one subscription: the client gets herald.unsubscribed after
// the last message of the channel it was sent; a session left with no
// channel is closed with reason revoked.
func (s *Server) revoke(sess *Session, channel string) {
	if !s.Unsubscribe(sess, channel) {
		return
	}
	s.logger.Info("subscription revoked", "session", sess.ID, "user", sess.Identity().User, "channel", channel)
	b := []byte(`"event":"` + protocol.EventUnsubscribed + `","data":{"reason":"` + protocol.ReasonRevoked + `"},"time":"`)
	b = s.now().UTC().AppendFormat(b, timeFormat)
	b = append(b, `"}`...)
	m := &Message{Channel: channel, Event: protocol.EventUnsubscribed, Raw: buildEnvelope(channel, 0, "", b)}
	if !sess.q.push(Item{Kind: KindUnsubscribed, Msg: m}) {
		sess.fail(ReasonSlowConsumer)
		return
	}
	if sess.fixed && len(sess.Channels()) == 0 {
		sess.fail(ReasonRevoked)
	}
}

func (s *Server) requireSystem(w http.ResponseWriter, r *http.Request, what string) bool {
	id, ok := s.apiIdentity(w, r)
	if !ok {
		return false
	}
	if !id.System {
		s.WriteError(w, r, newError(http.StatusForbidden, ErrForbidden, "%s needs the API key", what))
		return false
	}
	return true
}

// readGrant reads the body of POST and DELETE /api/grants: the API key,
// a valid user and channel, and the actions (all four when none are
// given).
func (s *Server) readGrant(w http.ResponseWriter, r *http.Request) (Grant, actionSet, bool) {
	if !s.requireSystem(w, r, "managing grants") {
		return Grant{}, 0, false
	}
	var g Grant
	err := s.decodeBody(w, r, &g)
	if err == nil {
		err = validateGrantTarget(g.User, g.Channel)
	}
	actions := allActions
	if err == nil && len(g.Actions) > 0 {
		actions, err = parseActions(g.Actions)
	}
	if err != nil {
		s.WriteError(w, r, err)
		return Grant{}, 0, false
	}
	return g, actions, true
}

// handlePostGrant sets a user's actions on a channel.
func (s *Server) handlePostGrant(w http.ResponseWriter, r *http.Request) {
	if g, actions, ok := s.readGrant(w, r); ok {
		s.writeGrant(w, r, g, actions)
	}
}

// handleDeleteGrant takes actions (all when none are given) away.
func (s *Server) handleDeleteGrant(w http.ResponseWriter, r *http.Request) {
	if g, remove, ok := s.readGrant(w, r); ok {
		s.writeGrant(w, r, g, s.grants.get(g.User, g.Channel)&^remove)
	}
}

func (s *Server) writeGrant(w http.ResponseWriter, r *http.Request, g Grant, actions actionSet) {
	if err := s.SetGrant(r.Context(), g.User, g.Channel, actions); err != nil {
		s.WriteError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, Grant{User: g.User, Channel: g.Channel, Actions: actions.names()}, s.logger)
}

func (s *Server) handleListGrants(w http.ResponseWriter, r *http.Request) {
	if !s.requireSystem(w, r, "listing grants") {
		return
	}
	user := r.URL.Query().Get("user")
	if user == "" {
		s.WriteError(w, r, invalidf("user is required: GET /api/grants?user=<id>"))
		return
	}
	grants := s.grants.list(user)
	writeJSON(w, http.StatusOK, struct {
		User   string  `json:"user"`
		Grants []Grant `json:"grants"`
	}{user, grants}, s.logger)
}
