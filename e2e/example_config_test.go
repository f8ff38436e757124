package e2e

import (
	"fmt"
	"maps"
	"net/http"
	"os/exec"
	"strings"
	"testing"
)

// exampleConfig is the annotated configuration shipped with Herald.
const exampleConfig = "../examples/herald.yaml"

// TestExampleConfigRules starts the binary with examples/herald.yaml and
// checks one allowed and one denied request for every rule of it — a
// subscribe over SSE and a publish over the HTTP API each — with tokens
// minted by `herald token` and grants made through /api/grants.
func TestExampleConfigRules(t *testing.T) {
	srv := startServer(t, "--config", exampleConfig)
	base := srv.url()
	toks := permTokens(t, map[string][]string{
		"user17":      {"--sub", "17", "--role", "member"},
		"user18":      {"--sub", "18", "--role", "member"},
		"admin1":      {"--sub", "1", "--role", "admin"},
		"moderator9":  {"--sub", "9", "--role", "moderator"},
		"team3":       {"--sub", "5", "--attr", "team=3"},
		"team4":       {"--sub", "6", "--attr", "team=4"},
		"teammember3": {"--sub", "7", "--attr", "team=3", "--attr", "team_member=3"},
		"pro30":       {"--sub", "30", "--attr", "plan=pro"},
		"free31":      {"--sub", "31", "--attr", "plan=free"},
		"ada21":       {"--sub", "21", "--attr", "name=Ada", "--attr", "avatar=ada.png", "--attr", "team=3"},
		"user22":      {"--sub", "22"},
	})
	for _, ch := range []string{"chat_room_9", "chat_5f2c", "project_12"} {
		permGrant(t, base, http.MethodPost, "21", ch)
	}

	cases := []permCase{
		// user_{user_id}_*
		{"owner reads own notifications", "user17", "subscribe", "user_17_notifications", 0, false},
		{"another user reads them", "user18", "subscribe", "user_17_notifications", 403, false},
		{"owner writes", "user17", "publish", "user_17_messages", 0, false},
		{"another user writes", "user18", "publish", "user_17_messages", 403, false},
		// team_{team_id}_*
		{"team member reads", "team3", "subscribe", "team_3_updates", 0, false},
		{"other team reads", "team4", "subscribe", "team_3_updates", 403, false},
		{"team_member writes", "teammember3", "publish", "team_3_updates", 0, false},
		{"team reader writes", "team3", "publish", "team_3_updates", 403, false},
		// global_announcements
		{"anyone listens to announcements", whoAnon, "subscribe", "global_announcements", 0, false},
		{"admin announces", "admin1", "publish", "global_announcements", 0, false},
		{"user announces", "user17", "publish", "global_announcements", 403, false},
		{"anonymous announces", whoAnon, "publish", "global_announcements", 401, false},
		// public_*
		{"signed-in user reads public", "user17", "subscribe", "public_news", 0, false},
		{"anonymous reads public", whoAnon, "subscribe", "public_news", 401, false},
		{"moderator writes public", "moderator9", "publish", "public_news", 0, false},
		{"user writes public", "user17", "publish", "public_news", 403, false},
		// admin_*
		{"admin reads admin channel", "admin1", "subscribe", "admin_alerts", 0, false},
		{"moderator reads admin channel", "moderator9", "subscribe", "admin_alerts", 403, false},
		{"admin writes admin channel", "admin1", "publish", "admin_alerts", 0, false},
		{"user writes admin channel", "user17", "publish", "admin_alerts", 403, false},
		// chat_room_{room_id}
		{"participant reads room", "ada21", "subscribe", "chat_room_9", 0, false},
		{"non-participant reads room", "user22", "subscribe", "chat_room_9", 403, false},
		{"participant writes room", "ada21", "publish", "chat_room_9", 0, false},
		{"non-participant writes room", "user22", "publish", "chat_room_9", 403, false},
		// chat_{chat_id}
		{"participant reads group chat", "ada21", "subscribe", "chat_5f2c", 0, false},
		{"non-participant reads group chat", "user22", "subscribe", "chat_5f2c", 403, false},
		{"participant writes group chat", "ada21", "publish", "chat_5f2c", 0, false},
		{"admin is no participant", "admin1", "publish", "chat_5f2c", 403, false},
		// dm:{a}:{b}
		{"first of the pair reads", "user17", "subscribe", "dm:17:18", 0, false},
		{"a third user reads", "ada21", "subscribe", "dm:17:18", 403, false},
		{"second of the pair writes", "user18", "publish", "dm:17:18", 0, false},
		{"a third user writes", "user22", "publish", "dm:17:18", 403, false},
		// dashboard_{user_id}
		{"owner watches own dashboard", "user17", "subscribe", "dashboard_17", 0, false},
		{"another user watches it", "user18", "subscribe", "dashboard_17", 403, false},
		{"backend pushes metrics", whoSystem, "publish", "dashboard_17", 0, false},
		{"owner pushes metrics", "user17", "publish", "dashboard_17", 403, false},
		// project_{project_id}
		{"project member reads changes", "ada21", "subscribe", "project_12", 0, false},
		{"non-member reads changes", "user22", "subscribe", "project_12", 403, false},
		{"backend publishes a change", whoSystem, "publish", "project_12", 0, false},
		{"project member publishes a change", "ada21", "publish", "project_12", 403, false},
		// premium_*
		{"pro plan reads premium", "pro30", "subscribe", "premium_reports", 0, false},
		{"free plan reads premium", "free31", "subscribe", "premium_reports", 403, false},
		{"admin writes premium", "admin1", "publish", "premium_reports", 0, false},
		{"pro plan writes premium", "pro30", "publish", "premium_reports", 403, false},
		// No rule.
		{"no rule matches", "admin1", "subscribe", "misc", 403, false},
	}
	t.Run("cases", func(t *testing.T) {
		for _, c := range cases {
			t.Run(fmt.Sprintf("%s:%s:%s:%s", c.who, c.action, c.channel, c.transport()), func(t *testing.T) {
				t.Parallel()
				c.run(t, base, toks)
			})
		}
	})

	// The presence walkthrough of the README: a member shows the token
	// attributes named in presence.attrs, and only those.
	t.Run("presence attrs", func(t *testing.T) {
		resp, raw := sseOpen(t, base, toks["ada21"], true, "chat_room_9")
		if resp.StatusCode != 200 {
			t.Fatalf("Ada joins chat_room_9: %d %s", resp.StatusCode, raw)
		}
		checkConnected(t, resp, "chat_room_9")
		info := waitPresence(t, base, apiKey, "chat_room_9", map[string]int{"21": 1})
		m, _, _ := info.member("21")
		if want := map[string]string{"name": "Ada", "avatar": "ada.png"}; !maps.Equal(m.Attrs, want) {
			t.Errorf("member attrs %v, want %v (presence.attrs of the example)", m.Attrs, want)
		}
	})
}

// TestExampleConfigChecks: `herald config check` accepts the example as
// it is shipped, with the secrets in the environment.
func TestExampleConfigChecks(t *testing.T) {
	cmd := exec.Command(heraldBin, "config", "check", exampleConfig)
	cmd.Env = append(cleanEnv(), "HERALD_API_KEY="+apiKey, "HERALD_JWT_SECRET="+jwtSecret)
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.HasPrefix(string(out), exampleConfig+": valid\n") {
		t.Fatalf("config check: %v\n%s", err, out)
	}
}
