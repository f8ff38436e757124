package main

// `herald webhooks` manages the server's outgoing webhooks through its
// API (the API key only): list the endpoints and how they are doing, read
// an endpoint's dead letters, replay them or a time range of stored
// messages, and send an endpoint a test event.

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/heraldrt/herald/client"
	"github.com/heraldrt/herald/internal/cli"
	"github.com/heraldrt/herald/webhooks"
)

const webhooksUsage = `Usage: herald webhooks SUBCOMMAND [flags]

Subcommands (they call the server's API with the API key):
  list                                        every endpoint: breaker, queue depth, dead letters, last result
  dead NAME [--after SEQ] [--limit N]         an endpoint's dead letters, a page at a time
  replay NAME --dead [--limit N]              queue its dead letters again (default all)
  replay NAME --from TIME --to TIME           queue again its messages stored in [from, to) (RFC 3339)
  test NAME                                   send it a signed test event now

Run "herald webhooks SUBCOMMAND -h" for a subcommand's flags.
`

func cmdWebhooks(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	return runWebhooks(ctx, args, cli.ProcessEnv(), nil, stdout, stderr)
}

// runWebhooks dispatches `herald webhooks SUBCOMMAND`.
func runWebhooks(ctx context.Context, args []string, env cli.Env, hc *http.Client, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, webhooksUsage)
		return errors.New("name a subcommand: list, dead, replay or test")
	}
	switch args[0] {
	case "list":
		return webhooksList(ctx, args[1:], env, hc, stdout, stderr)
	case "dead":
		return webhooksDead(ctx, args[1:], env, hc, stdout, stderr)
	case "replay":
		return webhooksReplay(ctx, args[1:], env, hc, stdout, stderr)
	case "test":
		return webhooksTest(ctx, args[1:], env, hc, stdout, stderr)
	case "-h", "--help", "help":
		fmt.Fprint(stderr, webhooksUsage)
		return flag.ErrHelp
	}
	return fmt.Errorf("unknown subcommand %q; use list, dead, replay or test", args[0])
}

// webhooksFlags parses a subcommand's flags — the client flags and its
// own (more) — with its endpoint name, when it takes one, given before or
// after the flags. It returns the client and the name.
func webhooksFlags(sub, synopsis string, takesName bool, args []string, env cli.Env, hc *http.Client, stderr io.Writer, more func(*flag.FlagSet)) (*client.Client, string, error) {
	fs := cli.NewFlagSet("webhooks "+sub, "webhooks "+synopsis, stderr)
	var cf cli.ClientFlags
	cf.Register(fs)
	more(fs)
	var name string
	if takesName && len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		name, args = args[0], args[1:]
	}
	if err := fs.Parse(args); err != nil {
		return nil, "", err
	}
	rest := fs.Args()
	if takesName && name == "" && len(rest) > 0 {
		name, rest = rest[0], rest[1:]
	}
	if len(rest) > 0 {
		return nil, "", fmt.Errorf("unexpected argument %q (see -h)", rest[0])
	}
	if takesName && name == "" {
		return nil, "", fmt.Errorf("name the endpoint: herald webhooks %s", synopsis)
	}
	c, err := cf.Client(env.Getenv, client.Options{HTTPClient: hc})
	return c, name, err
}

// webhookPath is the API path of an endpoint's action.
func webhookPath(name, action string) string {
	return "api/webhooks/" + url.PathEscape(name) + "/" + action
}

