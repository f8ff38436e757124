package app

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/heraldrt/herald/internal/configfile"
	"github.com/heraldrt/herald/store"
)

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

// load parses serve's flags from args and loads the configuration, as
// herald serve does.
func load(args []string, lookupEnv func(string) (string, bool)) (*Loaded, error) {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	flags := RegisterFlags(fs)
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	return Load(flags, lookupEnv, DevCredentials)
}

func TestConfigLayersFlagsOverEnvOverFile(t *testing.T) {
	t.Parallel()
	file := writeFile(t, `
addr: "127.0.0.1:7000"
data_dir: /from/file
api_key: file-key-0123456789abcdef
durability: none
history:
  size: 50
  ttl: 2h
sse:
  heartbeat: 20s
store:
  memtable_bytes: 16777216
  block_cache_bytes: 1048576
`)
	l, err := load(
		[]string{"--config", file, "--addr", "127.0.0.1:9000"},
		envOf(map[string]string{"HERALD_ADDR": "127.0.0.1:8000", "HERALD_DATA_DIR": "/from/env"}))
	if err != nil {
		t.Fatal(err)
	}
	cfg := l.Config
	if cfg.Addr != "127.0.0.1:9000" {
		t.Errorf("addr %q: the flag must win", cfg.Addr)
	}
	if cfg.Store.Dir != "/from/env" {
		t.Errorf("data dir %q: the environment must win over the file", cfg.Store.Dir)
	}
	if cfg.Server.APIKey != "file-key-0123456789abcdef" || cfg.Store.Durability != store.NoSync {
		t.Errorf("file values lost: %+v", cfg.Server)
	}
	opts, err := cfg.engineOptions(nil)
	if err != nil {
		t.Fatal(err)
	}
	if r := opts.Retention("x"); r.MaxCount != 50 || r.MaxAge != 2*time.Hour {
		t.Errorf("retention %+v", r)
	}
	if cfg.SSE.Heartbeat != 20*time.Second {
		t.Errorf("heartbeat %s", cfg.SSE.Heartbeat)
	}
	if m := opts.Memory; m.MemTableBytes != 16<<20 || m.BlockCacheBytes != 1<<20 {
		t.Errorf("store section %+v", m)
	}
}

// configProblemLines loads a configuration and returns its problems as
// printed, with the file's path written F.
func configProblemLines(t *testing.T, file string, args []string, env map[string]string) ([]string, error) {
	t.Helper()
	path := ""
	if file != "" {
		path = writeFile(t, file)
		args = append([]string{"--config", path}, args...)
	}
	for i, a := range args {
		if a == "DATA" {
			args[i] = t.TempDir()
		}
	}
	e := map[string]string{"HERALD_API_KEY": okKey}
	for k, v := range env {
		e[k] = v
	}
	_, err := load(args, envOf(e))
	if err == nil {
		return nil, nil
	}
	var ps configfile.Problems
	if !errors.As(err, &ps) {
		t.Fatalf("error %q is not a list of problems", err)
	}
	var lines []string
	for _, p := range ps {
		line := p.String()
		if path != "" {
			line = strings.ReplaceAll(line, path, "F")
		}
		lines = append(lines, line)
	}
	return lines, err
}

