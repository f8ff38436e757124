package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"

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
	return runPublish(ctx, args, processEnv(), nil, stdout, stderr)
}

const (
	// maxStdinData bounds --data - (the server's body limit is far lower).
	maxStdinData = 16 << 20
	// countPlaceholder is replaced by the message number with --count.
	countPlaceholder = "{{i}}"
)

// publishOptions are the parsed flags of `herald publish`.
type publishOptions struct {
	c     *client.Client
	req   protocol.PublishRequest
	data  string // JSON, possibly with {{i}}
	count int
	via   string // --transport: "http" or "ws"
}

// runPublish runs the command; hc, when not nil, sends the HTTP requests.
func runPublish(ctx context.Context, args []string, env clientEnv, hc *http.Client, stdout, stderr io.Writer) error {
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

func parsePublishFlags(args []string, env clientEnv, hc *http.Client, stderr io.Writer) (publishOptions, error) {
	fs := cli.NewFlagSet("publish", "publish --channel NAME [--event NAME] [--data JSON|-] [--idempotency-key K] [--ephemeral] [--transport http|ws] [--exclude-session S | --exclude-self] [--count N]", stderr)
	var (
		cf          clientFlags
		opts        publishOptions
		excludeSelf bool
	)
	cf.register(fs)
	fs.StringVar(&opts.req.Channel, "channel", "", "channel to publish to; required")
	fs.StringVar(&opts.req.Event, "event", "", "event name (default \"message\" on the server)")
	fs.StringVar(&opts.data, "data", "null", "message data as JSON (a string needs its quotes: '\"hi\"'); - reads it from stdin")
	fs.StringVar(&opts.req.IdempotencyKey, "idempotency-key", "", "a repeat of this key within the server's window returns the first result and stores nothing")
	fs.BoolVar(&opts.req.Ephemeral, "ephemeral", false, "deliver live only: never stored, no offset")
	fs.StringVar(&opts.req.ExcludeSession, "exclude-session", "", "a session that must not receive the message live; http only")
	fs.StringVar(&opts.via, "transport", "http", "http (POST /api/publish, one request per message) or ws (publish ops on one WebSocket connection, each answered before the next is sent)")
	fs.BoolVar(&excludeSelf, "exclude-self", false, "do not push the message back to this connection; ws only")
	fs.IntVar(&opts.count, "count", 1, "publish N messages one after the other; "+countPlaceholder+" in --data and --idempotency-key becomes the message number (1…N)")
	if err := cli.Parse(fs, args); err != nil {
		return publishOptions{}, err
	}
	c, err := cf.client(env.getenv, client.Options{HTTPClient: hc})
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
	if opts.data == "-" {
		b, err := io.ReadAll(io.LimitReader(env.stdin, maxStdinData+1))
		if err != nil {
			return publishOptions{}, fmt.Errorf("read --data from stdin: %w", err)
		}
		if len(b) > maxStdinData {
			return publishOptions{}, fmt.Errorf("--data from stdin is over %d bytes", maxStdinData)
		}
		opts.data = string(b)
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
	n := strconv.Itoa(i)
	req.IdempotencyKey = strings.ReplaceAll(req.IdempotencyKey, countPlaceholder, n)
	s := strings.TrimSpace(strings.ReplaceAll(o.data, countPlaceholder, n))
	if s == "" {
		return req, errors.New("--data is empty; give a JSON value (null, 42, \"text\", {...})")
	}
	// A bare word is an error, not a string: quoting it silently would
	// hide typos like {text:"hi"}.
	var buf bytes.Buffer
	if err := json.Compact(&buf, []byte(s)); err != nil {
		hint := ""
		if s[0] != '{' && s[0] != '[' && s[0] != '"' {
			hint = fmt.Sprintf(" (to send a string, quote it: --data '%s')", strconv.Quote(s))
		}
		return req, fmt.Errorf("--data is not valid JSON: %v%s", err, hint)
	}
	req.Data = buf.Bytes()
	return req, nil
}
