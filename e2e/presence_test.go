package e2e

// Presence end to end (DESIGN §6): who is in a chat room, joins
// and leaves debounced by a grace period, online status, a typing state
// that clears itself, and last-seen surviving a crash. The scenario runs
// once over every transport with the conformance drivers; what a client
// sees is asserted exactly, and "nothing happened" is proved by a marker
// message published after the moment something would have happened.

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"net/http"
	"net/url"
	"reflect"
	"strings"
	"testing"
	"time"
)

// presenceGrace is presence.grace in presenceYAML: what a reconnect must
// beat for the scenario to expect no leave/join pair, so several times
// what a reconnect takes on a busy machine.
const presenceGrace = 3 * time.Second

// presenceYAML: chat rooms open to any user, with presence, join/leave
// and status events; the grace above; a poll session that stops polling
// is gone 2 s after its (1 s) poll timeout (a client's next poll, which
// follows an answer at once, must come within those 2 s).
const presenceYAML = `channels:
  - pattern: "chat_room_{id}"
    subscribe: ["authenticated"]
    publish: ["authenticated"]
    presence: true
    join_leave: true
    status: true
presence:
  attrs: [name]
  grace: 3s
poll:
  grace: 2s
`

// presenceDrivers are the drivers of the presence tests. Long polls ask
// for 1 s, so a session that stops polling ends about a second later.
var presenceDrivers = []driver{sseDriver{}, wsDriver{}, pollDriver{timeout: 1}}

// memberData is the data of herald.join, herald.leave and herald.state.
type memberData struct {
	User     string            `json:"user"`
	Attrs    map[string]string `json:"attrs"`
	JoinedAt string            `json:"joined_at"`
	Sessions int               `json:"sessions"`
}

// statusData is the data of herald.online and herald.offline.
type statusData struct {
	User string `json:"user"`
	At   string `json:"at"`
}

// presenceInfo is the answer of GET /api/presence.
type presenceInfo struct {
	Channel string `json:"channel"`
	Members []struct {
		memberData
		State json.RawMessage `json:"state"`
	} `json:"members"`
	Count    int `json:"count"`
	Sessions int `json:"sessions"`
}

// sessionsByUser is a presence answer as user → sessions.
func (p presenceInfo) sessionsByUser() map[string]int {
	m := make(map[string]int, len(p.Members))
	for _, x := range p.Members {
		m[x.User] = x.Sessions
	}
	return m
}

func (p presenceInfo) member(user string) (memberData, json.RawMessage, bool) {
	for _, x := range p.Members {
		if x.User == user {
			return x.memberData, x.State, true
		}
	}
	return memberData{}, nil, false
}

// getPresence asks GET /api/presence as tok.
func getPresence(t testing.TB, base, tok, channel string, stats bool) presenceInfo {
	t.Helper()
	q := url.Values{"channel": {channel}}
	if stats {
		q.Set("stats", "true")
	}
	resp, raw := permReq(t, http.MethodGet, base+"/api/presence?"+q.Encode(), tok, nil)
	if resp.StatusCode != 200 {
		t.Fatalf("GET /api/presence?%s: %d %s", q.Encode(), resp.StatusCode, raw)
	}
	var info presenceInfo
	if err := json.Unmarshal(raw, &info); err != nil {
		t.Fatalf("GET /api/presence?%s answered %s: %v", q.Encode(), raw, err)
	}
	if info.Channel != channel {
		t.Fatalf("GET /api/presence?%s answered %s: channel", q.Encode(), raw)
	}
	return info
}

// waitPresence polls GET /api/presence until its members and their
// sessions are exactly want (a member in its grace period has 0), and
// returns that answer.
func waitPresence(t testing.TB, base, tok, channel string, want map[string]int) presenceInfo {
	t.Helper()
	info, _ := waitPresenceSince(t, base, tok, channel, want)
	return info
}

// waitPresenceSince is waitPresence that also returns when the last
// request whose answer was not yet want was sent (the zero time if the
// first answer was want): the server's presence changed to want after
// that moment.
func waitPresenceSince(t testing.TB, base, tok, channel string, want map[string]int) (presenceInfo, time.Time) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	var before time.Time
	for delay := 2 * time.Millisecond; ; delay = min(delay*2, 25*time.Millisecond) {
		sent := time.Now()
		info := getPresence(t, base, tok, channel, false)
		if maps.Equal(info.sessionsByUser(), want) {
			return info, before
		}
		before = sent
		if time.Now().After(deadline) {
			t.Fatalf("presence of %s is %v, still not %v after 15s", channel, info.sessionsByUser(), want)
		}
		time.Sleep(delay)
	}
}

