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
// events as ephemeral messages on the channels. One goroutine, owned by
// the Server and stopped by Shutdown, advances its clock: it fires the
// leaves held back by the grace period and the states past their time.

// lastSeenPrefix keys a user's last-seen time in the store's small state.
const lastSeenPrefix = "lastseen/"

type presenceState struct {
	tracker *presence.Tracker
	kick    chan struct{} // one slot: a deadline may have come nearer
	stop    chan struct{}
	done    chan struct{}
	once    sync.Once

	limiters *limiterSet // per member (user, NUL, channel): signals

	mu       sync.Mutex           // guards onlineAt
	onlineAt map[string]time.Time // users come online, for status channels they join soon
}

func (s *Server) startPresence() {
	p := &s.presence
	p.tracker = presence.New(presence.Options{Grace: s.cfg.PresenceGrace, MaxStateTTL: s.cfg.SignalMaxTTL})
	p.kick = make(chan struct{}, 1)
	p.stop = make(chan struct{})
	p.done = make(chan struct{})
	p.limiters = newLimiterSet(rate.Limit(s.cfg.SignalRate), s.cfg.SignalBurst, maxLimiterKeys)
	p.onlineAt = make(map[string]time.Time)
	go s.presenceLoop()
}

// stopPresence stops the presence goroutine; users still online are
// recorded as last seen now. Idempotent.
func (s *Server) stopPresence() {
	p := &s.presence
	p.once.Do(func() {
		close(p.stop)
		<-p.done
	})
}

// presenceLoop advances the tracker's clock when its next deadline comes.
func (s *Server) presenceLoop() {
	p := &s.presence
	defer close(p.done)
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		wait := time.Hour
		if next, ok := p.tracker.Next(); ok {
			wait = max(next.Sub(s.now()), 0)
		}
		timer.Reset(wait)
		select {
		case <-p.stop:
			return
		case <-p.kick:
		case <-timer.C:
			s.presenceTick()
		}
	}
}

// presenceTick fires what is due now. Tests with a fake clock call it.
func (s *Server) presenceTick() {
	s.announce(s.presence.tracker.Advance(s.now()))
}

func (s *Server) kickPresence() {
	select {
	case s.presence.kick <- struct{}{}:
	default:
	}
}

// channelPresence returns a channel's presence options: its rule's, or,
// in dev mode on a channel no rule covers, presence without join/leave.
func (s *Server) channelPresence(channel string) (on, joinLeave, status bool) {
	var caps captures
	if r := s.rules.match(channel, &caps); r != nil {
		return r.cfg.Presence, r.cfg.JoinLeave, r.cfg.Status
	}
	return s.cfg.Dev, false, false
}

// member reports whether sessions of id take part in presence: users do;
// the API key and anonymous clients do not.
func member(id Identity) bool { return id.User != "" && !id.System && !id.Anonymous }

func (s *Server) joinPresence(sess *Session, channel string) {
	id := sess.Identity()
	if on, _, _ := s.channelPresence(channel); !on || !member(id) {
		return
	}
	attrs := make(map[string]string, len(s.cfg.PresenceAttrs))
	for _, k := range s.cfg.PresenceAttrs {
		if v := id.Attrs[k]; len(v) > 0 {
			attrs[k] = v[0]
		}
	}
	s.announceFrom(s.presence.tracker.Join(s.now(), channel, id.User, sess.ID, attrs), sess.ID)
}

func (s *Server) leavePresence(sess *Session, channel string) {
	id := sess.Identity()
	if on, _, _ := s.channelPresence(channel); !on || !member(id) {
		return
	}
	s.presence.tracker.Leave(s.now(), channel, id.User, sess.ID)
	s.kickPresence()
}

func (s *Server) connectPresence(sess *Session) {
	if id := sess.Identity(); member(id) {
		s.announce(s.presence.tracker.Connect(s.now(), id.User, sess.ID))
	}
}

func (s *Server) disconnectPresence(sess *Session) {
	if id := sess.Identity(); member(id) {
		s.presence.tracker.Disconnect(s.now(), id.User, sess.ID)
		s.kickPresence()
	}
}