// TestConfigProblemsAreReportedOnceWithTheirPlace: every problem of a
// configuration is reported in one go, each exactly once, at the line of
// the file that set the value (or naming the flag or variable), with the
// closest known key for a typo, and never a Go type name.
func TestConfigProblemsAreReportedOnceWithTheirPlace(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name string
		file string
		args []string
		env  map[string]string
		want []string
	}{
		{name: "typo key", file: "histroy:\n  size: 3\n",
			want: []string{`F:1: unknown key "histroy" (did you mean "history"?)`}},
		{name: "typo nested key", file: "history:\n  sise: 3\n",
			want: []string{`F:2: unknown key "history.sise" (did you mean "history.size"?)`}},
		{name: "unknown key, nothing close", file: "sse:\n  colour: red\n",
			want: []string{`F:2: unknown key "sse.colour" (sse has heartbeat, retry, write_timeout, coalesce)`}},
		{name: "bad duration", file: "sse:\n  heartbeat: 15x\n",
			want: []string{`F:2: sse.heartbeat: "15x" is not a duration (write it like 15s, 2m or 24h)`}},
		{name: "a word for a number", file: "history:\n  size: many\n",
			want: []string{`F:2: history.size: "many" is not a whole number`}},
		{name: "a word for a list", file: "cors:\n  allowed_origins: https://a.example\n",
			want: []string{`F:2: cors.allowed_origins: "https://a.example" is not a list (write [https://a.example])`}},
		{name: "key set twice", file: "addr: \":1\"\naddr: \":2\"\n",
			want: []string{`F:2: addr: set twice (first on line 1)`}},
		{name: "bad value from the file", file: "\nhistory:\n  ttl: -1h\n",
			want: []string{`F:3: history.ttl -1h0m0s: must not be negative`}},
		{name: "bad transport value from the file", file: "ws:\n  max_batch: -1\n",
			want: []string{`F:2: ws.max_batch -1: want at least 1`}},
		{name: "a memtable too small", file: "store:\n  memtable_bytes: 1048576\n",
			want: []string{`F:2: store.memtable_bytes 1048576: want at least 8388608 (8 MiB), so that one message fits in a Badger transaction`}},
		{name: "a default is blamed on the value that conflicts with it", file: "poll:\n  max_timeout: 10s\n",
			want: []string{`F:2: poll.default_timeout 25s: want whole seconds up to poll.max_timeout (10s)`}},
		{name: "cross-field with a default", file: "limits:\n  max_data_bytes: 2000000\n",
			want: []string{`F:2: limits.max_data_bytes (2000000) must be below limits.max_body_bytes (1048576)`}},
		{name: "bad pattern", file: "channels:\n  - pattern: \"a*b\"\n",
			want: []string{`F:2: channels[0]: pattern "a*b": * may only end a pattern (found at position 2)`}},
		{name: "unknown rule option", file: "channels:\n  - pattern: a\n    subscribe: [admin]\n    presense: true\n",
			want: []string{`F:4: channels[0] (pattern "a"): unknown key "presense" (did you mean "presence"?)`}},
		{name: "no pattern", file: "channels:\n  - subscribe: [admin]\n",
			want: []string{`F:2: channels[0]: pattern is required`}},
		{name: "rule is not a mapping", file: "channels:\n  - a\n",
			want: []string{`F:2: channels[0]: "a" is not a mapping (its keys are pattern, subscribe, publish, history_access, presence_access, presence, join_leave, status, history, rate_limit, batch, max_subscribers)`}},
		{name: "channels is not a list", file: "channels: {pattern: a}\n",
			want: []string{`F:1: channels: a mapping is not a list`}},
		{name: "a principal error once, not again for the lists that default to it",
			file: "channels:\n  - pattern: \"u_{id}\"\n    subscribe: [admin, \"user:{uid}\"]\n",
			want: []string{`F:3: channels[0] (pattern "u_{id}"): subscribe: principal "user:{uid}": {uid} is not captured by the pattern "u_{id}"`}},
		{name: "a principal at its own line",
			file: "channels:\n  - pattern: \"dm:{a}:{b}\"\n    subscribe:\n      - \"user:{a}\"\n      - \"usr:{b}\"\n",
			want: []string{`F:5: channels[0] (pattern "dm:{a}:{b}"): subscribe: principal "usr:{b}" names the attribute "usr" (did you mean "user:{b}"?); to match a token attribute "usr", declare it in tokens.attrs`}},
		{name: "a role that is not declared",
			file: "tokens:\n  roles: [admin, member]\nchannels:\n  - pattern: admin_*\n    subscribe: [admn]\n",
			want: []string{`F:5: channels[0] (pattern "admin_*"): subscribe: principal "admn" is not a declared role (tokens.roles: admin, member) (did you mean "admin"?)`}},
		{name: "a presence attribute that is not declared",
			file: "tokens:\n  attrs: [name, avatar]\npresence:\n  attrs: [name, avatr]\n",
			want: []string{`F:4: presence.attrs[1] "avatr" is not a declared attribute (tokens.attrs: name, avatar) (did you mean "avatar"?)`}},
		{name: "what follows from a value already reported is not reported again",
			file: "channels:\n  - pattern: a\n    presence: yes\n    join_leave: true\n",
			want: []string{`F:3: channels[0] (pattern "a"): presence: "yes" is not true or false`}},
		{name: "an engine that does not exist", file: "engine: redis\n",
			want: []string{`F:1: engine: engine "redis": want badger (the default) or {nats: {urls: [...]}}`}},
		{name: "nats without servers", file: "engine:\n  nats:\n    replicas: 3\n",
			want: []string{`F:2: engine.nats.urls: name at least one NATS server, such as [nats://127.0.0.1:4222]`}},
		{name: "nats settings", file: "engine:\n  nats:\n    urls: [\"nats://a:4222, nats://b:4222\"]\n    stream: \"my stream\"\n    replicas: 2\n",
			want: []string{
				`F:3: engine.nats.urls: "nats://a:4222, nats://b:4222" is not a URL such as nats://127.0.0.1:4222 (one per item)`,
				`F:4: engine.nats.stream "my stream": 1 to 32 letters, digits, _ or -`,
				`F:5: engine.nats.replicas 2: want 1, 3 or 5 (a majority must be able to acknowledge)`,
			}},
		{name: "bad flag", args: []string{"--addr", "8080"},
			want: []string{`--addr "8080": want host:port, such as 127.0.0.1:8080 or :8080`}},
		{name: "bad variable", env: map[string]string{"HERALD_LOG_LEVEL": "loud"},
			want: []string{`HERALD_LOG_LEVEL "loud": want debug, info, warn or error`}},
		{name: "short key from a variable", env: map[string]string{"HERALD_API_KEY": "short"},
			want: []string{`HERALD_API_KEY is 5 characters long; use at least 16`}},
		{name: "dev off loopback", args: []string{"--dev", "--addr", "0.0.0.0:8080", "--data-dir", "DATA"},
			want: []string{`--addr "0.0.0.0:8080": dev mode opens every channel to everyone, so it only listens on a loopback address (127.0.0.1:PORT or [::1]:PORT)`}},
		{name: "a flag overrides a bad value of the file", file: "addr: nonsense\n", args: []string{"--addr", "127.0.0.1:9000"}},
		{name: "a variable overrides a bad value of the file", file: "log:\n  level: loud\n", env: map[string]string{"HERALD_LOG_LEVEL": "warn"}},
		{name: "four problems at once",
			file: "histroy:\n  size: 10\nsse:\n  heartbeat: 15x\nchannels:\n  - pattern: \"chat_{id}*\"\n    subscribe: [grant]\n    rate_limt: {limit: 5, window: 1s}\n",
			want: []string{
				`F:1: unknown key "histroy" (did you mean "history"?)`,
				`F:4: sse.heartbeat: "15x" is not a duration (write it like 15s, 2m or 24h)`,
				`F:6: channels[0]: pattern "chat_{id}*": {id} directly before * is ambiguous; put a literal character between them`,
				`F:8: channels[0] (pattern "chat_{id}*"): unknown key "rate_limt" (did you mean "rate_limit"?)`,
			}},
		{name: "file and flag problems together", file: "durability: maybe\n", args: []string{"--log-format", "xml"},
			want: []string{
				`F:1: durability: "maybe": want "sync" or "none"`,
				`--log-format "xml": want text or json`,
			}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got, err := configProblemLines(t, tc.file, tc.args, tc.env)
			if !slices.Equal(got, tc.want) {
				t.Fatalf("problems\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(tc.want, "\n"))
			}
			if err == nil {
				return
			}
			if strings.Contains(err.Error(), "main.") || strings.Contains(err.Error(), "type ") {
				t.Errorf("error %q names a Go type", err)
			}
			if len(tc.want) > 1 && !strings.HasPrefix(err.Error(), fmt.Sprintf("%d problems in the configuration:\n", len(tc.want))) {
				t.Errorf("error %q does not start with the count", err)
			}
		})
	}
}

