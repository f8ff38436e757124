package server

import (
	"bytes"
	"errors"
	"log/slog"
	"reflect"
	"strings"
	"testing"

	"github.com/heraldrt/herald/store"
)

// configProblems returns the errors joined in err as (keys, message)
// pairs; an error that is not a *ConfigError fails the test.
func configProblems(t *testing.T, err error) (keys [][]string, msgs []string) {
	t.Helper()
	var walk func(error)
	walk = func(err error) {
		if j, ok := err.(interface{ Unwrap() []error }); ok {
			for _, e := range j.Unwrap() {
				walk(e)
			}
			return
		}
		var ce *ConfigError
		if !errors.As(err, &ce) {
			t.Errorf("error %q names no setting", err)
			return
		}
		keys = append(keys, ce.Keys)
		msgs = append(msgs, err.Error())
	}
	if err != nil {
		walk(err)
	}
	return keys, msgs
}

func TestPrincipalsOfUnknownKindStopStartUp(t *testing.T) {
	t.Parallel()
	declared := TokenVocabulary{Roles: []string{"admin", "member"}, Attrs: []string{"team", "team_member", "name", "plan"}}
	cases := []struct {
		name  string
		vocab TokenVocabulary
		rule  RuleConfig
		key   string
		want  string // "" when the rule is valid
	}{
		{"declared role", declared, RuleConfig{Pattern: "a", Subscribe: []string{"admin", "member", "everyone"}}, "", ""},
		{"declared attribute", declared, RuleConfig{Pattern: "t_{id}", Subscribe: []string{"team:{id}", "plan:pro", "user:{id}"}}, "", ""},
		{"misspelt declared role", declared, RuleConfig{Pattern: "a", Subscribe: []string{"everyone"}, Publish: []string{"admin", "admn"}},
			"channels[0].publish[1]", `channels[0] (pattern "a"): publish: principal "admn" is not a declared role (tokens.roles: admin, member) (did you mean "admin"?)`},
		{"misspelt keyword, roles declared", declared, RuleConfig{Pattern: "a", Subscribe: []string{"everone"}},
			"channels[0].subscribe[0]", `channels[0] (pattern "a"): subscribe: principal "everone" is not a declared role (tokens.roles: admin, member) (did you mean "everyone"?)`},
		{"undeclared attribute", declared, RuleConfig{Pattern: "dm:{a}:{b}", Subscribe: []string{"user:{a}", "usr:{b}"}},
			"channels[0].subscribe[1]", `channels[0] (pattern "dm:{a}:{b}"): subscribe: principal "usr:{b}": "usr" is not a declared attribute (tokens.attrs: team, team_member, name, plan) (did you mean "user:{b}"?)`},
		{"misspelt attribute", declared, RuleConfig{Pattern: "t_{id}", HistoryAccess: []string{"taem:{id}"}},
			"channels[0].history_access[0]", `channels[0] (pattern "t_{id}"): history_access: principal "taem:{id}": "taem" is not a declared attribute (tokens.attrs: team, team_member, name, plan) (did you mean "team:{id}"?)`},
		{"role with a placeholder", declared, RuleConfig{Pattern: "x_{kind}", Subscribe: []string{"mem{kind}"}}, "", ""},
		{"nothing declared: any role", TokenVocabulary{}, RuleConfig{Pattern: "a", Subscribe: []string{"moderator", "team:3"}}, "", ""},
		{"nothing declared: almost a keyword", TokenVocabulary{}, RuleConfig{Pattern: "a", Subscribe: []string{"everone"}},
			"channels[0].subscribe[0]", `channels[0] (pattern "a"): subscribe: principal "everone" is almost the keyword "everyone" (did you mean "everyone"?); to name a role "everone", declare it in tokens.roles`},
		{"nothing declared: almost user", TokenVocabulary{}, RuleConfig{Pattern: "dm:{a}:{b}", Subscribe: []string{"usr:{a}"}},
			"channels[0].subscribe[0]", `channels[0] (pattern "dm:{a}:{b}"): subscribe: principal "usr:{a}" names the attribute "usr" (did you mean "user:{a}"?); to match a token attribute "usr", declare it in tokens.attrs`},
		{"a declared role near a keyword is fine", TokenVocabulary{Roles: []string{"grunt"}}, RuleConfig{Pattern: "a", Subscribe: []string{"grunt"}}, "", ""},
		{"roles declared, attributes not", TokenVocabulary{Roles: []string{}}, RuleConfig{Pattern: "a", Subscribe: []string{"team:3"}, Publish: []string{"admin"}},
			"channels[0].publish[0]", `channels[0] (pattern "a"): publish: principal "admin" is not a declared role (tokens.roles: none)`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			_, err := compileRules([]RuleConfig{tc.rule}, store.DefaultRetention, tc.vocab)
			keys, msgs := configProblems(t, err)
			if tc.want == "" {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				return
			}
			if !reflect.DeepEqual(msgs, []string{tc.want}) || !reflect.DeepEqual(keys, [][]string{{tc.key}}) {
				t.Errorf("got %q at %q\nwant %q at %q", msgs, keys, tc.want, tc.key)
			}
		})
	}
}

