package presence

import (
	"container/heap"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"sync"
	"time"
)

// Member is one user in one channel.
type Member struct {
	User     string            `json:"user"`
	Attrs    map[string]string `json:"attrs,omitempty"`
	JoinedAt time.Time         `json:"joined_at"`
	// Sessions is how many of the user's sessions are in the channel.
	Sessions int `json:"sessions"`
	// State is the member's short-lived state (absent when none).
	State json.RawMessage `json:"state,omitempty"`
}

// Kind is what an event says happened.
type Kind uint8

const (
	// Joined: a user became a member of the channel.
	Joined Kind = iota + 1
	// Left: a member's last session left, and did not come back within the
	// grace period.
	Left
	// StateChanged: a member set or cleared its state, or the state
	// expired (Member.State is then empty).
	StateChanged
	// Online: a user's first session on the server connected.
	Online
	// Offline: a user's last session left, and none came back within the
	// grace period.
	Offline
)

func (k Kind) String() string {
	switch k {
	case Joined:
		return "join"
	case Left:
		return "leave"
	case StateChanged:
		return "state"
	case Online:
		return "online"
	case Offline:
		return "offline"
	}
	return fmt.Sprintf("kind(%d)", k)
}

// Event is a change to announce. Channel is empty for Online and Offline.
type Event struct {
	Kind    Kind
	Channel string
	Member  Member
	// At is when it happened: for Left and Offline, when the last session
	// left (the last-seen time), not when the grace period ran out.
	At time.Time
}

// Options configures a Tracker.
type Options struct {
	// Grace is how long a user whose last session left stays a member (and
	// online) before Left (Offline) fires; a session that comes back within
	// it cancels the leave. Default 5s.
	Grace time.Duration
	// MaxStateBytes bounds a member's state. Default 1024.
	MaxStateBytes int
	// MaxStateTTL bounds a state's time to live. Default 1 minute.
	MaxStateTTL time.Duration
}

func (o Options) withDefaults() Options {
	if o.Grace == 0 {
		o.Grace = 5 * time.Second
	}
	if o.MaxStateBytes == 0 {
		o.MaxStateBytes = 1024
	}
	if o.MaxStateTTL == 0 {
		o.MaxStateTTL = time.Minute
	}
	return o
}

// Errors of SetState, for errors.Is.
var (
	ErrNotMember  = errors.New("presence: not a member of the channel")
	ErrStateLarge = errors.New("presence: state too large")
	ErrBadTTL     = errors.New("presence: bad state ttl")
)

// Tracker holds the members of every channel and the online users.
type Tracker struct {
	opts Options

	mu       sync.Mutex                    // guards everything below
	channels map[string]map[string]*member // channel → user → member
	users    map[string]*user              // online (or in grace) users
	due      deadlines
}

type member struct {
	user     string
	attrs    map[string]string
	joinedAt time.Time
	sessions map[string]struct{}
	leftAt   time.Time // when the last session left; zero while any is in
	state    json.RawMessage
	stateTTL time.Time // when state expires
}

type user struct {
	sessions map[string]struct{}
	leftAt   time.Time
}

// New returns an empty Tracker.
func New(opts Options) *Tracker {
	return &Tracker{
		opts:     opts.withDefaults(),
		channels: make(map[string]map[string]*member),
		users:    make(map[string]*user),
	}
}

// Join records that session of userID is in channel. It returns Joined
// when the user was not a member (a member in its grace period just
// stays).
func (t *Tracker) Join(now time.Time, channel, userID, session string, attrs map[string]string) []Event {
	t.mu.Lock()
	defer t.mu.Unlock()
	ch := t.channels[channel]
	if ch == nil {
		ch = make(map[string]*member)
		t.channels[channel] = ch
	}
	m := ch[userID]
	if m == nil {
		m = &member{user: userID, attrs: attrs, joinedAt: now, sessions: make(map[string]struct{}, 1)}
		ch[userID] = m
		m.sessions[session] = struct{}{}
		return []Event{{Kind: Joined, Channel: channel, Member: m.view(), At: now}}
	}
	m.sessions[session] = struct{}{}
	m.leftAt = time.Time{}
	return nil
}

