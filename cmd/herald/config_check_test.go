package main

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/heraldrt/herald/internal/configfile"
)

const exampleConfig = "../../examples/herald.yaml"

// checkOutput runs herald config check and returns what it printed.
func checkOutput(t *testing.T, args []string, env map[string]string) (string, error) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	err := runConfigCheck(args, envOf(env), &stdout, &stderr)
	return stdout.String(), err
}

// hasLine reports whether out has a line matching pattern (the padding
// of the columns written as " +").
func hasLine(out, pattern string) bool {
	return regexp.MustCompile(`(?m)^` + pattern + `$`).MatchString(out)
}

func TestConfigCheckPrintsTheEffectiveRulesAndSettings(t *testing.T) {
	t.Parallel()
	dataDir := filepath.Join(t.TempDir(), "never-created")
	out, err := checkOutput(t,
		[]string{"--addr", "127.0.0.1:9000", exampleConfig, "--dev", "--data-dir", dataDir},
		map[string]string{"HERALD_LOG_LEVEL": "debug"})
	if err != nil {
		t.Fatalf("check: %v\n%s", err, out)
	}
	for _, want := range []string{
		`\.\./\.\./examples/herald\.yaml: valid`,
		`  roles: +admin, moderator, member +# declared`,
		`  attrs: +team, team_member, plan, name, avatar +# declared`,
		`channels: 11 rules, the first match decides, no match is open to everyone \(dev mode\)`,
		`  channels\[5\] "chat_room_\{room_id\}"`,
		`    history_access: +grant`, // filled from subscribe
		`    history: +size 500, ttl 72h`,
		`    options: +presence, join_leave`,
		`    rate_limit: +60 publishes per 1m per user`,
		`    max_subscribers: +100`,
		`    batch: +up to 10 messages, none held longer than 100ms`,
		`    history: +size 1000, ttl 24h`, // a rule without history: the server's
		`  addr: "127\.0\.0\.1:9000" +# --addr`,
		`  dev: true +# --dev`,
		`  log\.level: "debug" +# HERALD_LOG_LEVEL`,
		`  presence\.attrs: \["name", "avatar"\] +# \.\./\.\./examples/herald\.yaml:26`,
		`  api_key: \(hidden\) +# generated for dev mode`,
	} {
		if !hasLine(out, want) {
			t.Errorf("no line %s in\n%s", want, out)
		}
	}
	if strings.Contains(out, "sse.heartbeat") || strings.Contains(out, "data_dir: \"./data\"") {
		t.Errorf("prints settings left at their defaults:\n%s", out)
	}
	if _, err := os.Stat(dataDir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the check touched the data folder (%v); it must not open the store or keep dev credentials", err)
	}
}

func TestConfigCheckSaysWhatTheRulesUseWithoutDeclaring(t *testing.T) {
	t.Parallel()
	file := writeFile(t, "channels:\n  - pattern: \"team_{id}_*\"\n    subscribe: [\"team:{id}\", admin]\n    publish: []\n")
	out, err := checkOutput(t, []string{file}, map[string]string{"HERALD_API_KEY": okKey})
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		`  roles: +admin +# not declared: declare them under tokens\.roles so a misspelt one stops start-up`,
		`  attrs: +team +# not declared: declare them under tokens\.attrs so a misspelt one stops start-up`,
		`    publish: +only the API key`,
		`  api_key: \(hidden\) +# HERALD_API_KEY`,
	} {
		if !hasLine(out, want) {
			t.Errorf("no line %s in\n%s", want, out)
		}
	}
}

