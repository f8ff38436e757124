package server

import (
	"context"
	"encoding/json"
	"fmt"
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
		user, channel, err := parseGrantKey(key)
		if err != nil {
			return err
		}
		actions, err := parseGrantValue(key, value)
		if err != nil {
			return err
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

// Grants is the dynamic access users hold to channels — the principal
// grant of the rules — kept in memory and stored durably, effective at
// once. The Server owns it; Server.Grants hands it out.
type Grants struct {
	srv *Server
	set *grantSet
}

// Grants returns the server's dynamic grants.
func (s *Server) Grants() *Grants { return s.grants }

// Set gives g.User the actions g.Actions on g.Channel (an exact name, or a
// prefix ending in *), replacing what was granted there; no actions means
// all four. It returns the grant as stored.
func (g *Grants) Set(ctx context.Context, grant Grant) (Grant, error) {
	actions, err := grantActions(grant)
	if err != nil {
		return Grant{}, err
	}
	return g.put(ctx, grant, actions)
}

// Revoke takes the actions g.Actions (all when none are given) away from
// g.User on g.Channel and returns what is left granted there.
// Subscriptions the change no longer allows end with a
// herald.unsubscribed notice.
func (g *Grants) Revoke(ctx context.Context, grant Grant) (Grant, error) {
	remove, err := grantActions(grant)
	if err != nil {
		return Grant{}, err
	}
	return g.put(ctx, grant, g.set.get(grant.User, grant.Channel)&^remove)
}

// List returns user's grants, sorted by channel.
func (g *Grants) List(user string) ([]Grant, error) {
	if user == "" {
		return nil, invalidf("user is required")
	}
	return g.set.list(user), nil
}

// grantActions checks a grant's user and channel and returns its actions
// (all four when none are named).
func grantActions(grant Grant) (actionSet, error) {
	if err := validateGrantTarget(grant.User, grant.Channel); err != nil {
		return 0, err
	}
	if len(grant.Actions) == 0 {
		return allActions, nil
	}
	return parseActions(grant.Actions)
}

func (g *Grants) put(ctx context.Context, grant Grant, actions actionSet) (Grant, error) {
	if err := g.store(ctx, grant.User, grant.Channel, actions); err != nil {
		return Grant{}, err
	}
	return Grant{User: grant.User, Channel: grant.Channel, Actions: actions.names()}, nil
}

// store stores user's actions on channel (replacing what was granted
// there; none removes the grant), effective at once. Subscriptions the
// change no longer allows end with a herald.unsubscribed notice.
func (g *Grants) store(ctx context.Context, user, channel string, actions actionSet) error {
	if err := validateGrantTarget(user, channel); err != nil {
		return err
	}
	engine := g.srv.engine
	var err error
	if actions == 0 {
		err = engine.DeleteState(ctx, grantKey(user, channel))
	} else {
		b, _ := json.Marshal(struct {
			Actions []string `json:"actions"`
		}{actions.names()})
		err = engine.PutState(ctx, grantKey(user, channel), b)
	}
	if err != nil {
		return fmt.Errorf("store grant: %w", err)
	}
	g.set.set(user, channel, actions)
	for _, sess := range g.srv.sessions.ofUser(user) {
		sess.recheck()
	}
	return nil
}

// recheck revokes the subscriptions the session's identity no longer
// allows.
func (s *Session) recheck() {
	id := s.Identity()
	for _, ch := range s.Channels() {
		cr := s.srv.rules.lookup(ch)
		if s.srv.authorize(id, ActionSubscribe, &cr) != nil {
			s.revoke(ch)
		}
	}
}

// revoke ends one subscription: the client gets herald.unsubscribed after
// the last message of the channel it was sent; a session left with no
// channel is closed with reason revoked.
func (s *Session) revoke(channel string) {
	srv := s.srv
	if !srv.Unsubscribe(s, channel) {
		return
	}
	srv.logger.Info("subscription revoked", "session", s.ID, "user", s.Identity().User, "channel", channel)
	b := []byte(`"event":"` + protocol.EventUnsubscribed + `","data":{"reason":"` + protocol.ReasonRevoked + `"},"time":"`)
	b = srv.now().UTC().AppendFormat(b, timeFormat)
	b = append(b, `"}`...)
	m := &Message{Channel: channel, Event: protocol.EventUnsubscribed, Raw: buildEnvelope(channel, 0, "", b)}
	if !s.q.push(Item{Kind: KindUnsubscribed, Msg: m}) {
		s.fail(ReasonSlowConsumer)
		return
	}
	if s.fixed && len(s.Channels()) == 0 {
		s.fail(ReasonRevoked)
	}
}
