package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/heraldrt/herald/internal/cli"
)

// cmdToken implements `herald token`: it mints an HS256 user token.
//
//	herald token --sub 17 --role admin --attr team=3 --channel 'chat_room_*' --ttl 1h
func cmdToken(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	return runToken(args, cli.ProcessEnv(), stdout, stderr)
}

func runToken(args []string, env cli.Env, stdout, stderr io.Writer) error {
	opts, err := parseTokenFlags(args, env.Getenv, stderr)
	if err != nil {
		return err
	}
	tok, err := opts.Mint(env.Now())
	if err != nil {
		return err
	}
	if _, err := fmt.Fprintln(stdout, tok); err != nil {
		return fmt.Errorf("write token: %w", err)
	}
	return nil
}

func parseTokenFlags(args []string, getenv func(string) string, stderr io.Writer) (cli.Token, error) {
	fs := cli.NewFlagSet("token", "token --sub ID [--role R]... [--attr KEY=VALUE]... [--channel PATTERN]... [--ttl 1h]", stderr)
	var (
		opts         cli.Token
		roles, attrs cli.StringList
		channels     cli.StringList
	)
	fs.StringVar(&opts.Sub, "sub", "", "the user id (sub claim); required")
	fs.Var(&roles, "role", "a role (roles claim); repeat for several")
	fs.Var(&attrs, "attr", "an attribute as KEY=VALUE (attrs claim); repeat a key for a list")
	fs.Var(&channels, "channel", "a channel pattern granted outright (channels claim); repeat for several")
	fs.DurationVar(&opts.TTL, "ttl", time.Hour, "lifetime (exp = now + ttl); 0 mints a token that never expires")
	fs.StringVar(&opts.Secret, "secret", "", "HS256 secret (default $"+cli.EnvJWTSecret+")")
	if err := cli.Parse(fs, args); err != nil {
		return cli.Token{}, err
	}
	if opts.Secret == "" {
		opts.Secret = getenv(cli.EnvJWTSecret)
	}
	var errs []error
	if opts.Secret == "" {
		errs = append(errs, fmt.Errorf("no secret: set $%s or pass --secret (the server's JWT secret)", cli.EnvJWTSecret))
	}
	if strings.TrimSpace(opts.Sub) == "" {
		errs = append(errs, errors.New("--sub is required: the user id the token is for"))
	}
	if opts.TTL < 0 {
		errs = append(errs, fmt.Errorf("--ttl %s is negative; use 0 for a token without expiry", opts.TTL))
	}
	a, err := cli.ParseAttrs(attrs)
	if err != nil {
		errs = append(errs, err)
	}
	for _, r := range roles {
		if strings.TrimSpace(r) == "" {
			errs = append(errs, errors.New("--role is empty"))
			break
		}
	}
	for _, c := range channels {
		if strings.TrimSpace(c) == "" {
			errs = append(errs, errors.New("--channel is empty"))
			break
		}
	}
	if len(errs) > 0 {
		return cli.Token{}, errors.Join(errs...)
	}
	opts.Roles, opts.Attrs, opts.Channels = roles, a, channels
	return opts, nil
}
