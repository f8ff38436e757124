package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/heraldrt/herald/internal/cli"
	"github.com/heraldrt/herald/server"
)

// cmdToken implements `herald token`: it mints an HS256 user token.
//
//	herald token --sub 17 --role admin --attr team=3 --channel 'chat_room_*' --ttl 1h
func cmdToken(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	return runToken(args, processEnv(), stdout, stderr)
}

// tokenOptions are the parsed flags of `herald token`.
type tokenOptions struct {
	secret   string
	sub      string
	roles    []string
	attrs    map[string]any
	channels []string
	ttl      time.Duration
}

func runToken(args []string, env clientEnv, stdout, stderr io.Writer) error {
	opts, err := parseTokenFlags(args, env.getenv, stderr)
	if err != nil {
		return err
	}
	tok, err := mintToken(opts, env.now())
	if err != nil {
		return err
	}
	if _, err := fmt.Fprintln(stdout, tok); err != nil {
		return fmt.Errorf("write token: %w", err)
	}
	return nil
}

func parseTokenFlags(args []string, getenv func(string) string, stderr io.Writer) (tokenOptions, error) {
	fs := cli.NewFlagSet("token", "token --sub ID [--role R]... [--attr KEY=VALUE]... [--channel PATTERN]... [--ttl 1h]", stderr)
	var (
		opts         tokenOptions
		roles, attrs cli.StringList
		channels     cli.StringList
	)
	fs.StringVar(&opts.sub, "sub", "", "the user id (sub claim); required")
	fs.Var(&roles, "role", "a role (roles claim); repeat for several")
	fs.Var(&attrs, "attr", "an attribute as KEY=VALUE (attrs claim); repeat a key for a list")
	fs.Var(&channels, "channel", "a channel pattern granted outright (channels claim); repeat for several")
	fs.DurationVar(&opts.ttl, "ttl", time.Hour, "lifetime (exp = now + ttl); 0 mints a token that never expires")
	fs.StringVar(&opts.secret, "secret", "", "HS256 secret (default $"+cli.EnvJWTSecret+")")
	if err := cli.Parse(fs, args); err != nil {
		return tokenOptions{}, err
	}
	if opts.secret == "" {
		opts.secret = getenv(cli.EnvJWTSecret)
	}
	var errs []error
	if opts.secret == "" {
		errs = append(errs, fmt.Errorf("no secret: set $%s or pass --secret (the server's JWT secret)", cli.EnvJWTSecret))
	}
	if strings.TrimSpace(opts.sub) == "" {
		errs = append(errs, errors.New("--sub is required: the user id the token is for"))
	}
	if opts.ttl < 0 {
		errs = append(errs, fmt.Errorf("--ttl %s is negative; use 0 for a token without expiry", opts.ttl))
	}
	a, err := parseAttrs(attrs)
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
		return tokenOptions{}, errors.Join(errs...)
	}
	opts.roles, opts.attrs, opts.channels = roles, a, channels
	return opts, nil
}

// parseAttrs turns KEY=VALUE pairs into the attrs claim: a key given once
// maps to a string, a key given several times to the list of its values
// (in order, without repeats).
func parseAttrs(pairs []string) (map[string]any, error) {
	if len(pairs) == 0 {
		return nil, nil
	}
	lists := make(map[string][]string, len(pairs))
	var order []string
	for _, p := range pairs {
		k, v, ok := strings.Cut(p, "=")
		switch {
		case !ok:
			return nil, fmt.Errorf("--attr %q: want KEY=VALUE, e.g. --attr team=3", p)
		case k == "":
			return nil, fmt.Errorf("--attr %q: the key is empty; want KEY=VALUE", p)
		case v == "":
			return nil, fmt.Errorf("--attr %q: the value is empty; want KEY=VALUE", p)
		}
		if _, seen := lists[k]; !seen {
			order = append(order, k)
		}
		dup := false
		for _, x := range lists[k] {
			dup = dup || x == v
		}
		if !dup {
			lists[k] = append(lists[k], v)
		}
	}
	out := make(map[string]any, len(lists))
	for _, k := range order {
		if vs := lists[k]; len(vs) == 1 {
			out[k] = vs[0]
		} else {
			out[k] = vs
		}
	}
	return out, nil
}

// mintToken signs the token for opts, issued at now.
func mintToken(opts tokenOptions, now time.Time) (string, error) {
	c := server.Claims{
		RegisteredClaims: jwt.RegisteredClaims{
			Subject:  opts.sub,
			IssuedAt: jwt.NewNumericDate(now),
		},
		Roles:    opts.roles,
		Attrs:    opts.attrs,
		Channels: opts.channels,
	}
	if opts.ttl > 0 {
		c.ExpiresAt = jwt.NewNumericDate(now.Add(opts.ttl))
	}
	tok, err := server.MintToken(opts.secret, c)
	if err != nil {
		return "", fmt.Errorf("mint token: %w", err)
	}
	return tok, nil
}
