package main

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/url"
)

// cmdGrant implements `herald grant`: dynamic grants through the server
// API (POST, DELETE and GET /api/grants), with the API key.
//
//	herald grant --user 17 --channel chat_room_9 [--action subscribe --action publish]
//	herald grant --revoke --user 17 --channel chat_room_9 [--action publish]
//	herald grant --list --user 17
func cmdGrant(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	return runGrant(ctx, args, processEnv(), &http.Client{Timeout: publishTimeout}, stdout, stderr)
}

func runGrant(ctx context.Context, args []string, env clientEnv, hc *http.Client, stdout, stderr io.Writer) error {
	fs := newFlagSet("grant", "grant --user ID --channel NAME [--action A]... | --revoke --user ID --channel NAME [--action A]... | --list --user ID", stderr)
	var (
		cf              clientFlags
		user, channel   string
		actions         stringList
		revoke, listing bool
	)
	cf.register(fs)
	fs.StringVar(&user, "user", "", "the user (token sub); required")
	fs.StringVar(&channel, "channel", "", "a channel name, or a prefix ending in * (every channel it starts)")
	fs.Var(&actions, "action", "subscribe, publish, history or presence; repeat for several (default all four)")
	fs.BoolVar(&revoke, "revoke", false, "take the actions (default all) away instead of granting them")
	fs.BoolVar(&listing, "list", false, "print the user's grants")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	base, err := cf.resolve(env.getenv)
	if err != nil {
		return err
	}
	switch {
	case user == "":
		return errors.New("--user is required")
	case revoke && listing:
		return errors.New("--revoke and --list exclude each other")
	case listing && (channel != "" || len(actions) > 0):
		return errors.New("--list prints every grant of the user; it takes no --channel or --action")
	case !listing && channel == "":
		return errors.New("--channel is required (or --list to print the user's grants)")
	}
	var answer []byte
	if listing {
		answer, err = apiCall(ctx, hc, base, cf.token, http.MethodGet, "api/grants", url.Values{"user": {user}}, nil)
	} else {
		method := http.MethodPost
		if revoke {
			method = http.MethodDelete
		}
		body := map[string]any{"user": user, "channel": channel}
		if len(actions) > 0 {
			body["actions"] = []string(actions)
		}
		answer, err = apiCall(ctx, hc, base, cf.token, method, "api/grants", nil, body)
	}
	if err != nil {
		return err
	}
	return printAnswer(stdout, answer)
}