func TestConfigCheckReportsEveryProblemAndExitsOne(t *testing.T) {
	t.Parallel()
	file := writeFile(t, "histroy: {}\nsse:\n  heartbeat: 15x\nchannels:\n  - pattern: \"a*b\"\n    subscribe: [admin]\n    max_subscriber: 5\n")
	_, err := checkOutput(t, []string{file}, map[string]string{"HERALD_API_KEY": okKey})
	var ps configfile.Problems
	if !errors.As(err, &ps) || len(ps) != 4 {
		t.Fatalf("err = %v, want 4 problems", err)
	}

	// The command's exit status and output, as a user sees them.
	var stdout, stderr bytes.Buffer
	code := run(context.Background(), []string{"config", "check", writeFile(t, "sse:\n  heartbeet: 1s\nws: []\n")}, &stdout, &stderr)
	if code != 1 || stdout.Len() != 0 {
		t.Fatalf("exit %d, stdout %q; want 1 and nothing", code, stdout.String())
	}
	for _, want := range []string{`herald.yaml:2: unknown key "sse.heartbeet" (did you mean "sse.heartbeat"?)`, `herald.yaml:3: ws: a list is not a mapping`} {
		if !strings.Contains(stderr.String(), want) {
			t.Errorf("stderr lacks %q:\n%s", want, stderr.String())
		}
	}
}

func TestConfigCheckArguments(t *testing.T) {
	t.Parallel()
	file := writeFile(t, "")
	cases := []struct {
		args    []string
		env     map[string]string
		wantErr string
	}{
		{nil, nil, "name the file: herald config check FILE"},
		{[]string{file, file}, nil, "one file at a time"},
		{[]string{"--config", file, file}, nil, "give the file once: as FILE or as --config"},
		{[]string{filepath.Join(t.TempDir(), "missing.yaml")}, nil, "no such file"},
		{nil, map[string]string{"HERALD_CONFIG": file, "HERALD_API_KEY": okKey}, ""},
	}
	for _, tc := range cases {
		_, err := checkOutput(t, tc.args, tc.env)
		if tc.wantErr == "" && err != nil || tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)) {
			t.Errorf("%q: err %v, want %q", tc.args, err, tc.wantErr)
		}
	}
	var stderr bytes.Buffer
	if code := run(context.Background(), []string{"config", "lint"}, &bytes.Buffer{}, &stderr); code != 1 || !strings.Contains(stderr.String(), `want "herald config check FILE"`) {
		t.Errorf("unknown subcommand: exit %d, %q", code, stderr.String())
	}
}

func envOf(m map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) { v, ok := m[k]; return v, ok }
}

func writeFile(t *testing.T, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "herald.yaml")
	if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

const okKey = "api-key-0123456789abcdef"

func TestConfigCheckListsWebhooksWithoutTheirSecrets(t *testing.T) {
	t.Parallel()
	file := filepath.Join(t.TempDir(), "herald.yaml")
	const secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
	cfg := `api_key: test-key-0123456789abcdef
webhooks:
  - name: n8n-orders
    url: https://user:pass@n8n.example.com/webhook/orders
    secret_env: N8N_SECRET
    events: [message]
    channels: ["order_{id}"]
    ordered: true
    batch: {size: 20}
  - name: make-chat
    url: https://hook.eu1.make.com/abc
    secrets: [` + secret + `, ` + secret + `]
    events: [join, leave]
`
	if err := os.WriteFile(file, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := checkOutput(t, []string{file}, map[string]string{"N8N_SECRET": secret})
	if err != nil {
		t.Fatalf("check: %v\n%s", err, out)
	}
	for _, want := range []string{
		`webhooks: 2 endpoints`,
		`  webhooks\[0\] "n8n-orders" +https://user:xxxxx@n8n\.example\.com/webhook/orders`,
		`    channels: +order_\{id\}`,
		`    secrets: +1 \(hidden\) from \$N8N_SECRET`,
		`    delivery: +ordered, one in flight, batches of 20 \(wait 1s\), timeout 10s`,
		`    secrets: +2 \(hidden\)`,
		`    retry: +from 1s doubling to 10m, for 24h; outbox 100000`,
	} {
		if !hasLine(out, want) {
			t.Errorf("no line %q in\n%s", want, out)
		}
	}
	if strings.Contains(out, "whsec_") || strings.Contains(out, "MfKQ9r8") || strings.Contains(out, "pass@") {
		t.Errorf("the report shows a secret:\n%s", out)
	}
	// Without the variable the secret is missing, and the check says where.
	if out, err := checkOutput(t, []string{file}, nil); err == nil || !strings.Contains(err.Error()+out, "N8N_SECRET") {
		t.Errorf("a missing secret variable passed the check: %v\n%s", err, out)
	}
}