// Leave records that session left channel. When it was the member's last
// session, Left fires after the grace period, from Advance, unless a
// session joins again first.
func (t *Tracker) Leave(now time.Time, channel, userID, session string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	m := t.channels[channel][userID]
	if m == nil {
		return
	}
	delete(m.sessions, session)
	if len(m.sessions) == 0 && m.leftAt.IsZero() {
		m.leftAt = now
		t.due.add(deadline{at: now.Add(t.opts.Grace), kind: Left, channel: channel, user: userID})
	}
}

// Connect records that session of userID is connected to the server. It
// returns Online for the user's first session (not for one that comes
// back within the grace period).
func (t *Tracker) Connect(now time.Time, userID, session string) []Event {
	t.mu.Lock()
	defer t.mu.Unlock()
	u := t.users[userID]
	if u == nil {
		u = &user{sessions: make(map[string]struct{}, 1)}
		t.users[userID] = u
		u.sessions[session] = struct{}{}
		return []Event{{Kind: Online, Member: Member{User: userID, Sessions: 1}, At: now}}
	}
	u.sessions[session] = struct{}{}
	u.leftAt = time.Time{}
	return nil
}

// Disconnect records that session left the server; Offline follows after
// the grace period for the user's last session.
func (t *Tracker) Disconnect(now time.Time, userID, session string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	u := t.users[userID]
	if u == nil {
		return
	}
	delete(u.sessions, session)
	if len(u.sessions) == 0 && u.leftAt.IsZero() {
		u.leftAt = now
		t.due.add(deadline{at: now.Add(t.opts.Grace), kind: Offline, user: userID})
	}
}

// Clears reports whether state, given to SetState, clears the member's
// state: empty or JSON null.
func Clears(state json.RawMessage) bool { return len(state) == 0 || string(state) == "null" }

