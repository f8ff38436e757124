package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"time"

	"github.com/heraldrt/herald/client"
	"github.com/heraldrt/herald/internal/cli"
	"github.com/heraldrt/herald/server"
)

// cmdSubscribe implements `herald subscribe`: a client subscription
// (SSE, WebSocket or long polling; package client), each message envelope
// printed as one JSON line, exactly once and in order across network cuts
// and server restarts.
//
//	herald subscribe --channel chat_room_7 [--channel B] [--cursor C | --since N...] [--max N] [--timeout D]
func cmdSubscribe(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	opts, err := parseSubscribeFlags(args, cli.ProcessEnv().Getenv, nil, stderr)
	if err != nil {
		return err
	}
	return runSubscribe(ctx, opts, stdout, stderr)
}

// subscribeOptions are the parsed flags of `herald subscribe`.
type subscribeOptions struct {
	c       *client.Client
	sub     client.SubscribeOptions
	max     int
	timeout time.Duration // no message for this long is an error; 0 = wait forever
	verbose bool
}

// parseSubscribeFlags parses the flags; hc, when not nil, carries the
// streams and polls.
func parseSubscribeFlags(args []string, getenv func(string) string, hc *http.Client, stderr io.Writer) (subscribeOptions, error) {
	fs := cli.NewFlagSet("subscribe", "subscribe --channel NAME [--channel NAME]... [--transport sse|ws|poll] [--cursor C | --since N... [--epoch E...]] [--max N] [--timeout D] [--poll-timeout N] [--verbose]", stderr)
	var (
		cf                      cli.ClientFlags
		opts                    subscribeOptions
		channels, since, epochs cli.StringList
		transport               string
		stall                   time.Duration
		pollWait                int
	)
	cf.Register(fs)
	fs.Var(&channels, "channel", "channel to follow; repeat for several (one stream, one cursor)")
	fs.StringVar(&opts.sub.Cursor, "cursor", "", "resume from this cursor (an SSE event id or poll cursor; --verbose logs the last one on exit); sse and poll only")
	fs.Var(&since, "since", "resume after this offset: one per --channel, in the same order (empty for \"from now\")")
	fs.Var(&epochs, "epoch", "the epoch each --since offset belongs to: one per --channel, in the same order")
	fs.StringVar(&transport, "transport", "sse", "transport: sse (Server-Sent Events, GET /sse), ws (WebSocket, GET /ws) or poll (long polling, GET or POST /poll)")
	fs.IntVar(&opts.max, "max", 0, "exit after printing N messages (0 = no limit)")
	fs.DurationVar(&opts.timeout, "timeout", 0, "fail when no message arrives for this long (0 = wait forever)")
	fs.DurationVar(&stall, "stall-timeout", client.DefaultStallTimeout, "reconnect when the server sends nothing, not even a heartbeat or ping, for this long (0 = never); sse and ws only (poll: see --poll-timeout)")
	fs.IntVar(&pollWait, "poll-timeout", int(client.DefaultPollTimeout/time.Second), "poll only: seconds the server may hold a poll open when nothing is new (it caps this, 30 by default); an answer that takes 15s longer is given up and the poll is retried")
	fs.BoolVar(&opts.verbose, "verbose", false, "log connects, disconnects, reconnects and dropped duplicates to stderr")
	fs.BoolVar(&opts.verbose, "v", false, "short for --verbose")
	if err := cli.Parse(fs, args); err != nil {
		return subscribeOptions{}, err
	}
	var err error
	if opts.c, err = cf.Client(getenv, client.Options{HTTPClient: hc, Logger: cli.NewLineLogger(stderr, "subscribe", opts.verbose)}); err != nil {
		return subscribeOptions{}, err
	}
	switch transport {
	case "sse", "ws", "poll":
		opts.sub.Transport = client.Transport(transport)
	default:
		return subscribeOptions{}, fmt.Errorf("--transport %q is unknown; use sse, ws or poll", transport)
	}
	if len(channels) == 0 {
		return subscribeOptions{}, errors.New("--channel is required")
	}
	for i, ch := range channels {
		if err := server.ValidateChannel(ch); err != nil {
			return subscribeOptions{}, fmt.Errorf("--channel: %w", err)
		}
		if slices.Contains(channels[:i], ch) {
			return subscribeOptions{}, fmt.Errorf("--channel %q is given twice", ch)
		}
	}
	opts.sub.Channels = channels
	switch {
	case opts.sub.Cursor != "" && transport == "ws":
		return subscribeOptions{}, errors.New("--cursor is for --transport sse and poll; a WebSocket subscriber resumes per channel: give --since N (and --epoch E), one each per --channel")
	case opts.sub.Cursor != "" && len(since) > 0:
		return subscribeOptions{}, errors.New("give --cursor or --since, not both")
	case len(epochs) > 0 && len(since) == 0:
		return subscribeOptions{}, errors.New("--epoch needs --since")
	case opts.max < 0:
		return subscribeOptions{}, fmt.Errorf("--max %d: want 0 (no limit) or more", opts.max)
	case opts.timeout < 0:
		return subscribeOptions{}, fmt.Errorf("--timeout %s: must not be negative", opts.timeout)
	case stall < 0:
		return subscribeOptions{}, fmt.Errorf("--stall-timeout %s: must not be negative", stall)
	case pollWait < 1:
		return subscribeOptions{}, fmt.Errorf("--poll-timeout %d: want 1 second or more", pollWait)
	}
	if len(since) > 0 {
		positions, err := server.ParsePositions(since, epochs, len(channels))
		if err != nil {
			return subscribeOptions{}, fmt.Errorf("--since/--epoch: %w", err)
		}
		opts.sub.Positions = map[string]client.Position{}
		for i, p := range positions {
			if p != nil {
				opts.sub.Positions[channels[i]] = client.Position{Offset: p.Since, Epoch: p.Epoch}
			}
		}
	}
	opts.sub.StallTimeout, opts.sub.PollTimeout = stall, time.Duration(pollWait)*time.Second
	if stall == 0 {
		opts.sub.StallTimeout = -1 // never
	}
	return opts, nil
}

