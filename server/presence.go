package server

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"sync"
	"time"

	"golang.org/x/time/rate"

	"github.com/heraldrt/herald/presence"
	"github.com/heraldrt/herald/protocol"
)

// Presence: who is in which channel (on channels whose rule says
// presence: true), join/leave events (join_leave: true), online status and
// last-seen per user, and members' short-lived state (typing).
//
// The presence package holds the state and says what happened; this file
// feeds it (sessions joining, leaving, connecting) and announces its
// events as ephemeral messages on the channels and as life events to the
// observers. One goroutine, owned by the Server and stopped by Shutdown,
// advances its clock: it fires the leaves held back by the grace period
// and the states past their time.

// lastSeenPrefix keys a user's last-seen time in the store's small state.
const lastSeenPrefix = "lastseen/"

// presenceWiring feeds the tracker and announces what it says. Owned by
// the Server, which starts it in New and stops it in Shutdown.
type presenceWiring struct {
	srv     *Server
	tracker *presence.Tracker
	kick    chan struct{} // one slot: a deadline may have come nearer
	stop    chan struct{}
	done    chan struct{}
	once    sync.Once

	limiters *limiterSet  // per member (user, NUL, channel): signals
	bus      *presenceBus // the other nodes of a cluster; nil on one node

	mu       sync.Mutex           // guards onlineAt
	onlineAt map[string]time.Time // users come online, for status channels they join soon
}

// startPresence starts the presence clock of s.
func startPresence(s *Server) *presenceWiring {
	p := &presenceWiring{
		srv:      s,
		tracker:  presence.New(presence.Options{Grace: s.cfg.Presence.Grace, MaxStateTTL: s.cfg.Presence.SignalMaxTTL}),
		kick:     make(chan struct{}, 1),
		stop:     make(chan struct{}),
		done:     make(chan struct{}),
		limiters: newLimiterSet(rate.Limit(s.cfg.Presence.SignalRate), s.cfg.Presence.SignalBurst, maxLimiterKeys),
		onlineAt: make(map[string]time.Time),
	}
	go p.loop() // owned: stopped and waited for by stop (Shutdown)
	var err error
	if p.bus, err = startPresenceBus(p, s.engine); err != nil {
		s.logger.Warn("presence: this node's members stay its own: no bus to the other nodes", "err", err)
	}
	return p
}

// halt stops the presence goroutines. Idempotent.
func (p *presenceWiring) halt() {
	p.once.Do(func() {
		p.bus.halt()
		close(p.stop)
		<-p.done
	})
}

// loop advances the tracker's clock when its next deadline comes.
func (p *presenceWiring) loop() {
	defer close(p.done)
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		wait := time.Hour
		if next, ok := p.tracker.Next(); ok {
			wait = max(next.Sub(p.srv.now()), 0)
		}
		timer.Reset(wait)
		select {
		case <-p.stop:
			return
		case <-p.kick:
		case <-timer.C:
			p.tick()
		}
	}
}

// tick fires what is due now. Tests with a fake clock call it.
func (p *presenceWiring) tick() {
	p.announce(p.tracker.Advance(p.srv.now()), nil, nil)
}

func (p *presenceWiring) kickClock() {
	select {
	case p.kick <- struct{}{}:
	default:
	}
}

// member reports whether sessions of id take part in presence: users do;
// the API key and anonymous clients do not.
func member(id Identity) bool { return id.User != "" && !id.System && !id.Anonymous }

// join enters a new subscription's user in its channel, on a channel
// whose rule (matched when it subscribed) keeps presence.
func (p *presenceWiring) join(sess *Session, sub *subscription) {
	id := sess.Identity()
	if on, _, _ := p.srv.rules.presence(sub.rule); !on || !member(id) {
		return
	}
	attrs := p.memberAttrs(id)
	evs := p.tracker.Join(p.srv.now(), sub.name, id.User, sess.ID, attrs)
	p.announce(evs, sess, &channelRule{channel: sub.name, rule: sub.rule})
	p.bus.send(presenceOp{Op: "join", Session: sess.ID, User: id.User, Channel: sub.name, Attrs: attrs})
}

