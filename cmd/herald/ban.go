package main

import (
	"context"
	"errors"
	"io"
	"net/http"
)

// cmdBan implements `herald ban`: POST /api/ban (end the user's sessions
// and refuse their tokens for a while) or, with --lift, DELETE /api/ban.
//
//	herald ban --user 17 --duration 24h
//	herald ban --lift --user 17
func cmdBan(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	return runBan(ctx, args, processEnv(), &http.Client{Timeout: publishTimeout}, stdout, stderr)
}

func runBan(ctx context.Context, args []string, env clientEnv, hc *http.Client, stdout, stderr io.Writer) error {
	fs := newFlagSet("ban", "ban --user ID --duration D | --lift --user ID", stderr)
	var (
		cf       clientFlags
		user     string
		duration string
		lift     bool
	)
	cf.register(fs)
	fs.StringVar(&user, "user", "", "the user (token sub); required")
	fs.StringVar(&duration, "duration", "", "how long the ban lasts, such as 10m or 24h; required unless --lift")
	fs.BoolVar(&lift, "lift", false, "lift the user's ban")
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
	case lift && duration != "":
		return errors.New("--lift takes no --duration")
	case !lift && duration == "":
		return errors.New("--duration is required (such as 24h), or --lift to lift a ban")
	}
	method, body := http.MethodPost, map[string]string{"user": user, "duration": duration}
	if lift {
		method, body = http.MethodDelete, map[string]string{"user": user}
	}
	answer, err := apiCall(ctx, hc, base, cf.token, method, "api/ban", nil, body)
	if err != nil {
		return err
	}
	return printAnswer(stdout, answer)
}

// cmdDisconnect implements `herald disconnect`: POST /api/disconnect
// closes every session of the user (who may reconnect).
//
//	herald disconnect --user 17
func cmdDisconnect(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	return runDisconnect(ctx, args, processEnv(), &http.Client{Timeout: publishTimeout}, stdout, stderr)
}

func runDisconnect(ctx context.Context, args []string, env clientEnv, hc *http.Client, stdout, stderr io.Writer) error {
	fs := newFlagSet("disconnect", "disconnect --user ID", stderr)
	var (
		cf   clientFlags
		user string
	)
	cf.register(fs)
	fs.StringVar(&user, "user", "", "the user (token sub); required")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	base, err := cf.resolve(env.getenv)
	if err != nil {
		return err
	}
	if user == "" {
		return errors.New("--user is required")
	}
	answer, err := apiCall(ctx, hc, base, cf.token, http.MethodPost, "api/disconnect", nil, map[string]string{"user": user})
	if err != nil {
		return err
	}
	return printAnswer(stdout, answer)
}