func TestTokenVocabularyIsChecked(t *testing.T) {
	t.Parallel()
	cfg := Config{
		APIKey: testAPIKey,
		Tokens: TokenVocabulary{Roles: []string{"admin", "grant", "admin"}, Attrs: []string{"name", "user", "a:b"}}, Presence: PresenceConfig{Attrs: []string{"name", "avatr"}}}
	keys, msgs := configProblems(t, cfg.Validate())
	want := []string{
		`tokens.roles[1] "grant" is a keyword of the rules, not a role`,
		`tokens.roles[2] "admin" is declared twice`,
		`tokens.attrs[1] "user": user:<id> matches the token's sub; it is not an attribute`,
		`tokens.attrs[2] "a:b": an attribute is a name without :, { or }`,
		`presence.attrs[1] "avatr" is not a declared attribute (tokens.attrs: name, user, a:b)`,
	}
	if !reflect.DeepEqual(msgs, want) {
		t.Errorf("got\n%s\nwant\n%s", strings.Join(msgs, "\n"), strings.Join(want, "\n"))
	}
	if len(keys) == 5 && !reflect.DeepEqual(keys[4], []string{"presence.attrs[1]"}) {
		t.Errorf("keys %q", keys)
	}
}

func TestConfigErrorsNameTheirSettings(t *testing.T) {
	t.Parallel()
	cases := []struct {
		cfg  Config
		keys []string
		want string
	}{
		{Config{}, []string{"api_key"}, "api_key is required outside dev mode (set HERALD_API_KEY)"},
		{Config{APIKey: "short"}, []string{"api_key"}, "api_key is 5 characters long; use at least 16"},
		{Config{APIKey: testAPIKey, CORS: CORSConfig{AllowedOrigins: []string{"*", "app.example.com"}}}, []string{"cors.allowed_origins[1]"}, `cors.allowed_origins[1] "app.example.com": want "*" or an origin such as https://app.example.com`},
		{Config{APIKey: testAPIKey, Limits: Limits{OpsBurst: -1}}, []string{"limits.ops_burst"}, "limits.ops_burst -1: must be positive"},
		{Config{APIKey: testAPIKey, Limits: Limits{MaxDataBytes: 2 << 20}}, []string{"limits.max_data_bytes", "limits.max_body_bytes"}, "limits.max_data_bytes (2097152) must be below limits.max_body_bytes (1048576)"},
		{Config{APIKey: testAPIKey, Rules: []RuleConfig{{Pattern: "a", JoinLeave: true}}}, []string{"channels[0].join_leave", "channels[0].presence"}, `channels[0] (pattern "a"): join_leave needs presence: true`},
		{Config{APIKey: testAPIKey, Rules: []RuleConfig{{Pattern: "a*b"}}}, []string{"channels[0].pattern"}, `channels[0]: pattern "a*b": * may only end a pattern (found at position 2)`},
	}
	for _, tc := range cases {
		keys, msgs := configProblems(t, tc.cfg.Validate())
		if !reflect.DeepEqual(msgs, []string{tc.want}) || !reflect.DeepEqual(keys, [][]string{tc.keys}) {
			t.Errorf("got %q at %q\nwant %q at %q", msgs, keys, tc.want, tc.keys)
		}
	}
}

func TestUndeclaredTokenNamesAreLoggedOnce(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name   string
		tokens TokenVocabulary
		want   string // "" when nothing is logged
	}{
		{"nothing declared", TokenVocabulary{}, `roles="[admin moderator]" attrs="[team team_member name]"`},
		{"roles declared", TokenVocabulary{Roles: []string{"admin", "moderator"}}, `declare them (tokens: {roles: [...], attrs: [...]}) so that a misspelt one stops start-up" attrs="[team team_member name]"`},
		{"both declared", TokenVocabulary{Roles: []string{"admin", "moderator"}, Attrs: []string{"team", "team_member", "name"}}, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var buf bytes.Buffer
			logger := slog.New(slog.NewTextHandler(&buf, nil))
			newTestServer(t, Config{Logger: logger, Rules: seedRules(), Tokens: tc.tokens, Presence: PresenceConfig{Attrs: []string{"name"}}})
			n := strings.Count(buf.String(), "no tokens: section declares")
			switch {
			case tc.want == "" && n != 0:
				t.Errorf("warned though everything is declared:\n%s", buf.String())
			case tc.want != "" && (n != 1 || !strings.Contains(buf.String(), tc.want)):
				t.Errorf("want one warning naming %s, got:\n%s", tc.want, buf.String())
			}
		})
	}
}