// openAs opens a driver connection on channel, failing the test if it
// is refused.
func openAs(t *testing.T, d driver, base, tok, channel string) conn {
	t.Helper()
	c, err := d.open(t, base, tok, []string{channel}, nil)
	if err != nil {
		t.Fatalf("%s: open %s: %v", d.name(), channel, err)
	}
	return c
}

// publishMarker publishes {"marker":name} on channel with the API key.
func publishMarker(t testing.TB, base, channel, name string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if _, _, err := publish(ctx, base, channel, fmt.Sprintf(`{"marker":%q}`, name), ""); err != nil {
		t.Fatalf("publish marker %s: %v", name, err)
	}
}

func isMarker(e envelope, name string) bool {
	var d struct {
		Marker string `json:"marker"`
	}
	return e.Offset > 0 && json.Unmarshal(e.Data, &d) == nil && d.Marker == name
}

// untilMarker receives from c until the marker name and returns what
// came before it.
func untilMarker(t testing.TB, who string, c conn, name string) []envelope {
	t.Helper()
	var got []envelope
	for {
		e, err := c.recv(20 * time.Second)
		if err != nil {
			t.Fatalf("%s: waiting for marker %s (after %s): %v", who, name, describe(got), err)
		}
		if isMarker(e, name) {
			return got
		}
		got = append(got, e)
	}
}

// nextPresence receives c's next message, which must come within timeout.
func nextPresence(t testing.TB, who string, c conn, timeout time.Duration) envelope {
	t.Helper()
	e, err := c.recv(timeout)
	if err != nil {
		t.Fatalf("%s: next event: %v", who, err)
	}
	return e
}

// describe lists envelopes as event(data) for failure messages.
func describe(envs []envelope) string {
	parts := make([]string, len(envs))
	for i, e := range envs {
		parts[i] = fmt.Sprintf("%s%s", e.Event, e.Data)
	}
	return "[" + strings.Join(parts, ", ") + "]"
}

// checkPresenceEnvelope checks what every presence event shares: the
// channel, the event name, no offset and no id (ephemeral).
func checkPresenceEnvelope(t testing.TB, e envelope, channel, event string) {
	t.Helper()
	if e.Event != event || e.Channel != channel || e.Offset != 0 || e.ID != "" {
		t.Fatalf("got %s on %s (offset %d, id %q), want %s on %s with no offset and no id",
			e.Event, e.Channel, e.Offset, e.ID, event, channel)
	}
}

// checkMember checks a herald.join / herald.leave: the member user with
// attrs {name: name}, a joined_at, and no state.
func checkMember(t testing.TB, e envelope, channel, event, user, name string) memberData {
	t.Helper()
	checkPresenceEnvelope(t, e, channel, event)
	var m memberData
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(e.Data, &m); err != nil || json.Unmarshal(e.Data, &fields) != nil {
		t.Fatalf("%s data %s: %v", event, e.Data, err)
	}
	if m.User != user || !maps.Equal(m.Attrs, map[string]string{"name": name}) {
		t.Fatalf("%s data %s: want user %q with attrs {name: %q}", event, e.Data, user, name)
	}
	if _, err := time.Parse(time.RFC3339Nano, m.JoinedAt); err != nil {
		t.Fatalf("%s data %s: joined_at: %v", event, e.Data, err)
	}
	if _, ok := fields["state"]; ok {
		t.Fatalf("%s data %s: has a state", event, e.Data)
	}
	return m
}

// checkStatus checks a herald.online / herald.offline of user.
func checkStatus(t testing.TB, e envelope, channel, event, user string) time.Time {
	t.Helper()
	checkPresenceEnvelope(t, e, channel, event)
	var s statusData
	if err := json.Unmarshal(e.Data, &s); err != nil || s.User != user {
		t.Fatalf("%s data %s: want user %q (%v)", event, e.Data, user, err)
	}
	at, err := time.Parse(time.RFC3339Nano, s.At)
	if err != nil {
		t.Fatalf("%s data %s: at: %v", event, e.Data, err)
	}
	return at
}

// checkState checks a herald.state of user whose state is want (JSON;
// "null" when cleared or expired).
func checkState(t testing.TB, e envelope, channel, user, want string) {
	t.Helper()
	checkPresenceEnvelope(t, e, channel, "herald.state")
	var d struct {
		User  string          `json:"user"`
		State json.RawMessage `json:"state"`
	}
	if err := json.Unmarshal(e.Data, &d); err != nil || d.User != user {
		t.Fatalf("herald.state data %s: want user %q (%v)", e.Data, user, err)
	}
	var got, exp any
	if d.State == nil || json.Unmarshal(d.State, &got) != nil || json.Unmarshal([]byte(want), &exp) != nil || !reflect.DeepEqual(got, exp) {
		t.Fatalf("herald.state data %s: want state %s", e.Data, want)
	}
}

