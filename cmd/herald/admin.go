package main

// The admin commands — grant, ban, disconnect — call the server API with
// the API key and print the server's answer as one JSON line, as it came
// (its error too).

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/heraldrt/herald/client"
	"github.com/heraldrt/herald/internal/cli"
)

func cmdGrant(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	return runGrant(ctx, args, cli.ProcessEnv(), nil, stdout, stderr)
}

func cmdBan(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	return runBan(ctx, args, cli.ProcessEnv(), nil, stdout, stderr)
}

func cmdDisconnect(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	return runDisconnect(ctx, args, cli.ProcessEnv(), nil, stdout, stderr)
}

// runGrant implements `herald grant`: POST, DELETE and GET /api/grants.
//
//	herald grant --user 17 --channel chat_room_9 [--action subscribe --action publish]
//	herald grant --revoke --user 17 --channel chat_room_9 [--action publish]
//	herald grant --list --user 17
func runGrant(ctx context.Context, args []string, env cli.Env, hc *http.Client, stdout, stderr io.Writer) error {
	var (
		channel         string
		actions         cli.StringList
		revoke, listing bool
	)
	c, user, err := parseUserCommand("grant --user ID --channel NAME [--action A]... | --revoke --user ID --channel NAME [--action A]... | --list --user ID",
		args, env, hc, stderr, func(fs *flag.FlagSet) {
			fs.StringVar(&channel, "channel", "", "a channel name, or a prefix ending in * (every channel it starts)")
			fs.Var(&actions, "action", "subscribe, publish, history or presence; repeat for several (default all four)")
			fs.BoolVar(&revoke, "revoke", false, "take the actions (default all) away instead of granting them")
			fs.BoolVar(&listing, "list", false, "print the user's grants")
		})
	switch {
	case err != nil:
		return err
	case revoke && listing:
		return errors.New("--revoke and --list exclude each other")
	case listing && (channel != "" || len(actions) > 0):
		return errors.New("--list prints every grant of the user; it takes no --channel or --action")
	case listing:
		return callAPI(ctx, c, stdout, http.MethodGet, "api/grants", url.Values{"user": {user}}, nil)
	case channel == "":
		return errors.New("--channel is required (or --list to print the user's grants)")
	}
	method, body := http.MethodPost, map[string]any{"user": user, "channel": channel}
	if revoke {
		method = http.MethodDelete
	}
	if len(actions) > 0 {
		body["actions"] = []string(actions)
	}
	return callAPI(ctx, c, stdout, method, "api/grants", nil, body)
}

// runBan implements `herald ban`: POST /api/ban (end the user's sessions
// and refuse their tokens for a while) or, with --lift, DELETE /api/ban.
//
//	herald ban --user 17 --duration 24h
//	herald ban --lift --user 17
func runBan(ctx context.Context, args []string, env cli.Env, hc *http.Client, stdout, stderr io.Writer) error {
	var (
		duration string
		lift     bool
	)
	c, user, err := parseUserCommand("ban --user ID --duration D | --lift --user ID", args, env, hc, stderr, func(fs *flag.FlagSet) {
		fs.StringVar(&duration, "duration", "", "how long the ban lasts, such as 10m or 24h; required unless --lift")
		fs.BoolVar(&lift, "lift", false, "lift the user's ban")
	})
	switch {
	case err != nil:
		return err
	case lift && duration != "":
		return errors.New("--lift takes no --duration")
	case lift:
		return callAPI(ctx, c, stdout, http.MethodDelete, "api/ban", nil, map[string]string{"user": user})
	case duration == "":
		return errors.New("--duration is required (such as 24h), or --lift to lift a ban")
	}
	return callAPI(ctx, c, stdout, http.MethodPost, "api/ban", nil, map[string]string{"user": user, "duration": duration})
}

// runDisconnect implements `herald disconnect --user 17`: POST
// /api/disconnect closes every session of the user (who may reconnect).
func runDisconnect(ctx context.Context, args []string, env cli.Env, hc *http.Client, stdout, stderr io.Writer) error {
	c, user, err := parseUserCommand("disconnect --user ID", args, env, hc, stderr, func(*flag.FlagSet) {})
	if err != nil {
		return err
	}
	return callAPI(ctx, c, stdout, http.MethodPost, "api/disconnect", nil, map[string]string{"user": user})
}

// parseUserCommand parses the flags of an admin command — the client
// flags, --user (required) and its own (more) — and returns its client.
func parseUserCommand(synopsis string, args []string, env cli.Env, hc *http.Client, stderr io.Writer, more func(*flag.FlagSet)) (*client.Client, string, error) {
	fs := cli.NewFlagSet(synopsis[:strings.IndexByte(synopsis, ' ')], synopsis, stderr)
	var (
		cf   cli.ClientFlags
		user string
	)
	cf.Register(fs)
	fs.StringVar(&user, "user", "", "the user (token sub); required")
	more(fs)
	if err := cli.Parse(fs, args); err != nil {
		return nil, "", err
	}
	c, err := cf.Client(env.Getenv, client.Options{HTTPClient: hc})
	if err == nil && user == "" {
		err = errors.New("--user is required")
	}
	return c, user, err
}

// adminTimeout bounds one call of an admin command.
const adminTimeout = 30 * time.Second

// callAPI sends one request with client.Call and prints the answer.
func callAPI(ctx context.Context, c *client.Client, stdout io.Writer, method, path string, query url.Values, body any) error {
	ctx, cancel := context.WithTimeout(ctx, adminTimeout)
	defer cancel()
	var answer json.RawMessage
	if err := c.Call(ctx, method, path, query, body, &answer); err != nil {
		return err
	}
	if _, err := stdout.Write(append(answer, '\n')); err != nil {
		return fmt.Errorf("write answer: %w", err)
	}
	return nil
}