// memberAttrs are the token attributes a member shows (presence.attrs).
func (p *presenceWiring) memberAttrs(id Identity) map[string]string {
	attrs := make(map[string]string, len(p.srv.cfg.Presence.Attrs))
	for _, k := range p.srv.cfg.Presence.Attrs {
		if v := id.Attrs[k]; len(v) > 0 {
			attrs[k] = v[0]
		}
	}
	return attrs
}

// leave takes an ended subscription's session out of its channel: the
// user leaves once the grace has passed without another of theirs.
func (p *presenceWiring) leave(sess *Session, sub *subscription) {
	id := sess.Identity()
	if on, _, _ := p.srv.rules.presence(sub.rule); !on || !member(id) {
		return
	}
	p.tracker.Leave(p.srv.now(), sub.name, id.User, sess.ID)
	p.kickClock()
	p.bus.send(presenceOp{Op: "leave", Session: sess.ID, User: id.User, Channel: sub.name})
}

func (p *presenceWiring) connect(sess *Session) {
	if id := sess.Identity(); member(id) {
		p.announce(p.tracker.Connect(p.srv.now(), id.User, sess.ID), sess, nil)
		p.bus.send(presenceOp{Op: "connect", Session: sess.ID, User: id.User})
	}
}

func (p *presenceWiring) disconnect(sess *Session) {
	if id := sess.Identity(); member(id) {
		p.tracker.Disconnect(p.srv.now(), id.User, sess.ID)
		p.kickClock()
		p.bus.send(presenceOp{Op: "disconnect", Session: sess.ID, User: id.User})
	}
}

// announce turns presence events into ephemeral messages on their
// channels and life events for the observers, and records online and
// last-seen times. Events a session caused name it as session: its own
// join is not sent back to it. known, when not nil, is the rule of a
// channel already matched (a join's), which its events need not match
// again.
func (p *presenceWiring) announce(evs []presence.Event, cause *Session, known *channelRule) {
	s := p.srv
	session := ""
	if cause != nil {
		session = cause.ID
	}
	for _, e := range evs {
		var r *rule
		if known != nil && known.channel == e.Channel {
			r = known.rule
		} else if e.Channel != "" {
			r = s.rules.lookup(e.Channel).rule
		}
		_, joinLeave, status := s.rules.presence(r)
		switch e.Kind {
		case presence.Joined:
			if joinLeave {
				p.deliver(e.Channel, protocol.EventJoin, memberData(e.Member, false), session)
			}
			if status && p.cameOnline(e.Member.User, e.At) {
				p.deliver(e.Channel, protocol.EventOnline, userData(e.Member.User, e.At), session)
			}
			p.observe(UserJoined, e, cause)
		case presence.Left:
			if joinLeave {
				p.deliver(e.Channel, protocol.EventLeave, memberData(e.Member, false), "")
			}
			// Offline once no session of the user is left anywhere (the
			// user's own offline deadline may come a moment later).
			if _, sessions := p.tracker.User(e.Member.User); status && sessions == 0 {
				p.deliver(e.Channel, protocol.EventOffline, userData(e.Member.User, e.At), "")
			}
			p.limiters.forget(e.Member.User + "\x00" + e.Channel)
			p.observe(UserLeft, e, cause)
		case presence.StateChanged:
			p.deliver(e.Channel, protocol.EventState, memberData(e.Member, true), "")
			p.observe(StateChanged, e, cause)
		case presence.Online:
			p.mu.Lock()
			p.onlineAt[e.Member.User] = e.At
			p.mu.Unlock()
			p.observe(UserOnline, e, cause)
		case presence.Offline:
			p.mu.Lock()
			delete(p.onlineAt, e.Member.User)
			p.mu.Unlock()
			p.storeLastSeen(e.Member.User, e.At)
			p.observe(UserOffline, e, cause)
		}
	}
}