// announce turns presence events into ephemeral messages on their
// channels, and records online and last-seen times.
func (s *Server) announce(evs []presence.Event) { s.announceFrom(evs, "") }

// announceFrom is announce for events a session caused: its own join is
// not sent back to it.
func (s *Server) announceFrom(evs []presence.Event, session string) {
	for _, e := range evs {
		_, joinLeave, status := s.channelPresence(e.Channel)
		switch e.Kind {
		case presence.Joined:
			if joinLeave {
				s.deliverPresence(e.Channel, protocol.EventJoin, memberData(e.Member, false), session)
			}
			if status && s.cameOnline(e.Member.User, e.At) {
				s.deliverPresence(e.Channel, protocol.EventOnline, userData(e.Member.User, e.At), session)
			}
		case presence.Left:
			if joinLeave {
				s.deliverPresence(e.Channel, protocol.EventLeave, memberData(e.Member, false), "")
			}
			// Offline once no session of the user is left anywhere (the
			// user's own offline deadline may come a moment later).
			if _, sessions := s.presence.tracker.User(e.Member.User); status && sessions == 0 {
				s.deliverPresence(e.Channel, protocol.EventOffline, userData(e.Member.User, e.At), "")
			}
			s.forgetMember(e.Member.User, e.Channel)
		case presence.StateChanged:
			s.deliverPresence(e.Channel, protocol.EventState, memberData(e.Member, true), "")
		case presence.Online:
			s.presence.mu.Lock()
			s.presence.onlineAt[e.Member.User] = e.At
			s.presence.mu.Unlock()
		case presence.Offline:
			s.presence.mu.Lock()
			delete(s.presence.onlineAt, e.Member.User)
			s.presence.mu.Unlock()
			s.storeLastSeen(e.Member.User, e.At)
		}
	}
}

// cameOnline reports whether user came online within the grace period
// before at: their first joins announce herald.online.
func (s *Server) cameOnline(user string, at time.Time) bool {
	s.presence.mu.Lock()
	defer s.presence.mu.Unlock()
	t, ok := s.presence.onlineAt[user]
	return ok && at.Sub(t) <= s.cfg.PresenceGrace
}

func (s *Server) forgetMember(user, channel string) {
	s.presence.limiters.forget(user + "\x00" + channel)
}

func (s *Server) storeLastSeen(user string, at time.Time) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	b, _ := at.UTC().MarshalText()
	if err := s.engine.PutState(ctx, lastSeenPrefix+url.PathEscape(user), b); err != nil {
		s.logger.Warn("store last-seen", "user", user, "err", err)
	}
}

// onlineUsers returns the distinct users among sessions.
func (s *Server) onlineUsers(sessions []*Session) []string {
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

// deliverPresence sends a server event to a channel's live subscribers,
// but exclude.
func (s *Server) deliverPresence(channel, event string, data []byte, exclude string) {
	b := make([]byte, 0, len(data)+96)
	b = append(b, `"event":"`...)
	b = append(b, event...)
	b = append(b, `","data":`...)
	b = append(b, data...)
	b = append(b, `,"time":"`...)
	b = s.now().UTC().AppendFormat(b, timeFormat)
	b = append(b, `"}`...)
	s.hub.deliverEphemeral(&Message{Channel: channel, Event: event, Raw: buildEnvelope(channel, 0, "", b), presence: true, excludeSession: exclude})
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
	if err := s.authorize(id, ActionPresence, channel); err != nil {
		return PresenceInfo{}, err
	}
	if on, _, _ := s.channelPresence(channel); !on {
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
	if on, _, _ := s.channelPresence(req.Channel); !on {
		// Only who may subscribe learns how the channel's rule is set.
		if err := s.authorize(id, ActionSubscribe, req.Channel); err != nil {
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
			s.metrics.rateLimited.WithLabelValues("signal").Inc()
			return rateLimited(req.Channel, retry, "signals on channel %q are limited to %g per second", req.Channel, s.cfg.SignalRate)
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
	s.announce(evs)
	s.kickPresence()
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