// webhooksList implements `herald webhooks list [--json]`.
func webhooksList(ctx context.Context, args []string, env cli.Env, hc *http.Client, stdout, stderr io.Writer) error {
	var raw bool
	c, _, err := webhooksFlags("list", "list [--json]", false, args, env, hc, stderr, func(fs *flag.FlagSet) {
		fs.BoolVar(&raw, "json", false, "print the server's answer as it came, one JSON line")
	})
	if err != nil {
		return err
	}
	if raw {
		return callAPI(ctx, c, stdout, http.MethodGet, "api/webhooks", nil, nil)
	}
	var answer struct {
		Webhooks []webhooks.EndpointStatus `json:"webhooks"`
	}
	if err := callInto(ctx, c, http.MethodGet, "api/webhooks", nil, nil, &answer); err != nil {
		return err
	}
	if len(answer.Webhooks) == 0 {
		_, err := fmt.Fprintln(stdout, "no webhook endpoints are configured (webhooks: in the server's configuration)")
		return err
	}
	tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tBREAKER\tDISABLED\tDEPTH\tDEAD\tLAST SUCCESS\tLAST ERROR")
	for _, e := range answer.Webhooks {
		disabled := "no"
		if e.Disabled {
			disabled = "yes"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%d\t%s\t%s\n", e.Name, e.Breaker, disabled, e.Depth, e.Dead, dash(e.LastSuccess), lastErrorText(e.LastError))
	}
	if err := tw.Flush(); err != nil {
		return fmt.Errorf("write answer: %w", err)
	}
	return nil
}

// lastErrorText is an endpoint's last failed attempt in one cell: when,
// the status it answered (if it answered) and the message.
func lastErrorText(e *webhooks.LastError) string {
	if e == nil {
		return "-"
	}
	s := e.At
	if e.Status != 0 {
		s += " " + strconv.Itoa(e.Status)
	}
	return s + " " + strings.Join(strings.Fields(e.Message), " ")
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// webhooksDead implements `herald webhooks dead NAME [--after SEQ]
// [--limit N] [--json]`: a table of one page of dead letters, and the
// command for the next page.
func webhooksDead(ctx context.Context, args []string, env cli.Env, hc *http.Client, stdout, stderr io.Writer) error {
	var (
		after uint64
		limit int
		raw   bool
	)
	c, name, err := webhooksFlags("dead", "dead NAME [--after SEQ] [--limit N] [--json]", true, args, env, hc, stderr, func(fs *flag.FlagSet) {
		fs.Uint64Var(&after, "after", 0, "start after this dead letter's seq (the previous page's next)")
		fs.IntVar(&limit, "limit", 100, "dead letters in the page, 1 to 1000")
		fs.BoolVar(&raw, "json", false, "print the server's answer as it came, one JSON line")
	})
	if err != nil {
		return err
	}
	if limit < 1 || limit > 1000 {
		return fmt.Errorf("--limit %d: want 1 to 1000", limit)
	}
	q := url.Values{"limit": {strconv.Itoa(limit)}}
	if after > 0 {
		q.Set("after", strconv.FormatUint(after, 10))
	}
	if raw {
		return callAPI(ctx, c, stdout, http.MethodGet, webhookPath(name, "dead"), q, nil)
	}
	var page webhooks.DeadPage
	if err := callInto(ctx, c, http.MethodGet, webhookPath(name, "dead"), q, nil, &page); err != nil {
		return err
	}
	if len(page.DeadLetters) == 0 {
		_, err := fmt.Fprintf(stdout, "no dead letters for %s\n", name)
		return err
	}
	tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "SEQ\tDIED\tEVENT\tTYPE\tREASON")
	for _, d := range page.DeadLetters {
		var ev struct {
			ID   string `json:"id"`
			Type string `json:"type"`
		}
		_ = json.Unmarshal(d.Event, &ev) // null when the server could not decode it
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\n", d.Seq, d.Died, dash(ev.ID), dash(ev.Type), strings.Join(strings.Fields(d.Reason), " "))
	}
	if err := tw.Flush(); err != nil {
		return fmt.Errorf("write answer: %w", err)
	}
	if page.Next != 0 {
		if _, err := fmt.Fprintf(stdout, "more: herald webhooks dead %s --after %d --limit %d\n", name, page.Next, limit); err != nil {
			return fmt.Errorf("write answer: %w", err)
		}
	}
	return nil
}

// webhooksReplay implements `herald webhooks replay NAME --dead [--limit
// N]` and `… --from T --to T`, printing the server's answer.
func webhooksReplay(ctx context.Context, args []string, env cli.Env, hc *http.Client, stdout, stderr io.Writer) error {
	var (
		dead     bool
		limit    int
		from, to string
	)
	c, name, err := webhooksFlags("replay", "replay NAME --dead [--limit N] | replay NAME --from TIME --to TIME", true, args, env, hc, stderr, func(fs *flag.FlagSet) {
		fs.BoolVar(&dead, "dead", false, "queue the endpoint's dead letters again, oldest first")
		fs.IntVar(&limit, "limit", 0, "with --dead: at most this many (default all)")
		fs.StringVar(&from, "from", "", "queue again the messages stored from this time on (RFC 3339, such as 2026-12-05T10:00:00Z)")
		fs.StringVar(&to, "to", "", "… up to this time, excluded (RFC 3339)")
	})
	if err != nil {
		return err
	}
	req := webhooks.ReplayRequest{Dead: dead, Limit: limit, From: from, To: to}
	switch {
	case dead && (from != "" || to != ""):
		return errors.New("--dead replays dead letters, --from and --to a time range: give one or the other")
	case limit < 0:
		return fmt.Errorf("--limit %d: want a positive number (or none for all)", limit)
	case limit > 0 && !dead:
		return errors.New("--limit goes with --dead")
	case dead:
	case from == "" || to == "":
		return errors.New("say what to replay: --dead, or --from and --to (RFC 3339 times)")
	default:
		for _, t := range []struct{ flag, v string }{{"--from", from}, {"--to", to}} {
			if _, err := time.Parse(time.RFC3339Nano, t.v); err != nil {
				return fmt.Errorf("%s %q: want an RFC 3339 time such as 2026-12-05T10:00:00Z", t.flag, t.v)
			}
		}
	}
	return callAPI(ctx, c, stdout, http.MethodPost, webhookPath(name, "replay"), nil, req)
}

// webhooksTest implements `herald webhooks test NAME`: it prints the
// server's answer and fails when the endpoint did not accept the event.
func webhooksTest(ctx context.Context, args []string, env cli.Env, hc *http.Client, stdout, stderr io.Writer) error {
	c, name, err := webhooksFlags("test", "test NAME", true, args, env, hc, stderr, func(*flag.FlagSet) {})
	if err != nil {
		return err
	}
	var raw json.RawMessage
	if err := callInto(ctx, c, http.MethodPost, webhookPath(name, "test"), nil, nil, &raw); err != nil {
		return err
	}
	if _, err := stdout.Write(append(raw, '\n')); err != nil {
		return fmt.Errorf("write answer: %w", err)
	}
	var res webhooks.TestResult
	if err := json.Unmarshal(raw, &res); err != nil {
		return fmt.Errorf("decode the answer: %w", err)
	}
	if !res.Delivered {
		why := res.Error
		if res.Status != 0 {
			why = fmt.Sprintf("it answered %d %s", res.Status, http.StatusText(res.Status))
			if res.Error != "" {
				why += ": " + res.Error
			}
		}
		return fmt.Errorf("endpoint %s did not accept the test event: %s", name, why)
	}
	return nil
}

// callInto sends one request with client.Call and decodes the answer
// into out.
func callInto(ctx context.Context, c *client.Client, method, path string, query url.Values, body, out any) error {
	ctx, cancel := context.WithTimeout(ctx, adminTimeout)
	defer cancel()
	return c.Call(ctx, method, path, query, body, out)
}