// signal sets tok's state on channel for ttl seconds: through the
// WebSocket signal op when c is a WebSocket, else POST /api/signal.
func signal(t testing.TB, base, tok string, c conn, channel, state string, ttl float64) {
	t.Helper()
	if ws, ok := c.(*wsConn); ok {
		r, err := ws.call(map[string]any{"op": "signal", "channel": channel, "state": json.RawMessage(state), "ttl": ttl})
		if err != nil || !r.OK {
			t.Fatalf("signal op: %s %v", r.raw, err)
		}
		return
	}
	resp, raw := permReq(t, http.MethodPost, base+"/api/signal", tok,
		map[string]any{"channel": channel, "state": json.RawMessage(state), "ttl": ttl})
	if resp.StatusCode != 200 {
		t.Fatalf("POST /api/signal: %d %s", resp.StatusCode, raw)
	}
}

// TestPresenceOverEveryTransport: in a chat room, Bo (18) and Ada (17,
// on two sessions) over one transport. Bo hears Ada join once, however
// many sessions she opens; the presence API counts her once with two
// sessions; her closing one session, and dropping her last one and
// coming back within the grace, are not announced; her typing state
// reaches Bo and clears itself after its ttl; when she leaves for good
// Bo hears herald.leave and herald.offline once the grace has run out.
func TestPresenceOverEveryTransport(t *testing.T) {
	toks := permTokens(t, map[string][]string{
		"ada": {"--sub", "17", "--attr", "name=Ada"},
		"bo":  {"--sub", "18", "--attr", "name=Bo"},
	})
	for _, d := range presenceDrivers {
		t.Run(d.name(), func(t *testing.T) {
			t.Parallel()
			srv := startServer(t, "--config", writeConfig(t, presenceYAML))
			presenceScenario(t, d, srv.url(), toks["ada"], toks["bo"], "chat_room_"+d.name())
		})
	}
}

