package server

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/heraldrt/herald/store"
)

func intp(n int) *int { return &n }

// seedRules are the permission sets of the reference scenarios: private
// notifications, team channels by attribute, public and admin channels,
// chat rooms opened by grants, and an open announcements channel.
func seedRules() []RuleConfig {
	return []RuleConfig{
		{Pattern: "user_{user_id}_*", Subscribe: []string{"user:{user_id}", "admin"}, Publish: []string{"system", "admin", "user:{user_id}"}},
		{Pattern: "team_{team_id}_*", Subscribe: []string{"team:{team_id}", "admin"}, Publish: []string{"team_member:{team_id}", "admin"}, Presence: true},
		{Pattern: "public_*", Subscribe: []string{"authenticated"}, Publish: []string{"admin", "moderator"}},
		{Pattern: "admin_*", Subscribe: []string{"admin"}, Publish: []string{"admin"}},
		{Pattern: "chat_room_{room_id}", Subscribe: []string{"grant"}, Publish: []string{"grant"}, Presence: true, JoinLeave: true,
			History: &RetentionConfig{Size: intp(500), TTL: 72 * time.Hour}, RateLimit: &RateLimitConfig{Limit: 60, Window: time.Minute},
			Batch: &BatchConfig{Size: 10, Timeout: 100 * time.Millisecond}, MaxSubscribers: 100},
		{Pattern: "announcements", Subscribe: []string{"everyone"}, Publish: []string{"admin"}, HistoryAccess: []string{"authenticated"}},
	}
}

func user(sub string, roles ...string) Identity { return Identity{User: sub, Roles: roles} }

func withAttrs(id Identity, kv ...string) Identity {
	id.Attrs = map[string][]string{}
	for i := 0; i+1 < len(kv); i += 2 {
		id.Attrs[kv[i]] = append(id.Attrs[kv[i]], kv[i+1])
	}
	return id
}