// SetState sets a member's state for ttl, or clears it (see Clears). It
// returns StateChanged when the state changed.
func (t *Tracker) SetState(now time.Time, channel, userID string, state json.RawMessage, ttl time.Duration) ([]Event, error) {
	clearing := Clears(state)
	if !clearing {
		if len(state) > t.opts.MaxStateBytes {
			return nil, fmt.Errorf("state is %d bytes, the limit is %d: %w", len(state), t.opts.MaxStateBytes, ErrStateLarge)
		}
		if ttl <= 0 || ttl > t.opts.MaxStateTTL {
			return nil, fmt.Errorf("ttl %s: want more than 0 and at most %s: %w", ttl, t.opts.MaxStateTTL, ErrBadTTL)
		}
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	m := t.channels[channel][userID]
	if m == nil || len(m.sessions) == 0 {
		return nil, fmt.Errorf("user %q in channel %q: %w", userID, channel, ErrNotMember)
	}
	if clearing {
		if m.state == nil {
			return nil, nil
		}
		m.state, m.stateTTL = nil, time.Time{}
		return []Event{{Kind: StateChanged, Channel: channel, Member: m.view(), At: now}}, nil
	}
	changed := string(m.state) != string(state)
	m.state = append(json.RawMessage(nil), state...)
	m.stateTTL = now.Add(ttl)
	t.due.add(deadline{at: m.stateTTL, kind: StateChanged, channel: channel, user: userID})
	if !changed {
		return nil, nil // a refresh: no event, a later expiry
	}
	return []Event{{Kind: StateChanged, Channel: channel, Member: m.view(), At: now}}, nil
}

// Advance fires everything due at now: leaves and offlines whose grace
// ran out, states whose time ran out.
func (t *Tracker) Advance(now time.Time) []Event {
	t.mu.Lock()
	defer t.mu.Unlock()
	var out []Event
	for t.due.Len() > 0 && !t.due[0].at.After(now) {
		d := heap.Pop(&t.due).(deadline)
		switch d.kind {
		case Left:
			m := t.channels[d.channel][d.user]
			if m == nil || len(m.sessions) > 0 || m.leftAt.IsZero() || now.Before(m.leftAt.Add(t.opts.Grace)) {
				continue // came back, or a newer leave is pending
			}
			delete(t.channels[d.channel], d.user)
			if len(t.channels[d.channel]) == 0 {
				delete(t.channels, d.channel)
			}
			v := m.view()
			v.State = nil
			out = append(out, Event{Kind: Left, Channel: d.channel, Member: v, At: m.leftAt})
		case Offline:
			u := t.users[d.user]
			if u == nil || len(u.sessions) > 0 || u.leftAt.IsZero() || now.Before(u.leftAt.Add(t.opts.Grace)) {
				continue
			}
			delete(t.users, d.user)
			out = append(out, Event{Kind: Offline, Member: Member{User: d.user}, At: u.leftAt})
		case StateChanged:
			m := t.channels[d.channel][d.user]
			if m == nil || m.state == nil || now.Before(m.stateTTL) {
				continue // cleared, refreshed, or the member left
			}
			m.state, m.stateTTL = nil, time.Time{}
			out = append(out, Event{Kind: StateChanged, Channel: d.channel, Member: m.view(), At: now})
		}
	}
	return out
}

// Next returns when Advance next has something to do.
func (t *Tracker) Next() (time.Time, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.due.Len() == 0 {
		return time.Time{}, false
	}
	return t.due[0].at, true
}

// Members returns the members of channel sorted by user, members in their
// grace period included.
func (t *Tracker) Members(channel string) []Member {
	t.mu.Lock()
	defer t.mu.Unlock()
	ch := t.channels[channel]
	out := make([]Member, 0, len(ch))
	for _, m := range ch {
		out = append(out, m.view())
	}
	sort.Slice(out, func(i, j int) bool { return out[i].User < out[j].User })
	return out
}

// Stats returns how many members and sessions channel has.
func (t *Tracker) Stats(channel string) (members, sessions int) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, m := range t.channels[channel] {
		members++
		sessions += len(m.sessions)
	}
	return members, sessions
}

// IsMember reports whether userID has a session in channel.
func (t *Tracker) IsMember(channel, userID string) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	m := t.channels[channel][userID]
	return m != nil && len(m.sessions) > 0
}

// User returns whether userID is online and with how many sessions.
func (t *Tracker) User(userID string) (online bool, sessions int) {
	t.mu.Lock()
	defer t.mu.Unlock()
	u := t.users[userID]
	if u == nil {
		return false, 0
	}
	return true, len(u.sessions)
}

func (m *member) view() Member {
	return Member{User: m.user, Attrs: m.attrs, JoinedAt: m.joinedAt, Sessions: len(m.sessions), State: m.state}
}

// deadline is something Advance must look at, at or after at. Deadlines
// are not removed when what they are for changes; Advance checks that
// they still hold (a member that came back, a state refreshed).
type deadline struct {
	at      time.Time
	kind    Kind
	channel string
	user    string
}

// deadlines is a min-heap by time.
type deadlines []deadline

func (d deadlines) Len() int           { return len(d) }
func (d deadlines) Less(i, j int) bool { return d[i].at.Before(d[j].at) }
func (d deadlines) Swap(i, j int)      { d[i], d[j] = d[j], d[i] }
func (d *deadlines) Push(x any)        { *d = append(*d, x.(deadline)) }
func (d *deadlines) Pop() any {
	old := *d
	x := old[len(old)-1]
	*d = old[:len(old)-1]
	return x
}
func (d *deadlines) add(x deadline) { heap.Push(d, x) }
