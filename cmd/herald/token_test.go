package main

import (
	"bytes"
	"errors"
	"flag"
	"io"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/heraldrt/herald/internal/cli"
	"github.com/heraldrt/herald/server"
)

func TestTokenRoundTrip(t *testing.T) {
	now := time.Date(2026, 11, 26, 16, 52, 20, 0, time.UTC)
	cases := []struct {
		name      string
		args      []string
		env       map[string]string
		secret    string
		wantSub   string
		wantRoles []string
		wantAttrs map[string]any
		wantChans []string
		wantExp   time.Time // zero: no exp
	}{
		{
			name:      "everything",
			args:      []string{"--sub", "17", "--role", "admin", "--role", "mod", "--attr", "team=3", "--attr", "team=4", "--attr", "region=eu", "--channel", "chat_room_*", "--ttl", "1h"},
			env:       map[string]string{cli.EnvJWTSecret: "s3cret"},
			secret:    "s3cret",
			wantSub:   "17",
			wantRoles: []string{"admin", "mod"},
			wantAttrs: map[string]any{"team": []any{"3", "4"}, "region": "eu"},
			wantChans: []string{"chat_room_*"},
			wantExp:   now.Add(time.Hour),
		},
		{
			name:    "--secret beats the environment, default ttl is 1h",
			args:    []string{"--sub", "u1", "--secret", "flag-secret"},
			env:     map[string]string{cli.EnvJWTSecret: "env-secret"},
			secret:  "flag-secret",
			wantSub: "u1",
			wantExp: now.Add(time.Hour),
		},
		{
			name:    "ttl 0 has no exp",
			args:    []string{"--sub", "u1", "--ttl", "0"},
			env:     map[string]string{cli.EnvJWTSecret: "s"},
			secret:  "s",
			wantSub: "u1",
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var stdout bytes.Buffer
			env := cli.Env{Getenv: func(k string) string { return tc.env[k] }, Now: func() time.Time { return now }}
			if err := runToken(tc.args, env, &stdout, io.Discard); err != nil {
				t.Fatalf("token: %v", err)
			}
			out := stdout.String()
			if !strings.HasSuffix(out, "\n") || strings.Count(out, "\n") != 1 {
				t.Fatalf("output %q, want the token and one newline", out)
			}
			var c server.Claims
			_, err := jwt.ParseWithClaims(strings.TrimSpace(out), &c, func(*jwt.Token) (any, error) { return []byte(tc.secret), nil },
				jwt.WithValidMethods([]string{"HS256"}), jwt.WithTimeFunc(func() time.Time { return now }))
			if err != nil {
				t.Fatalf("parse token: %v", err)
			}
			if c.Subject != tc.wantSub {
				t.Errorf("sub %q, want %q", c.Subject, tc.wantSub)
			}
			if c.IssuedAt == nil || !c.IssuedAt.Time.Equal(now) {
				t.Errorf("iat %v, want %v", c.IssuedAt, now)
			}
			switch {
			case tc.wantExp.IsZero() && c.ExpiresAt != nil:
				t.Errorf("exp %v, want none", c.ExpiresAt)
			case !tc.wantExp.IsZero() && (c.ExpiresAt == nil || !c.ExpiresAt.Time.Equal(tc.wantExp)):
				t.Errorf("exp %v, want %v", c.ExpiresAt, tc.wantExp)
			}
			if !reflect.DeepEqual(c.Roles, tc.wantRoles) {
				t.Errorf("roles %v, want %v", c.Roles, tc.wantRoles)
			}
			if !reflect.DeepEqual(c.Attrs, tc.wantAttrs) {
				t.Errorf("attrs %#v, want %#v", c.Attrs, tc.wantAttrs)
			}
			if !reflect.DeepEqual(c.Channels, tc.wantChans) {
				t.Errorf("channels %v, want %v", c.Channels, tc.wantChans)
			}
			// A wrong secret must not verify.
			if _, err := jwt.ParseWithClaims(strings.TrimSpace(out), &server.Claims{}, func(*jwt.Token) (any, error) { return []byte("wrong"), nil },
				jwt.WithTimeFunc(func() time.Time { return now })); !errors.Is(err, jwt.ErrTokenSignatureInvalid) {
				t.Errorf("wrong secret: err = %v, want a signature error", err)
			}
		})
	}
}

func TestTokenErrors(t *testing.T) {
	cases := []struct {
		name    string
		args    []string
		env     map[string]string
		wantErr string
	}{
		{"no secret", []string{"--sub", "17"}, nil, "no secret: set $HERALD_JWT_SECRET or pass --secret"},
		{"no sub", []string{}, map[string]string{cli.EnvJWTSecret: "s"}, "--sub is required"},
		{"attr without =", []string{"--sub", "1", "--attr", "team"}, map[string]string{cli.EnvJWTSecret: "s"}, `--attr "team": want KEY=VALUE`},
		{"attr without key", []string{"--sub", "1", "--attr", "=3"}, map[string]string{cli.EnvJWTSecret: "s"}, "the key is empty"},
		{"attr without value", []string{"--sub", "1", "--attr", "team="}, map[string]string{cli.EnvJWTSecret: "s"}, "the value is empty"},
		{"negative ttl", []string{"--sub", "1", "--ttl", "-1h"}, map[string]string{cli.EnvJWTSecret: "s"}, "--ttl -1h0m0s is negative"},
		{"bad ttl", []string{"--sub", "1", "--ttl", "soon"}, map[string]string{cli.EnvJWTSecret: "s"}, "invalid value"},
		{"empty role", []string{"--sub", "1", "--role", ""}, map[string]string{cli.EnvJWTSecret: "s"}, "--role is empty"},
		{"several at once", []string{"--attr", "x"}, nil, "no secret"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var stdout bytes.Buffer
			env := cli.Env{Getenv: func(k string) string { return tc.env[k] }, Now: time.Now}
			err := runToken(tc.args, env, &stdout, io.Discard)
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("err = %v, want one containing %q", err, tc.wantErr)
			}
			if stdout.Len() != 0 {
				t.Errorf("printed %q on error", stdout.String())
			}
		})
	}
	err := runToken([]string{"-h"}, cli.Env{Getenv: func(string) string { return "" }, Now: time.Now}, io.Discard, io.Discard)
	if !errors.Is(err, flag.ErrHelp) {
		t.Errorf("-h: err = %v, want flag.ErrHelp", err)
	}
}