func TestSeedPermissionSets(t *testing.T) {
	t.Parallel()
	srv, _ := newTestServer(t, Config{Rules: seedRules()})
	ctx := context.Background()
	if err := srv.grants.store(ctx, "21", "chat_room_9", allActions); err != nil {
		t.Fatal(err)
	}
	if err := srv.grants.store(ctx, "22", "chat_room_9", 1<<ActionSubscribe); err != nil {
		t.Fatal(err)
	}
	anon := Identity{Anonymous: true}
	claims := user("23")
	claims.Channels = []string{"chat_room_4*"}
	cases := []struct {
		who     string
		id      Identity
		action  Action
		channel string
		want    int // 0 allowed, else the status
	}{
		{"owner reads own notifications", user("17"), ActionSubscribe, "user_17_notifications", 0},
		{"other user reads them", user("18"), ActionSubscribe, "user_17_notifications", 403},
		{"anonymous reads them", anon, ActionSubscribe, "user_17_notifications", 401},
		{"admin reads them", user("1", "admin"), ActionSubscribe, "user_17_notifications", 0},
		{"system publishes", system, ActionPublish, "user_17_notifications", 0},
		{"owner publishes", user("17"), ActionPublish, "user_17_notifications", 0},
		{"other user publishes", user("18"), ActionPublish, "user_17_notifications", 403},
		{"history defaults to subscribe", user("17"), ActionHistory, "user_17_notifications", 0},
		{"history of others", user("18"), ActionHistory, "user_17_notifications", 403},
		{"capture stops at the next literal", user("17"), ActionSubscribe, "user_17_x_y", 0},
		{"capture is not a prefix", user("1"), ActionSubscribe, "user_17_notifications", 403},

		{"team member reads", withAttrs(user("5"), "team", "3"), ActionSubscribe, "team_3_updates", 0},
		{"other team reads", withAttrs(user("5"), "team", "4"), ActionSubscribe, "team_3_updates", 403},
		{"list attribute", withAttrs(user("5"), "team", "4", "team", "3"), ActionSubscribe, "team_3_updates", 0},
		{"team reader cannot publish", withAttrs(user("5"), "team", "3"), ActionPublish, "team_3_updates", 403},
		{"team_member publishes", withAttrs(user("5"), "team_member", "3"), ActionPublish, "team_3_updates", 0},
		{"presence defaults to subscribe", withAttrs(user("5"), "team", "3"), ActionPresence, "team_3_updates", 0},

		{"any user reads public", user("9"), ActionSubscribe, "public_news", 0},
		{"anonymous reads public", anon, ActionSubscribe, "public_news", 401},
		{"moderator publishes public", user("9", "moderator"), ActionPublish, "public_news", 0},
		{"user publishes public", user("9"), ActionPublish, "public_news", 403},

		{"admin channel for admins", user("1", "admin"), ActionSubscribe, "admin_dashboard", 0},
		{"admin channel for users", user("9", "editor"), ActionSubscribe, "admin_dashboard", 403},

		{"granted participant reads", user("21"), ActionSubscribe, "chat_room_9", 0},
		{"granted participant writes", user("21"), ActionPublish, "chat_room_9", 0},
		{"subscribe-only grant cannot write", user("22"), ActionPublish, "chat_room_9", 403},
		{"grant is per room", user("21"), ActionSubscribe, "chat_room_10", 403},
		{"no grant", user("30"), ActionSubscribe, "chat_room_9", 403},
		{"channels claim", claims, ActionPublish, "chat_room_42", 0},
		{"channels claim prefix only", claims, ActionSubscribe, "chat_room_9", 403},
		{"room capture needs a character", user("21"), ActionSubscribe, "chat_room_", 403},

		{"everyone reads announcements", anon, ActionSubscribe, "announcements", 0},
		{"anonymous cannot publish", anon, ActionPublish, "announcements", 401},
		{"explicit history list", anon, ActionHistory, "announcements", 401},
		{"explicit history list, user", user("9"), ActionHistory, "announcements", 0},
		{"exact pattern", user("9"), ActionSubscribe, "announcements_2", 403},

		{"no rule, user", user("1", "admin"), ActionSubscribe, "misc", 403},
		{"no rule, anonymous", anon, ActionSubscribe, "misc", 401},
		{"no rule, system", system, ActionSubscribe, "misc", 0},
	}
	for _, tc := range cases {
		err := authorizeOn(srv, tc.id, tc.action, tc.channel)
		got := 0
		if err != nil {
			got = AsError(err).Code
			msg := err.Error()
			if !strings.Contains(msg, tc.channel) || !strings.Contains(msg, tc.action.String()) {
				t.Errorf("%s: message %q does not name the channel and action", tc.who, msg)
			}
			if strings.Contains(msg, "pattern") || strings.Contains(msg, "{") {
				t.Errorf("%s: message %q leaks the rules", tc.who, msg)
			}
		}
		if got != tc.want {
			t.Errorf("%s: %s %s → %d (%v), want %d", tc.who, tc.action, tc.channel, got, err, tc.want)
		}
	}
}

func TestDenialsSayTheActionInPlainWords(t *testing.T) {
	t.Parallel()
	srv, _ := newTestServer(t, Config{Rules: seedRules()})
	anon := Identity{Anonymous: true}
	const ch = "user_17_notifications"
	cases := []struct {
		id      Identity
		action  Action
		channel string
		code    int
		want    string
	}{
		{user("18"), ActionSubscribe, ch, 403, `not allowed to subscribe to channel "user_17_notifications"`},
		{user("18"), ActionPublish, ch, 403, `not allowed to publish to channel "user_17_notifications"`},
		{user("18"), ActionHistory, ch, 403, `not allowed to read the history of channel "user_17_notifications"`},
		{user("18"), ActionPresence, ch, 403, `not allowed to see the presence of channel "user_17_notifications"`},
		{anon, ActionSubscribe, ch, 401, `credentials are required to subscribe to channel "user_17_notifications"`},
		{anon, ActionPublish, ch, 401, `credentials are required to publish to channel "user_17_notifications"`},
		{anon, ActionHistory, ch, 401, `credentials are required to read the history of channel "user_17_notifications"`},
		{anon, ActionPresence, ch, 401, `credentials are required to see the presence of channel "user_17_notifications"`},
		// A user's system channel is decided before the rules, in the same words.
		{user("18"), ActionHistory, UserChannel("17"), 403, `not allowed to read the history of channel "herald.user.17"`},
		{anon, ActionSubscribe, UserChannel("17"), 401, `credentials are required to subscribe to channel "herald.user.17"`},
	}
	for _, tc := range cases {
		e := AsError(authorizeOn(srv, tc.id, tc.action, tc.channel))
		if e.Code != tc.code || e.Message != tc.want {
			t.Errorf("%s %s as user %q: %d %q, want %d %q", tc.action, tc.channel, tc.id.User, e.Code, e.Message, tc.code, tc.want)
		}
	}
}