// observe tells the observers of a presence event, naming the session
// that caused it (a join, a first connection) when there is one.
func (p *presenceWiring) observe(kind EventKind, e presence.Event, cause *Session) {
	obs := &p.srv.obs
	if !obs.want(kind) {
		return
	}
	ev := Event{Kind: kind, At: e.At, User: e.Member.User, Channel: e.Channel}
	if cause != nil {
		ev.Session, ev.Transport = cause.ID, cause.transport.name
	}
	if kind == StateChanged {
		ev.State = e.Member.State
		if ev.State == nil {
			ev.State = json.RawMessage("null")
		}
	}
	obs.emit(ev)
}

// cameOnline reports whether user came online within the grace period
// before at: their first joins announce herald.online.
func (p *presenceWiring) cameOnline(user string, at time.Time) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	t, ok := p.onlineAt[user]
	return ok && at.Sub(t) <= p.srv.cfg.Presence.Grace
}

func (p *presenceWiring) storeLastSeen(user string, at time.Time) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	b, _ := at.UTC().MarshalText()
	if err := p.srv.engine.PutState(ctx, lastSeenPrefix+url.PathEscape(user), b); err != nil {
		p.srv.logger.Warn("store last-seen", "user", user, "err", err)
	}
}

// PresenceMember is a member as the API and the events show it: the wire
// shape, whose home is protocol.
type PresenceMember = protocol.Member

func toMember(m presence.Member, withState bool) PresenceMember {
	out := PresenceMember{User: m.User, Attrs: m.Attrs, Sessions: m.Sessions}
	if !m.JoinedAt.IsZero() {
		out.JoinedAt = m.JoinedAt.UTC().Format(timeFormat)
	}
	if withState {
		out.State = m.State
		if out.State == nil {
			out.State = json.RawMessage("null")
		}
	}
	return out
}

func memberData(m presence.Member, withState bool) []byte {
	b, _ := json.Marshal(toMember(m, withState))
	return b
}

func userData(user string, at time.Time) []byte {
	b, _ := json.Marshal(protocol.UserEventData{User: user, At: at.UTC().Format(timeFormat)})
	return b
}

// deliver sends a server event to a channel's live subscribers, but
// exclude.
func (p *presenceWiring) deliver(channel, event string, data []byte, exclude string) {
	b := make([]byte, 0, len(data)+96)
	b = append(b, `"event":"`...)
	b = append(b, event...)
	b = append(b, `","data":`...)
	b = append(b, data...)
	b = append(b, `,"time":"`...)
	b = p.srv.now().UTC().AppendFormat(b, timeFormat)
	b = append(b, `"}`...)
	p.srv.hub.deliverEphemeral(&Message{Channel: channel, Event: event, Raw: buildEnvelope(channel, 0, "", b), presence: true, excludeSession: exclude})
}

// presenceOff is the one answer to a presence query or signal on a
// channel whose rule does not keep presence.
func presenceOff(channel string) *Error {
	return invalidf("presence is not enabled on channel %q (its rule needs presence: true)", channel)
}

// PresenceInfo answers a presence query: the members, or with stats only
// their counts (the wire shape, whose home is protocol).
type PresenceInfo = protocol.Presence

// Presence returns who is in a channel (members sorted by user), checked
// against the rule's presence action.
func (s *Server) Presence(id Identity, channel string, stats bool) (PresenceInfo, error) {
	if err := ValidateChannel(channel); err != nil {
		return PresenceInfo{}, err
	}
	cr := s.rules.lookup(channel)
	if err := s.authorize(id, ActionPresence, &cr); err != nil {
		return PresenceInfo{}, err
	}
	if on, _, _ := s.rules.presence(cr.rule); !on {
		return PresenceInfo{}, presenceOff(channel)
	}
	info := PresenceInfo{Channel: channel}
	info.Count, info.Sessions = s.presence.tracker.Stats(channel)
	if !stats {
		for _, m := range s.presence.tracker.Members(channel) {
			info.Members = append(info.Members, toMember(m, true))
		}
	}
	return info, nil
}

