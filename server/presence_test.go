package server

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"
)

type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *fakeClock { return &fakeClock{t: time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func presenceRules() []RuleConfig {
	return []RuleConfig{
		{Pattern: "chat_room_{id}", Subscribe: []string{"authenticated"}, Publish: []string{"authenticated"},
			Presence: true, JoinLeave: true},
		{Pattern: "team_{id}", Subscribe: []string{"team:{id}"}, Publish: []string{"team:{id}"},
			Presence: true, Status: true},
		{Pattern: "quiet_{id}", Subscribe: []string{"authenticated"}},
	}
}

func userWith(sub string, attrs ...string) Identity {
	id := Identity{User: sub, Attrs: map[string][]string{}}
	for i := 0; i+1 < len(attrs); i += 2 {
		id.Attrs[attrs[i]] = append(id.Attrs[attrs[i]], attrs[i+1])
	}
	return id
}

func openAs(t *testing.T, srv *Server, id Identity, channel string) *Session {
	t.Helper()
	sess, _, err := srv.Transport("test").Open(context.Background(), id, OpenRequest{Channels: []string{channel}})
	if err != nil {
		t.Fatalf("open %s as %s: %v", channel, id.User, err)
	}
	return sess
}

// presenceSeen publishes a marker on channel, waits for it on c, and
// returns the presence events c received before it, as "event:user".
func presenceSeen(t *testing.T, srv *Server, c *collector, channel string) string {
	t.Helper()
	marker := fmt.Sprintf(`"marker-%d"`, time.Now().UnixNano())
	if _, err := srv.Publish(context.Background(), system, PublishRequest{Channel: channel, Data: json.RawMessage(marker)}); err != nil {
		t.Fatal(err)
	}
	items := c.waitFor(t, "the marker", func(it []Item) bool {
		for _, x := range it {
			if x.Msg != nil && strings.Contains(string(x.Msg.Raw), marker) {
				return true
			}
		}
		return false
	})
	c.mu.Lock()
	c.items = nil // the next call sees only what comes after
	c.mu.Unlock()
	var out []string
	for _, it := range items {
		if it.Kind != KindPresence {
			continue
		}
		var env struct {
			Event string `json:"event"`
			Data  struct {
				User  string            `json:"user"`
				Attrs map[string]string `json:"attrs"`
				State json.RawMessage   `json:"state"`
			} `json:"data"`
		}
		if err := json.Unmarshal(it.Msg.Raw, &env); err != nil {
			t.Fatal(err)
		}
		s := env.Event + ":" + env.Data.User
		if env.Data.Attrs["name"] != "" {
			s += "(" + env.Data.Attrs["name"] + ")"
		}
		if env.Data.State != nil {
			s += "=" + string(env.Data.State)
		}
		out = append(out, s)
	}
	return strings.Join(out, " ")
}

func TestJoinAndLeaveAreDebouncedAcrossSessions(t *testing.T) {
	t.Parallel()
	clk := newClock()
	srv, _ := newTestServer(t, Config{Now: clk.Now, Rules: presenceRules(), Presence: PresenceConfig{Attrs: []string{"name"}}})
	watcher := collect(t, openAs(t, srv, userWith("1"), "chat_room_7"))
	ada := userWith("17", "name", "Ada", "secret", "x")

	tab1 := openAs(t, srv, ada, "chat_room_7")
	if got := presenceSeen(t, srv, watcher, "chat_room_7"); got != "herald.join:17(Ada)" {
		t.Fatalf("after the first tab: %q", got)
	}
	tab2 := openAs(t, srv, ada, "chat_room_7")
	tab1.Close(ReasonClientGone)
	clk.Advance(10 * time.Second)
	srv.presence.tick()
	if got := presenceSeen(t, srv, watcher, "chat_room_7"); got != "" {
		t.Fatalf("a second tab and a closed first one: %q", got)
	}
	// A quick reconnect: no leave/join pair.
	tab2.Close(ReasonClientGone)
	clk.Advance(2 * time.Second)
	tab3 := openAs(t, srv, ada, "chat_room_7")
	clk.Advance(10 * time.Second)
	srv.presence.tick()
	if got := presenceSeen(t, srv, watcher, "chat_room_7"); got != "" {
		t.Fatalf("quick reconnect flapped: %q", got)
	}
	tab3.Close(ReasonClientGone)
	clk.Advance(4 * time.Second)
	srv.presence.tick()
	if got := presenceSeen(t, srv, watcher, "chat_room_7"); got != "" {
		t.Fatalf("left before the grace ran out: %q", got)
	}
	clk.Advance(2 * time.Second)
	srv.presence.tick()
	if got := presenceSeen(t, srv, watcher, "chat_room_7"); got != "herald.leave:17(Ada)" {
		t.Fatalf("after the grace: %q", got)
	}
}

func TestTypingExpiresByItselfAndSignalsAreBounded(t *testing.T) {
	t.Parallel()
	clk := newClock()
	srv, _ := newTestServer(t, Config{Now: clk.Now, Rules: presenceRules()})
	watcher := collect(t, openAs(t, srv, userWith("1"), "chat_room_7"))
	ada := userWith("17")
	sess := openAs(t, srv, ada, "chat_room_7")
	defer sess.Close(ReasonClientGone)
	presenceSeen(t, srv, watcher, "chat_room_7") // the join

	ttl := 3.0
	if err := srv.Signal(ada, SignalRequest{Channel: "chat_room_7", State: json.RawMessage(`{"typing":true}`), TTL: &ttl}); err != nil {
		t.Fatal(err)
	}
	if got := presenceSeen(t, srv, watcher, "chat_room_7"); got != `herald.state:17={"typing":true}` {
		t.Fatalf("typing: %q", got)
	}
	clk.Advance(3 * time.Second)
	srv.presence.tick()
	if got := presenceSeen(t, srv, watcher, "chat_room_7"); got != "herald.state:17=null" {
		t.Fatalf("typing did not clear itself: %q", got)
	}

	// A key-repeat flood is cut at the burst (5), with a retry time.
	var limited error
	for i := 0; i < 10 && limited == nil; i++ {
		limited = srv.Signal(ada, SignalRequest{Channel: "chat_room_7", State: json.RawMessage(`{"typing":true}`)})
	}
	if e := AsError(limited); e.Code != 429 || e.RetryAfter <= 0 {
		t.Fatalf("flood: %v", limited)
	}
	for _, tc := range []struct {
		id      Identity
		channel string
		code    int
	}{
		{userWith("18"), "chat_room_7", 403}, // not a member
		{system, "chat_room_7", 403},         // the API key has no membership
		{ada, "bad channel", 400},
	} {
		if err := srv.Signal(tc.id, SignalRequest{Channel: tc.channel, State: json.RawMessage(`1`)}); AsError(err).Code != tc.code {
			t.Errorf("signal as %q on %q: %v, want %d", tc.id.User, tc.channel, err, tc.code)
		}
	}
}

func TestPresenceQueriesAndOnlineStatus(t *testing.T) {
	t.Parallel()
	clk := newClock()
	srv, st := newTestServer(t, Config{Now: clk.Now, Rules: presenceRules(), Presence: PresenceConfig{Attrs: []string{"name"}}})
	ctx := context.Background()
	blue := userWith("5", "team", "blue", "name", "Bo")
	watcher := collect(t, openAs(t, srv, userWith("6", "team", "blue"), "team_blue"))
	presenceSeen(t, srv, watcher, "team_blue")
	phone := openAs(t, srv, blue, "team_blue")
	laptop := openAs(t, srv, blue, "team_blue")
	if got := presenceSeen(t, srv, watcher, "team_blue"); got != "herald.online:5" {
		t.Fatalf("status channel on connect: %q", got)
	}

	info, err := srv.Presence(blue, "team_blue", false)
	if err != nil || info.Count != 2 || info.Sessions != 3 || info.Members[0].User != "5" || info.Members[0].Sessions != 2 ||
		info.Members[0].Attrs["name"] != "Bo" || info.Members[1].User != "6" {
		t.Fatalf("members %+v %v", info, err)
	}
	if stats, _ := srv.Presence(blue, "team_blue", true); stats.Members != nil || stats.Count != 2 {
		t.Fatalf("stats %+v", stats)
	}
	if _, err := srv.Presence(userWith("9", "team", "red"), "team_blue", false); AsError(err).Code != 403 {
		t.Fatalf("presence of another team: %v", err)
	}
	if _, err := srv.Presence(system, "quiet_1", false); AsError(err).Code != 400 {
		t.Fatalf("presence off: %v", err)
	}

	st5, err := srv.User(ctx, system, "5")
	if err != nil || !st5.Online || st5.Sessions != 2 || st5.LastSeen == nil {
		t.Fatalf("online user %+v %v", st5, err)
	}
	if _, err := srv.User(ctx, userWith("6"), "5"); AsError(err).Code != 403 {
		t.Fatalf("another user's status: %v", err)
	}
	phone.Close(ReasonClientGone)
	leftAt := clk.Now()
	laptop.Close(ReasonClientGone)
	clk.Advance(6 * time.Second)
	srv.presence.tick()
	if got := presenceSeen(t, srv, watcher, "team_blue"); got != "herald.offline:5" {
		t.Fatalf("status channel on disconnect: %q", got)
	}
	st5, err = srv.User(ctx, userWith("5"), "5")
	if err != nil || st5.Online || st5.LastSeen == nil || *st5.LastSeen != leftAt.Format(timeFormat) {
		t.Fatalf("offline user %+v %v (left at %s)", st5, err, leftAt)
	}
	if _, ok, err := st.GetState(ctx, "lastseen/5"); !ok || err != nil {
		t.Fatalf("last-seen not stored: %v %v", ok, err)
	}
}

func TestOfflineReachesEveryStatusChannelOfTheUser(t *testing.T) {
	t.Parallel()
	clk := newClock()
	srv, _ := newTestServer(t, Config{Now: clk.Now, Rules: presenceRules()})
	var teams []string
	user := userWith("5")
	for i := 0; i < 8; i++ {
		team := fmt.Sprint(i)
		teams = append(teams, "team_"+team)
		user.Attrs["team"] = append(user.Attrs["team"], team)
	}
	first := collect(t, openAs(t, srv, userWith("6", "team", "0"), "team_0"))
	last := collect(t, openAs(t, srv, userWith("7", "team", "7"), "team_7"))
	sess, _, err := srv.Transport("test").Open(context.Background(), user, OpenRequest{Channels: teams})
	if err != nil {
		t.Fatal(err)
	}
	presenceSeen(t, srv, first, "team_0")
	presenceSeen(t, srv, last, "team_7")
	sess.Close(ReasonClientGone)
	clk.Advance(6 * time.Second)
	srv.presence.tick()
	for _, c := range []struct {
		col *collector
		ch  string
	}{{first, "team_0"}, {last, "team_7"}} {
		if got := presenceSeen(t, srv, c.col, c.ch); got != "herald.offline:5" {
			t.Errorf("%s heard %q, want herald.offline:5", c.ch, got)
		}
	}
}

func TestSignalOnAChannelWithoutPresenceSaysSo(t *testing.T) {
	t.Parallel()
	srv, _ := newTestServer(t, Config{Rules: presenceRules()})
	ada := userWith("17")
	sess := openAs(t, srv, ada, "quiet_1") // subscribed, but the rule has no presence
	defer sess.Close(ReasonClientGone)
	const want = `presence is not enabled on channel "quiet_1" (its rule needs presence: true)`
	err := srv.Signal(ada, SignalRequest{Channel: "quiet_1", State: json.RawMessage(`{"typing":true}`)})
	if e := AsError(err); e.Code != 400 || e.Message != want {
		t.Fatalf("signal: %v, want 400 %q", err, want)
	}
	if _, err := srv.Presence(ada, "quiet_1", false); AsError(err).Message != want {
		t.Fatalf("presence query: %v, want the same message", err)
	}
	// Who may not subscribe learns nothing of the rule.
	err = srv.Signal(ada, SignalRequest{Channel: "no_rule", State: json.RawMessage(`1`)})
	if e := AsError(err); e.Code != 403 || e.Message != `not allowed to subscribe to channel "no_rule"` {
		t.Fatalf("signal on a channel without a rule: %v", err)
	}
}

func TestClearingStateIsNeverRateLimited(t *testing.T) {
	t.Parallel()
	clk := newClock()
	srv, _ := newTestServer(t, Config{Now: clk.Now, Rules: presenceRules()})
	watcher := collect(t, openAs(t, srv, userWith("1"), "chat_room_7"))
	ada := userWith("17")
	sess := openAs(t, srv, ada, "chat_room_7")
	defer sess.Close(ReasonClientGone)
	presenceSeen(t, srv, watcher, "chat_room_7") // the join
	signal := func(state string) error {
		req := SignalRequest{Channel: "chat_room_7"}
		if state != "" {
			req.State = json.RawMessage(state)
		}
		return srv.Signal(ada, req)
	}

	// Clears with no state set: accepted, nothing announced, no token taken.
	for i := 0; i < 10; i++ {
		for _, clear := range []string{"null", ""} {
			if err := signal(clear); err != nil {
				t.Fatalf("clear #%d (%q) with no state: %v", i, clear, err)
			}
		}
	}
	if got := presenceSeen(t, srv, watcher, "chat_room_7"); got != "" {
		t.Fatalf("clearing no state announced %q", got)
	}
	// The whole burst of sets is still there.
	for i := 0; i < 5; i++ {
		if err := signal(fmt.Sprintf(`{"typing":%d}`, i)); err != nil {
			t.Fatalf("set #%d: %v", i, err)
		}
	}
	if e := AsError(signal(`{"typing":true}`)); e.Code != 429 {
		t.Fatalf("sixth set: %v, want 429", e)
	}
	// Past the limit, a clear still goes through, and is heard.
	if err := signal("null"); err != nil {
		t.Fatalf("clear past the limit: %v", err)
	}
	if got := presenceSeen(t, srv, watcher, "chat_room_7"); !strings.HasSuffix(got, "herald.state:17=null") {
		t.Fatalf("after the clear: %q", got)
	}
	if err := signal(""); err != nil {
		t.Fatalf("a clear without state past the limit: %v", err)
	}
}