func TestRuleRetentionComesFromTheMatchingRule(t *testing.T) {
	t.Parallel()
	cfg := Config{Rules: seedRules(), History: HistoryConfig{RetentionConfig: RetentionConfig{Size: intp(7), TTL: time.Hour}}}
	ret, err := cfg.Retention()
	if err != nil {
		t.Fatal(err)
	}
	if r := ret("chat_room_1"); r.MaxCount != 500 || r.MaxAge != 72*time.Hour {
		t.Errorf("chat room retention %+v", r)
	}
	if r := ret("public_x"); r.MaxCount != 7 || r.MaxAge != time.Hour {
		t.Errorf("default retention %+v", r)
	}
	off := Config{Rules: []RuleConfig{{Pattern: "ticks", History: &RetentionConfig{Size: intp(0)}}}}
	ret, _ = off.Retention()
	if r := ret("ticks"); r.MaxCount != 0 {
		t.Errorf("size 0 keeps %d", r.MaxCount)
	}
}

func TestPatternMatching(t *testing.T) {
	t.Parallel()
	cases := []struct {
		pattern, channel string
		match            bool
		caps             []string
	}{
		{"news", "news", true, nil},
		{"news", "news2", false, nil},
		{"news*", "news", true, nil},
		{"news*", "news/sport", true, nil},
		{"*", "", true, nil},
		{"user_{id}_*", "user_17_notifications", true, []string{"17"}},
		{"user_{id}_*", "user_17_", true, []string{"17"}},
		{"user_{id}_*", "user__x", false, nil},
		{"user_{id}", "user_17", true, []string{"17"}},
		{"user_{id}", "user_", false, nil},
		{"org.{org}.team.{team}", "org.acme.team.blue", true, []string{"acme", "blue"}},
		{"org.{org}.team.{team}", "org.acme.blue", false, nil},
		{"dm:{a}:{b}", "dm:17:18", true, []string{"17", "18"}},
		{"dm:{a}:{b}", "dm:17:18:19", true, []string{"17", "18:19"}},
	}
	for _, tc := range cases {
		p, err := compilePattern(tc.pattern)
		if err != nil {
			t.Fatalf("%s: %v", tc.pattern, err)
		}
		var caps captures
		if got := p.match(tc.channel, &caps); got != tc.match {
			t.Errorf("%s ~ %q = %v, want %v", tc.pattern, tc.channel, got, tc.match)
			continue
		}
		for i, c := range tc.caps {
			if caps[i] != c {
				t.Errorf("%s ~ %q: capture %d = %q, want %q", tc.pattern, tc.channel, i, caps[i], c)
			}
		}
	}
}