func presenceScenario(t *testing.T, d driver, base, ada, bo, room string) {
	// Bo first, then Ada twice: Bo hears one herald.join (and, the room
	// having status, one herald.online) for Ada, with her name; neither
	// of Ada's sessions hears anything (no join of her own).
	bob := openAs(t, d, base, bo, room)
	waitPresence(t, base, bo, room, map[string]int{"18": 1})
	ada1 := openAs(t, d, base, ada, room)
	waitPresence(t, base, bo, room, map[string]int{"17": 1, "18": 1})
	ada2 := openAs(t, d, base, ada, room)
	info := waitPresence(t, base, bo, room, map[string]int{"17": 2, "18": 1})

	publishMarker(t, base, room, "both-in")
	got := untilMarker(t, "Bo", bob, "both-in")
	if len(got) != 2 {
		t.Fatalf("Bo got %s before the marker, want one herald.join and one herald.online for Ada", describe(got))
	}
	joined := checkMember(t, got[0], room, "herald.join", "17", "Ada")
	checkStatus(t, got[1], room, "herald.online", "17")
	for who, c := range map[string]conn{"Ada's first session": ada1, "Ada's second session": ada2} {
		if got := untilMarker(t, who, c, "both-in"); len(got) != 0 {
			t.Fatalf("%s got %s before the marker, want nothing", who, describe(got))
		}
	}

	// The presence API: both users, Ada once with her two sessions.
	if info.Count != 2 || info.Sessions != 3 || len(info.Members) != 2 {
		t.Fatalf("presence %+v: want 2 members with 3 sessions", info)
	}
	adaM, adaState, _ := info.member("17")
	boM, _, _ := info.member("18")
	if info.Members[0].User != "17" || adaM.Sessions != 2 || !maps.Equal(adaM.Attrs, map[string]string{"name": "Ada"}) ||
		boM.Sessions != 1 || !maps.Equal(boM.Attrs, map[string]string{"name": "Bo"}) {
		t.Fatalf("presence members %+v: want 17 (Ada, 2 sessions) then 18 (Bo, 1 session)", info.Members)
	}
	if adaM.JoinedAt != joined.JoinedAt {
		t.Fatalf("presence says Ada joined at %s, herald.join said %s", adaM.JoinedAt, joined.JoinedAt)
	}
	if len(adaState) != 0 && string(adaState) != "null" {
		t.Fatalf("Ada has state %s before any signal", adaState)
	}
	if s := getPresence(t, base, bo, room, true); s.Count != 2 || s.Sessions != 3 || s.Members != nil {
		t.Fatalf("presence stats %+v: want count 2, sessions 3 and no members", s)
	}

	// Ada closes one session: she is still in, with one.
	ada2.close()
	waitPresence(t, base, bo, room, map[string]int{"17": 1, "18": 1})

	// Ada drops her last session; the server sees it (she stays listed,
	// with no session, during the grace) and she comes back within it.
	// The server saw her go after the last answer that still had her
	// session was asked for, and back before the answer that has it
	// again: from one to the other is longer than she was away.
	ada1.drop()
	_, stillIn := waitPresenceSince(t, base, bo, room, map[string]int{"17": 0, "18": 1})
	if stillIn.IsZero() {
		stillIn = time.Now() // gone at the first look: the drop was just now
	}
	ada3 := openAs(t, d, base, ada, room)
	info = waitPresence(t, base, bo, room, map[string]int{"17": 1, "18": 1})
	if away := time.Since(stillIn); away >= presenceGrace {
		t.Fatalf("Ada's reconnect took up to %s, not within the %s grace: the scenario cannot tell whether a leave/join pair is due", away, presenceGrace)
	}
	if m, _, _ := info.member("17"); m.JoinedAt != joined.JoinedAt {
		t.Fatalf("after a quick reconnect Ada joined at %s, want still %s", m.JoinedAt, joined.JoinedAt)
	}

	// Ada types, with a ttl of the grace and no refresh: Bo hears the
	// state, then, once the ttl has run out, that it is gone. The expiry
	// is due after the grace of Ada's drop (the signal came later), and
	// the server fires both from one clock in order: once Bo has the
	// expiry, a leave held back by that grace would be in his stream
	// before it.
	signalAt := time.Now()
	signal(t, base, ada, ada3, room, `{"typing":true}`, presenceGrace.Seconds())
	e := nextPresence(t, "Bo", bob, 20*time.Second)
	if e.Event != "herald.state" {
		t.Fatalf("after Ada closed one session, dropped the other and came back within the grace, and typed, Bo got %s, want herald.state (no leave/join pair)", describe([]envelope{e}))
	}
	checkState(t, e, room, "17", `{"typing":true}`)
	e = nextPresence(t, "Bo", bob, 30*time.Second)
	expired := time.Since(signalAt)
	checkState(t, e, room, "17", "null")
	if expired < presenceGrace-20*time.Millisecond {
		t.Fatalf("Ada's typing (ttl %s) expired %s after the signal, before its ttl", presenceGrace, expired)
	}
	publishMarker(t, base, room, "typed")
	if got := untilMarker(t, "Bo", bob, "typed"); len(got) != 0 {
		t.Fatalf("Bo got %s after the typing expired, before the marker: want nothing (no leave/join pair)", describe(got))
	}
	if m, st, _ := getPresence(t, base, bo, room, false).member("17"); m.JoinedAt != joined.JoinedAt || (len(st) != 0 && string(st) != "null") {
		t.Fatalf("after the grace and the expiry, Ada is %+v with state %s: want joined at %s, no state", m, st, joined.JoinedAt)
	}

	// Ada leaves for good: once the grace has run out Bo hears her leave
	// and, as she has no session anywhere, that she is offline.
	left := time.Now()
	ada3.close()
	e = nextPresence(t, "Bo", bob, 30*time.Second)
	after := time.Since(left)
	checkMember(t, e, room, "herald.leave", "17", "Ada")
	if after < presenceGrace {
		t.Fatalf("herald.leave came %s after Ada left, before the %s grace", after, presenceGrace)
	}
	e = nextPresence(t, "Bo", bob, 20*time.Second)
	checkStatus(t, e, room, "herald.offline", "17")
	waitPresence(t, base, bo, room, map[string]int{"18": 1})
	publishMarker(t, base, room, "ada-gone")
	if got := untilMarker(t, "Bo", bob, "ada-gone"); len(got) != 0 {
		t.Fatalf("Bo got %s after Ada's leave and offline, want nothing more", describe(got))
	}
	t.Logf("%s: herald.leave %s after Ada left (grace %s); typing expired %s after the signal", d.name(), after.Round(time.Millisecond), presenceGrace, expired.Round(time.Millisecond))
}

// userStatus is the answer of GET /api/users/{id}.
type userStatus struct {
	User     string  `json:"user"`
	Online   bool    `json:"online"`
	Sessions int     `json:"sessions"`
	LastSeen *string `json:"last_seen"`
}