// SignalRequest sets or clears the caller's short-lived state in a
// channel (typing…); the wire shape, whose home is protocol.
type SignalRequest = protocol.SignalRequest

// defaultSignalTTL is a signal's time to live when none is given.
const defaultSignalTTL = 3 * time.Second

// Signal sets the caller's state on its membership of a channel; others
// hear herald.state now and again when it expires without a refresh.
// Setting a state is rate limited per member; clearing one (state absent
// or null) never is: a client must always be able to say it stopped
// typing, and clears cannot flood — only a clear that removes a state
// (set at the limited rate) is announced.
func (s *Server) Signal(id Identity, req SignalRequest) error {
	if err := ValidateChannel(req.Channel); err != nil {
		return err
	}
	cr := s.rules.lookup(req.Channel)
	if on, _, _ := s.rules.presence(cr.rule); !on {
		// Only who may subscribe learns how the channel's rule is set.
		if err := s.authorize(id, ActionSubscribe, &cr); err != nil {
			return err
		}
		return presenceOff(req.Channel)
	}
	if !member(id) {
		return forbiddenf(req.Channel, "signals come from users in the channel; the API key and anonymous clients have no membership")
	}
	ttl := defaultSignalTTL
	if req.TTL != nil {
		ttl = time.Duration(*req.TTL * float64(time.Second))
	}
	now := s.now()
	if !presence.Clears(req.State) {
		if ok, retry := s.presence.limiters.allow(id.User+"\x00"+req.Channel, now); !ok {
			s.stats.rateLimited.WithLabelValues("signal").Inc()
			return rateLimited(req.Channel, retry, "signals on channel %q are limited to %g per second", req.Channel, s.cfg.Presence.SignalRate)
		}
	}
	evs, err := s.presence.tracker.SetState(now, req.Channel, id.User, req.State, ttl)
	switch {
	case errors.Is(err, presence.ErrNotMember):
		return forbiddenf(req.Channel, "user %q is not in channel %q: subscribe first", id.User, req.Channel)
	case errors.Is(err, presence.ErrStateLarge), errors.Is(err, presence.ErrBadTTL):
		return invalidf("signal: %v", err)
	case err != nil:
		return err
	}
	s.presence.announce(evs, nil, &cr)
	s.presence.kickClock()
	s.presence.bus.send(presenceOp{Op: "state", User: id.User, Channel: req.Channel, State: req.State, TTL: ttl})
	return nil
}

// UserStatus is the answer of GET /api/users/{id}.
type UserStatus struct {
	User     string  `json:"user"`
	Online   bool    `json:"online"`
	Sessions int     `json:"sessions"`
	LastSeen *string `json:"last_seen"`
}

// User returns whether a user is online and when they were last seen:
// now when online, else the persisted time their last session left.
func (s *Server) User(ctx context.Context, id Identity, user string) (UserStatus, error) {
	if !id.System && id.User != user {
		return UserStatus{}, newError(http.StatusForbidden, ErrForbidden, "a user's status is for the API key or that user")
	}
	out := UserStatus{User: user}
	out.Online, out.Sessions = s.presence.tracker.User(user)
	if out.Online {
		t := s.now().UTC().Format(timeFormat)
		out.LastSeen = &t
		return out, nil
	}
	b, ok, err := s.engine.GetState(ctx, lastSeenPrefix+url.PathEscape(user))
	if err != nil {
		return UserStatus{}, err
	}
	if ok {
		var t time.Time
		if t.UnmarshalText(b) == nil {
			v := t.UTC().Format(timeFormat)
			out.LastSeen = &v
		}
	}
	return out, nil
}