func TestBadRulesStopStartUpNamingTheRule(t *testing.T) {
	t.Parallel()
	cases := []struct {
		rule RuleConfig
		want string
	}{
		{RuleConfig{Pattern: ""}, "channels[1]: pattern is required"},
		{RuleConfig{Pattern: "a*b"}, "* may only end a pattern"},
		{RuleConfig{Pattern: "user_{id"}, "is not closed"},
		{RuleConfig{Pattern: "user_}"}, "has no {"},
		{RuleConfig{Pattern: "user_{}"}, "{} has no name"},
		{RuleConfig{Pattern: "x_{a}{b}"}, "ambiguous"},
		{RuleConfig{Pattern: "x_{a}*"}, "ambiguous"},
		{RuleConfig{Pattern: "x_{a}_{a}"}, "captured twice"},
		{RuleConfig{Pattern: "chat room"}, "not allowed in a channel name"},
		{RuleConfig{Pattern: "user_{id}", Subscribe: []string{"user:{uid}"}}, `subscribe: principal "user:{uid}": {uid} is not captured`},
		{RuleConfig{Pattern: "x", Publish: []string{":3"}}, "publish: principal"},
		{RuleConfig{Pattern: "x", HistoryAccess: []string{""}}, "history_access: empty principal"},
		{RuleConfig{Pattern: "x", JoinLeave: true}, "join_leave needs presence"},
		{RuleConfig{Pattern: "x", History: &RetentionConfig{Size: intp(-1)}}, "history.size -1"},
		{RuleConfig{Pattern: "x", History: &RetentionConfig{Size: intp(2_000_000)}}, "history.size 2000000"},
		{RuleConfig{Pattern: "x", RateLimit: &RateLimitConfig{Limit: 0, Window: time.Second}}, "rate_limit"},
		{RuleConfig{Pattern: "x", Batch: &BatchConfig{Size: 0, Timeout: time.Second}}, "batch.size 0"},
		{RuleConfig{Pattern: "x", Batch: &BatchConfig{Size: 5}}, "batch.timeout"},
		{RuleConfig{Pattern: "x", MaxSubscribers: -1}, "max_subscribers -1"},
	}
	for _, tc := range cases {
		_, err := compileRules([]RuleConfig{{Pattern: "ok"}, tc.rule}, store.DefaultRetention, TokenVocabulary{})
		if err == nil {
			t.Errorf("%+v accepted", tc.rule)
			continue
		}
		if !strings.Contains(err.Error(), "channels[1]") || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("error %q, want channels[1] and %q", err, tc.want)
		}
		if n := strings.Count(err.Error(), tc.want); n != 1 {
			t.Errorf("error %q says %q %d times, want once", err, tc.want, n)
		}
	}
	if err := (Config{APIKey: testAPIKey, Rules: []RuleConfig{{Pattern: "a*b"}}}).Validate(); err == nil {
		t.Error("Validate accepted a bad rule")
	}
}

func FuzzCompilePattern(f *testing.F) {
	for _, s := range []string{"user_{user_id}_*", "news", "*", "a{b}c{d}", "{", "x_{a}*", "dm:{a}:{b}"} {
		f.Add(s, "user_17_notifications")
	}
	f.Fuzz(func(t *testing.T, src, channel string) {
		p, err := compilePattern(src)
		if err != nil {
			return
		}
		var caps captures
		matched := p.match(channel, &caps)
		if len(p.captures) == 0 && !strings.HasSuffix(src, "*") && matched != (src == channel) {
			t.Fatalf("literal pattern %q ~ %q = %v", src, channel, matched)
		}
		if matched {
			for i := range p.captures {
				if caps[i] == "" || !strings.Contains(channel, caps[i]) {
					t.Fatalf("%q ~ %q: capture %d = %q", src, channel, i, caps[i])
				}
			}
		}
	})
}

func TestEffectiveRulesFillTheDefaults(t *testing.T) {
	t.Parallel()
	cfg := Config{Rules: []RuleConfig{
		{Pattern: "a", Subscribe: []string{"admin"}},
		{Pattern: "b", Subscribe: []string{"admin"}, HistoryAccess: []string{}, History: &RetentionConfig{TTL: time.Hour}},
	}}
	got := cfg.EffectiveRules()
	if len(got) != 2 {
		t.Fatalf("%d rules", len(got))
	}
	a, b := got[0], got[1]
	if strings.Join(a.HistoryAccess, ",") != "admin" || strings.Join(a.PresenceAccess, ",") != "admin" {
		t.Errorf("rule a: history %q, presence %q; want subscribe's list", a.HistoryAccess, a.PresenceAccess)
	}
	if *a.History.Size != store.DefaultRetention.MaxCount || a.History.TTL != store.DefaultRetention.MaxAge {
		t.Errorf("rule a history %d %s, want the server's", *a.History.Size, a.History.TTL)
	}
	if b.HistoryAccess == nil || len(b.HistoryAccess) != 0 {
		t.Errorf("rule b: an explicit empty history_access (nobody) became %q", b.HistoryAccess)
	}
	if *b.History.Size != store.DefaultRetention.MaxCount || b.History.TTL != time.Hour {
		t.Errorf("rule b history %d %s", *b.History.Size, b.History.TTL)
	}
	if cfg.Rules[0].History != nil {
		t.Error("EffectiveRules changed the configuration")
	}
}
