package main

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/julienschmidt/httprouter"

	"github.com/heraldrt/herald/client"
	"github.com/heraldrt/herald/internal/cli"
	"github.com/heraldrt/herald/protocol"
	"github.com/heraldrt/herald/server"
	"github.com/heraldrt/herald/server/servertest"
	"github.com/heraldrt/herald/store"
)

const (
	adminTestKey    = "admin-test-api-key-0123456789"
	adminTestSecret = "admin-test-jwt-secret-0123456789abcdef"
)

// adminTestServer is a real core with the API, with chat rooms opened by
// grants and an open channel for signed-in users.
func adminTestServer(t *testing.T) (url string, userToken func(sub string) string) {
	t.Helper()
	cfg := server.Config{
		APIKey: adminTestKey, JWTSecret: adminTestSecret, Logger: slog.New(slog.DiscardHandler),
		Rules: []server.RuleConfig{
			{Pattern: "chat_room_{id}", Subscribe: []string{"grant"}, Publish: []string{"grant"}},
			{Pattern: "lobby", Subscribe: []string{"authenticated"}, Publish: []string{"authenticated"}},
		},
	}
	f := servertest.Start(t, cfg, store.Options{}, func(*server.Server, *httprouter.Router) func(context.Context) error { return nil })
	return f.HTTP.URL, func(sub string) string {
		tok, err := cli.Token{Secret: adminTestSecret, Sub: sub, TTL: time.Hour}.Mint(time.Now())
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
}

// adminRun runs one admin command (grant, ban, disconnect) against url
// with the API key in the environment.
func adminRun(t *testing.T, url string, run adminRunner, args ...string) (string, error) {
	t.Helper()
	env := map[string]string{cli.EnvURL: url, cli.EnvAPIKey: adminTestKey}
	var stdout, stderr bytes.Buffer
	err := run(context.Background(), args, cli.Env{Getenv: func(k string) string { return env[k] }}, http.DefaultClient, &stdout, &stderr)
	return stdout.String(), err
}

// adminRunner is runGrant, runBan or runDisconnect.
type adminRunner func(context.Context, []string, cli.Env, *http.Client, io.Writer, io.Writer) error

// publishAs publishes to channel with a user token and returns the
// status.
func publishAs(t *testing.T, url, token, channel string) (int, string) {
	t.Helper()
	c, err := client.New(url, client.Options{Token: token})
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.Publish(context.Background(), protocol.PublishRequest{Channel: channel, Data: []byte(`1`)})
	if err == nil {
		return 200, ""
	}
	var ae *client.APIError
	if !errors.As(err, &ae) {
		t.Fatalf("publish: %v", err)
	}
	return ae.Status, ae.Message
}

func TestGrantCommandAgainstARealServer(t *testing.T) {
	t.Parallel()
	url, userToken := adminTestServer(t)
	u17 := userToken("17")

	if code, _ := publishAs(t, url, u17, "chat_room_9"); code != 403 {
		t.Fatalf("before the grant: %d, want 403", code)
	}
	steps := []struct {
		args    []string
		wantOut string
		wantErr string
	}{
		{args: []string{"--user", "17", "--channel", "chat_room_9", "--action", "subscribe", "--action", "publish"},
			wantOut: `{"user":"17","channel":"chat_room_9","actions":["subscribe","publish"]}`},
		{args: []string{"--list", "--user", "17"},
			wantOut: `{"user":"17","grants":[{"user":"17","channel":"chat_room_9","actions":["subscribe","publish"]}]}`},
		{args: []string{"--revoke", "--user", "17", "--channel", "chat_room_9", "--action", "publish"},
			wantOut: `{"user":"17","channel":"chat_room_9","actions":["subscribe"]}`},
		{args: []string{"--user", "17", "--channel", "chat_room_10"},
			wantOut: `{"user":"17","channel":"chat_room_10","actions":["subscribe","publish","history","presence"]}`},
		{args: []string{"--revoke", "--user", "17", "--channel", "chat_room_10"},
			wantOut: `{"user":"17","channel":"chat_room_10","actions":[]}`},
		// The server's own errors, as they come.
		{args: []string{"--user", "17", "--channel", "chat_room_9", "--action", "shout"}, wantErr: `server answered 400 Bad Request: `},
		{args: []string{"--user", "17", "--channel", "chat room"}, wantErr: `server answered 400 Bad Request: `},
		{args: []string{"--user", "17", "--channel", "chat_room_9", "--token", u17}, wantErr: `server answered 403 Forbidden: `},
		// Mistakes caught before anything is sent.
		{args: []string{"--channel", "chat_room_9"}, wantErr: "--user is required"},
		{args: []string{"--user", "17"}, wantErr: "--channel is required (or --list to print the user's grants)"},
		{args: []string{"--list", "--user", "17", "--channel", "x"}, wantErr: "--list prints every grant of the user; it takes no --channel or --action"},
		{args: []string{"--list", "--revoke", "--user", "17"}, wantErr: "--revoke and --list exclude each other"},
	}
	for _, s := range steps {
		out, err := adminRun(t, url, runGrant, s.args...)
		if s.wantErr != "" {
			if err == nil || !strings.HasPrefix(err.Error(), s.wantErr) {
				t.Errorf("grant %q: err %v, want %q", s.args, err, s.wantErr)
			}
			continue
		}
		if err != nil || out != s.wantOut+"\n" {
			t.Errorf("grant %q: %q, %v; want %s", s.args, out, err, s.wantOut)
		}
	}
	// The server's message names the bad action.
	if _, err := adminRun(t, url, runGrant, "--user", "17", "--channel", "chat_room_9", "--action", "shout"); err == nil || !strings.Contains(err.Error(), "shout") {
		t.Errorf("bad action: %v", err)
	}
	if code, msg := publishAs(t, url, u17, "chat_room_9"); code != 403 {
		t.Errorf("after revoking publish: %d %s, want 403", code, msg)
	}
}

func TestBanAndDisconnectCommandsAgainstARealServer(t *testing.T) {
	t.Parallel()
	url, userToken := adminTestServer(t)
	u17 := userToken("17")
	if code, msg := publishAs(t, url, u17, "lobby"); code != 200 {
		t.Fatalf("before the ban: %d %s", code, msg)
	}

	out, err := adminRun(t, url, runBan, "--user", "17", "--duration", "24h")
	if err != nil || !regexp.MustCompile(`^\{"until":"[0-9T:.-]+Z","user":"17"\}\n$`).MatchString(out) {
		t.Fatalf("ban: %q, %v", out, err)
	}
	if code, msg := publishAs(t, url, u17, "lobby"); code != 403 || !strings.Contains(msg, "banned") {
		t.Errorf("banned user publishes: %d %q, want 403 naming the ban", code, msg)
	}
	out, err = adminRun(t, url, runBan, "--lift", "--user", "17")
	if err != nil || out != `{"banned":false,"user":"17"}`+"\n" {
		t.Fatalf("lift: %q, %v", out, err)
	}
	if code, msg := publishAs(t, url, u17, "lobby"); code != 200 {
		t.Errorf("after the lift: %d %s", code, msg)
	}

	out, err = adminRun(t, url, runDisconnect, "--user", "17")
	if err != nil || out != `{"sessions_closed":0,"user":"17"}`+"\n" {
		t.Errorf("disconnect: %q, %v", out, err)
	}

	for _, tc := range []struct {
		run     adminRunner
		args    []string
		wantErr string
	}{
		{runBan, []string{"--user", "17", "--duration", "soon"}, `server answered 400 Bad Request: duration "soon"`},
		{runBan, []string{"--user", "17"}, "--duration is required (such as 24h), or --lift to lift a ban"},
		{runBan, []string{"--lift", "--user", "17", "--duration", "1h"}, "--lift takes no --duration"},
		{runBan, []string{"--duration", "1h"}, "--user is required"},
		{runDisconnect, []string{}, "--user is required"},
		{runDisconnect, []string{"--user", "17", "--token", u17}, "server answered 403 Forbidden: "},
	} {
		if _, err := adminRun(t, url, tc.run, tc.args...); err == nil || !strings.HasPrefix(err.Error(), tc.wantErr) {
			t.Errorf("%q: err %v, want %q", tc.args, err, tc.wantErr)
		}
	}
}
