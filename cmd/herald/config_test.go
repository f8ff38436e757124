package main

import (
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

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
`)
	cfg, err := loadServeConfig(
		[]string{"--config", file, "--addr", "127.0.0.1:9000"},
		envOf(map[string]string{"HERALD_ADDR": "127.0.0.1:8000", "HERALD_DATA_DIR": "/from/env"}),
		io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.file.Addr != "127.0.0.1:9000" {
		t.Errorf("addr %q: the flag must win", cfg.file.Addr)
	}
	if cfg.store.Dir != "/from/env" {
		t.Errorf("data dir %q: the environment must win over the file", cfg.store.Dir)
	}
	if cfg.server.APIKey != "file-key-0123456789abcdef" || cfg.store.Durability != store.NoSync {
		t.Errorf("file values lost: %+v", cfg.server)
	}
	if r := cfg.store.Retention("x"); r.MaxCount != 50 || r.MaxAge != 2*time.Hour {
		t.Errorf("retention %+v", r)
	}
	if cfg.sse.Heartbeat != 20*time.Second {
		t.Errorf("heartbeat %s", cfg.sse.Heartbeat)
	}
}

func TestConfigErrorsNameTheProblem(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name string
		file string
		args []string
		env  map[string]string
		want []string
	}{
		{"unknown key", "adress: x\n", nil, nil, []string{"adress", "line 1"}},
		{"unknown nested key", "history:\n  sise: 3\n", nil, nil, []string{"sise", "line 2"}},
		{"bad duration", "sse:\n  heartbeat: soon\n", nil, nil, []string{"line 2", `"soon" is not a duration`}},
		{"wrong type", "history:\n  size: many\n", nil, nil, []string{"line 2", "many"}},
		{"bad addr", "", []string{"--addr", "8080"}, nil, []string{`addr "8080"`}},
		{"dev off loopback", "", []string{"--dev", "--addr", "0.0.0.0:8080", "--data-dir", "DATA"}, nil, []string{"loopback"}},
		{"bad durability", "", []string{"--durability", "maybe"}, nil, []string{`durability "maybe"`}},
		{"bad level", "", nil, map[string]string{"HERALD_LOG_LEVEL": "loud"}, []string{`log.level "loud"`}},
		{"several at once", "", []string{"--addr", "x", "--durability", "y"}, nil, []string{`addr "x"`, `durability "y"`}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			args := tc.args
			for i, a := range args {
				if a == "DATA" {
					args[i] = t.TempDir()
				}
			}
			if tc.file != "" {
				args = append([]string{"--config", writeFile(t, tc.file)}, args...)
			}
			env := map[string]string{"HERALD_API_KEY": okKey}
			for k, v := range tc.env {
				env[k] = v
			}
			_, err := loadServeConfig(args, envOf(env), io.Discard)
			if err == nil {
				t.Fatal("accepted")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not name %q", err, w)
				}
			}
		})
	}
}

func TestDevModeKeepsItsGeneratedCredentials(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	load := func() serveConfig {
		cfg, err := loadServeConfig([]string{"--dev", "--data-dir", dir}, envOf(nil), io.Discard)
		if err != nil {
			t.Fatal(err)
		}
		return cfg
	}
	first, second := load(), load()
	if !first.devKeys || first.server.APIKey == "" || first.server.JWTSecret == "" {
		t.Fatalf("no dev credentials: %+v", first.server)
	}
	if second.server.APIKey != first.server.APIKey || second.server.JWTSecret != first.server.JWTSecret {
		t.Fatal("a restarted dev server got new credentials")
	}
	if err := first.server.Validate(); err != nil {
		t.Fatalf("generated credentials are invalid: %v", err)
	}
	if fi, err := os.Stat(filepath.Join(dir, devKeyFile)); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("credentials file: %v %v", fi, err)
	}
}

func TestServeRefusesToStartWithoutAnAPIKey(t *testing.T) {
	t.Parallel()
	cfg, err := loadServeConfig([]string{"--data-dir", t.TempDir()}, envOf(nil), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if err := cfg.server.Validate(); err == nil || !strings.Contains(err.Error(), "api_key is required") {
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
	cfg, err := loadServeConfig([]string{"--config", good}, envOf(map[string]string{"HERALD_API_KEY": okKey}), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if err := cfg.server.Validate(); err != nil {
		t.Fatal(err)
	}
	if n := len(cfg.server.Rules); n != 2 || cfg.server.Rules[1].Batch.Timeout != 100*time.Millisecond {
		t.Fatalf("rules %+v", cfg.server.Rules)
	}
	if r := cfg.store.Retention("chat_room_1"); r.MaxCount != 500 || r.MaxAge != 72*time.Hour {
		t.Fatalf("chat room retention %+v", r)
	}

	cases := []struct{ name, yaml, want string }{
		{"unknown option", "channels:\n  - pattern: a\n    subscirbe: [admin]\n", `channels[0] (line 3): unknown option "subscirbe"`},
		{"second rule", "channels:\n  - pattern: a\n  - pattern: b\n    presense: true\n", `channels[1] (line 4): unknown option "presense"`},
		{"bad pattern", "channels:\n  - pattern: \"a*b\"\n", `channels[0] (pattern "a*b"): pattern "a*b": * may only end`},
		{"no pattern", "channels:\n  - subscribe: [admin]\n", "channels[0] (line 2): pattern is required"},
		{"bad principal", "channels:\n  - pattern: \"u_{id}\"\n    subscribe: [\"user:{uid}\"]\n", "{uid} is not captured"},
		{"not a list", "channels: {pattern: a}\n", "channels must be a list"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := loadServeConfig([]string{"--config", writeFile(t, tc.yaml)}, envOf(map[string]string{"HERALD_API_KEY": okKey}), io.Discard)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want %q", err, tc.want)
			}
		})
	}
}