// idleTimeout is the cause of a run cancelled by --timeout.
type idleTimeout struct{ d time.Duration }

func (e *idleTimeout) Error() string { return fmt.Sprintf("no message for %s (--timeout)", e.d) }

// runSubscribe prints messages until ctx is cancelled (nil), --max
// messages are printed (nil), --timeout passes without a message, or the
// subscription ends for good (the error).
func runSubscribe(ctx context.Context, opts subscribeOptions, stdout, stderr io.Writer) error {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	var quiet *time.Timer // --timeout
	if opts.timeout > 0 {
		quiet = time.AfterFunc(opts.timeout, func() { cancel(&idleTimeout{opts.timeout}) })
		defer quiet.Stop()
	}
	sub, err := opts.c.Subscribe(ctx, opts.sub)
	for printed := 0; err == nil && (opts.max == 0 || printed < opts.max); printed++ {
		var ev client.Event
		if ev, err = sub.Next(ctx); err == nil {
			if _, werr := stdout.Write(append(ev.Raw, '\n')); werr != nil {
				err = fmt.Errorf("write output: %w", werr)
			} else if quiet != nil {
				quiet.Reset(opts.timeout) // a printed message restarts --timeout
			}
		}
	}
	if sub != nil {
		sub.Close()
		if opts.verbose {
			fmt.Fprintf(stderr, "herald subscribe: stopped; %s\n", cli.ResumeHint(sub.Cursor(), sub.Positions(), opts.sub.Channels))
		}
	}
	var idle *idleTimeout
	switch {
	case errors.As(context.Cause(ctx), &idle):
		return idle
	case ctx.Err() != nil:
		return nil // SIGINT, SIGTERM
	}
	return err
}