func getUser(t testing.TB, base, tok, user string) (userStatus, string) {
	t.Helper()
	resp, raw := permReq(t, http.MethodGet, base+"/api/users/"+user, tok, nil)
	if resp.StatusCode != 200 {
		t.Fatalf("GET /api/users/%s: %d %s", user, resp.StatusCode, raw)
	}
	var st userStatus
	if err := json.Unmarshal(raw, &st); err != nil || st.User != user {
		t.Fatalf("GET /api/users/%s answered %s (%v)", user, raw, err)
	}
	return st, string(raw)
}

// waitUser polls GET /api/users/{id} with the API key until its online
// flag is online.
func waitUser(t testing.TB, base, user string, online bool) (userStatus, string) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for delay := 2 * time.Millisecond; ; delay = min(delay*2, 25*time.Millisecond) {
		st, raw := getUser(t, base, apiKey, user)
		if st.Online == online {
			return st, raw
		}
		if time.Now().After(deadline) {
			t.Fatalf("user %s: %s, still not online=%v after 15s", user, raw, online)
		}
		time.Sleep(delay)
	}
}

// TestLastSeenSurvivesRestart: a user who connected and left is offline
// with the time they left as last_seen, and stays so across a SIGKILL and
// a restart; while connected they are online with their sessions.
func TestLastSeenSurvivesRestart(t *testing.T) {
	srv := startServer(t, "--config", writeConfig(t, presenceYAML))
	toks := permTokens(t, map[string][]string{"cy": {"--sub", "21"}, "other": {"--sub", "22"}})
	const room = "chat_room_lastseen"

	// Never seen: offline, no last_seen.
	if st, raw := getUser(t, srv.url(), apiKey, "21"); st.Online || st.Sessions != 0 || st.LastSeen != nil {
		t.Fatalf("a user never seen: %s, want offline with no last_seen", raw)
	}

	// Connected twice: online with two sessions, for the API key and for
	// the user; not for another user.
	c1 := openAs(t, sseDriver{}, srv.url(), toks["cy"], room)
	c2 := openAs(t, wsDriver{}, srv.url(), toks["cy"], room)
	waitPresence(t, srv.url(), apiKey, room, map[string]int{"21": 2})
	for _, tok := range []string{apiKey, toks["cy"]} {
		if st, raw := getUser(t, srv.url(), tok, "21"); !st.Online || st.Sessions != 2 || st.LastSeen == nil {
			t.Fatalf("while connected twice: %s, want online with 2 sessions and a last_seen", raw)
		}
	}
	if resp, raw := permReq(t, http.MethodGet, srv.url()+"/api/users/21", toks["other"], nil); resp.StatusCode != 403 {
		t.Fatalf("user 22 asking for user 21: %d %s, want 403", resp.StatusCode, raw)
	}

	// Leaves: offline once the grace has run out, last seen when it left.
	c1.close()
	before := time.Now()
	c2.close()
	st, raw := waitUser(t, srv.url(), "21", false)
	offlineSeen := time.Now()
	gone := offlineSeen.Sub(before)
	if st.Sessions != 0 || st.LastSeen == nil {
		t.Fatalf("after leaving: %s, want offline with no session and a last_seen", raw)
	}
	if gone < presenceGrace {
		t.Fatalf("offline %s after leaving, before the %s grace", gone, presenceGrace)
	}
	seen, err := time.Parse(time.RFC3339Nano, *st.LastSeen)
	if err != nil {
		t.Fatalf("last_seen %q: %v", *st.LastSeen, err)
	}
	// The user went offline a grace after last_seen, and this test saw
	// it after that: last_seen is at least the grace before that moment
	// (when the last session left, not when the grace ran out).
	if seen.Before(before.Add(-time.Second)) || seen.After(offlineSeen.Add(-presenceGrace+10*time.Millisecond)) {
		t.Fatalf("last_seen %s, want when the last session left (after %s, and at least the %s grace before the user was seen offline at %s), not when the grace ran out",
			seen.Format(time.RFC3339Nano), before.Format(time.RFC3339Nano), presenceGrace, offlineSeen.Format(time.RFC3339Nano))
	}

	// SIGKILL and restart: the same answer.
	srv.kill()
	srv.restart()
	if _, raw2 := getUser(t, srv.url(), apiKey, "21"); raw2 != raw {
		t.Fatalf("after a SIGKILL and a restart: %s, want %s", raw2, raw)
	}

	// Back: online again, with one session.
	openAs(t, pollDriver{timeout: 1}, srv.url(), toks["cy"], room)
	if st, raw := waitUser(t, srv.url(), "21", true); st.Sessions != 1 || st.LastSeen == nil {
		t.Fatalf("connected again: %s, want online with 1 session and a last_seen", raw)
	}
}