func TestDevModeKeepsItsGeneratedCredentials(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	devLoad := func() *Loaded {
		l, err := load([]string{"--dev", "--data-dir", dir}, envOf(nil))
		if err != nil {
			t.Fatal(err)
		}
		return l
	}
	first, second := devLoad(), devLoad()
	if !first.DevKeys || first.Config.Server.APIKey == "" || first.Config.Server.JWTSecret == "" {
		t.Fatalf("no dev credentials: %+v", first.Config.Server)
	}
	if second.Config.Server.APIKey != first.Config.Server.APIKey || second.Config.Server.JWTSecret != first.Config.Server.JWTSecret {
		t.Fatal("a restarted dev server got new credentials")
	}
	if err := first.Config.Validate(); err != nil {
		t.Fatalf("generated credentials are invalid: %v", err)
	}
	if fi, err := os.Stat(filepath.Join(dir, DevKeyFile)); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("credentials file: %v %v", fi, err)
	}
}

func TestServeRefusesToStartWithoutAnAPIKey(t *testing.T) {
	t.Parallel()
	_, err := load([]string{"--data-dir", t.TempDir()}, envOf(nil))
	if err == nil || err.Error() != "api_key is required outside dev mode (set HERALD_API_KEY)" {
		t.Fatalf("err = %v", err)
	}
}

func TestChannelRulesFromTheConfigFile(t *testing.T) {
	t.Parallel()
	good := writeFile(t, `
channels:
  - pattern: "user_{user_id}_*"
    subscribe: ["user:{user_id}", "admin"]
    publish: ["system", "admin", "user:{user_id}"]
  - pattern: "chat_room_{room_id}"
    subscribe: ["grant"]
    publish: ["grant"]
    presence: true
    join_leave: true
    history: {size: 500, ttl: 72h}
    rate_limit: {limit: 60, window: 1m}
    batch: {size: 10, timeout: 100ms}
    max_subscribers: 100
`)
	l, err := load([]string{"--config", good}, envOf(map[string]string{"HERALD_API_KEY": okKey}))
	if err != nil {
		t.Fatal(err)
	}
	cfg := l.Config
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	if n := len(cfg.Server.Rules); n != 2 || cfg.Server.Rules[1].Batch.Timeout != 100*time.Millisecond {
		t.Fatalf("rules %+v", cfg.Server.Rules)
	}
	opts, err := cfg.engineOptions(nil)
	if err != nil {
		t.Fatal(err)
	}
	if r := opts.Retention("chat_room_1"); r.MaxCount != 500 || r.MaxAge != 72*time.Hour {
		t.Fatalf("chat room retention %+v", r)
	}
}
