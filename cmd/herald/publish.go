package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"

	"github.com/heraldrt/herald/client"
	"github.com/heraldrt/herald/internal/cli"
	"github.com/heraldrt/herald/protocol"
	"github.com/heraldrt/herald/server"
)

// cmdPublish implements `herald publish`: POST /api/publish (or, with
// --transport ws, publish ops on one WebSocket connection), print each
// acknowledgement as one JSON line.
//
//	herald publish --channel chat_room_7 --event message_sent --data '{"text":"hi"}'
func cmdPublish(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	return runPublish(ctx, args, cli.ProcessEnv(), nil, stdout, stderr)
}

// publishOptions are the parsed flags of `herald publish`.
type publishOptions struct {
	c     *client.Client
	req   protocol.PublishRequest
	data  cli.DataTemplate
	count int
	via   string // --transport: "http" or "ws"
}

// runPublish runs the command; hc, when not nil, sends the HTTP requests.
func runPublish(ctx context.Context, args []string, env cli.Env, hc *http.Client, stdout, stderr io.Writer) error {
	opts, err := parsePublishFlags(args, env, hc, stderr)
	if err != nil {
		return err
	}
	publish := opts.c.Publish
	if opts.via == "ws" {
		conn, err := opts.c.Dial(ctx)
		if err != nil {
			return err
		}
		defer conn.Close()
		publish = conn.Publish
	}
	for i := 1; i <= opts.count; i++ {
		if err := ctx.Err(); err != nil {
			return err
		}
		req, err := opts.request(i)
		if err == nil {
			var res protocol.PublishResult
			if res, err = publish(ctx, req); err == nil {
				line, _ := json.Marshal(res)
				if _, werr := stdout.Write(append(line, '\n')); werr != nil {
					return fmt.Errorf("write answer: %w", werr)
				}
				continue
			}
		}
		if opts.count > 1 {
			return fmt.Errorf("message %d of %d: %w", i, opts.count, err)
		}
		return err
	}
	return nil
}

func parsePublishFlags(args []string, env cli.Env, hc *http.Client, stderr io.Writer) (publishOptions, error) {
	fs := cli.NewFlagSet("publish", "publish --channel NAME [--event NAME] [--data JSON|-] [--idempotency-key K] [--ephemeral] [--transport http|ws] [--exclude-session S | --exclude-self] [--count N]", stderr)
	var (
		cf          cli.ClientFlags
		opts        publishOptions
		excludeSelf bool
	)
	cf.Register(fs)
	fs.StringVar(&opts.req.Channel, "channel", "", "channel to publish to; required")
	fs.StringVar(&opts.req.Event, "event", "", "event name (default \"message\" on the server)")
	var data string
	fs.StringVar(&data, "data", "null", "message data as JSON (a string needs its quotes: '\"hi\"'); - reads it from stdin")
	fs.StringVar(&opts.req.IdempotencyKey, "idempotency-key", "", "a repeat of this key within the server's window returns the first result and stores nothing")
	fs.BoolVar(&opts.req.Ephemeral, "ephemeral", false, "deliver live only: never stored, no offset")
	fs.StringVar(&opts.req.ExcludeSession, "exclude-session", "", "a session that must not receive the message live; http only")
	fs.StringVar(&opts.via, "transport", "http", "http (POST /api/publish, one request per message) or ws (publish ops on one WebSocket connection, each answered before the next is sent)")
	fs.BoolVar(&excludeSelf, "exclude-self", false, "do not push the message back to this connection; ws only")
	fs.IntVar(&opts.count, "count", 1, "publish N messages one after the other; "+cli.CountPlaceholder+" in --data and --idempotency-key becomes the message number (1…N)")
	if err := cli.Parse(fs, args); err != nil {
		return publishOptions{}, err
	}
	c, err := cf.Client(env.Getenv, client.Options{HTTPClient: hc})
	if err != nil {
		return publishOptions{}, err
	}
	opts.c, opts.req.ExcludeSender = c, excludeSelf
	switch {
	case opts.req.Channel == "":
		return publishOptions{}, errors.New("--channel is required")
	case opts.count < 1:
		return publishOptions{}, fmt.Errorf("--count %d: want 1 or more", opts.count)
	case opts.via != "http" && opts.via != "ws":
		return publishOptions{}, fmt.Errorf("--transport %q is unknown; use http or ws", opts.via)
	case excludeSelf && opts.via != "ws":
		return publishOptions{}, errors.New("--exclude-self is for --transport ws only (over HTTP, name a session with --exclude-session)")
	case opts.req.ExcludeSession != "" && opts.via != "http":
		return publishOptions{}, errors.New("--exclude-session is for --transport http only (over ws, --exclude-self leaves out this connection)")
	}
	if err := server.ValidateChannel(opts.req.Channel); err != nil {
		return publishOptions{}, fmt.Errorf("--channel: %w", err)
	}
	if opts.data, err = cli.ReadData(data, env.Stdin); err != nil {
		return publishOptions{}, err
	}
	// Check the data now, so a typo fails before anything is sent.
	if _, err := opts.request(1); err != nil {
		return publishOptions{}, err
	}
	return opts, nil
}

// request returns the i-th (1-based) publish request: {{i}} in the data
// and the idempotency key replaced by i, the data checked and compacted.
func (o *publishOptions) request(i int) (protocol.PublishRequest, error) {
	req := o.req
	req.IdempotencyKey = cli.Number(req.IdempotencyKey, i)
	var err error
	req.Data, err = o.data.Expand(i)
	return req, err
}
