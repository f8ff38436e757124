package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/julienschmidt/httprouter"

	"github.com/heraldrt/herald/client"
	"github.com/heraldrt/herald/internal/cli"
	"github.com/heraldrt/herald/protocol"
	"github.com/heraldrt/herald/server"
	"github.com/heraldrt/herald/server/servertest"
	"github.com/heraldrt/herald/store"
	"github.com/heraldrt/herald/transports/longpoll"
	"github.com/heraldrt/herald/transports/sse"
	"github.com/heraldrt/herald/transports/ws"
)

// The subscriber's behaviour — exactly once, in order, resuming — is
// tested in package client. These tests cover the command: its flags, its
// output lines, its log, its exit.

const subTestKey = "subscribe-test-api-key-0123456789"

// subTestServer is a real core with the three transports, open to the
// API key; "closed_*" channels are open to nobody else.
func subTestServer(t *testing.T) string {
	t.Helper()
	cfg := server.Config{APIKey: subTestKey, JWTSecret: adminTestSecret, Logger: slog.New(slog.DiscardHandler),
		Rules: []server.RuleConfig{{Pattern: "closed_*", Subscribe: []string{"system"}, Publish: []string{"system"}}}}
	f := servertest.Start(t, cfg, store.Options{}, func(srv *server.Server, r *httprouter.Router) func(context.Context) error {
		sh, err := sse.New(srv, sse.Options{})
		if err != nil {
			t.Fatal(err)
		}
		wh, err := ws.New(srv, ws.Options{})
		if err != nil {
			t.Fatal(err)
		}
		ph, err := longpoll.New(srv, longpoll.Options{})
		if err != nil {
			t.Fatal(err)
		}
		r.Handler(http.MethodGet, "/sse", sh)
		r.Handler(http.MethodGet, "/ws", wh)
		r.Handler(http.MethodGet, "/poll", ph)
		r.Handler(http.MethodPost, "/poll", ph)
		return func(ctx context.Context) error { return errors.Join(sh.Wait(ctx), wh.Wait(ctx)) }
	})
	return f.HTTP.URL
}

// runSubscribeCmd runs `herald subscribe` with the API key in the
// environment, within a bound that only stops a hang.
func runSubscribeCmd(t *testing.T, url string, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	env := map[string]string{cli.EnvURL: url, cli.EnvAPIKey: subTestKey}
	var out, errOut bytes.Buffer
	opts, err := parseSubscribeFlags(args, func(k string) string { return env[k] }, nil, &errOut)
	if err != nil {
		return "", errOut.String(), err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	err = runSubscribe(ctx, opts, &out, &errOut)
	if ctx.Err() != nil {
		t.Fatalf("subscribe still running at the test's deadline; stdout:\n%s\nstderr:\n%s", out.String(), errOut.String())
	}
	return out.String(), errOut.String(), err
}

// publishN publishes n messages to channel and returns their envelopes,
// as the history has them.
func publishN(t *testing.T, url, channel string, n int) []string {
	t.Helper()
	c, err := client.New(url, client.Options{Token: subTestKey})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for i := 1; i <= n; i++ {
		if _, err := c.Publish(ctx, protocol.PublishRequest{Channel: channel, Event: "message_sent", Data: json.RawMessage(fmt.Sprint(i))}); err != nil {
			t.Fatal(err)
		}
	}
	page, err := c.History(ctx, channel, 0, n)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, m := range page.Messages {
		out = append(out, string(m))
	}
	return out
}

func TestSubscribeCommand(t *testing.T) {
	t.Parallel()
	url := subTestServer(t)
	for _, tr := range []string{"sse", "ws", "poll"} {
		t.Run(tr, func(t *testing.T) {
			t.Parallel()
			channel := "room_" + tr
			msgs := publishN(t, url, channel, 3)
			// Two messages, then a resume with what --verbose says at exit.
			out, stderr, err := runSubscribeCmd(t, url, "--transport", tr, "--channel", channel, "--since", "0", "--max", "2", "-v")
			if err != nil {
				t.Fatalf("subscribe: %v\n%s", err, stderr)
			}
			if want := strings.Join(msgs[:2], "\n") + "\n"; out != want {
				t.Errorf("stdout:\n%s\nwant:\n%s", out, want)
			}
			if !regexp.MustCompile(`(?m)^herald subscribe: (connected|polling) session=s_`).MatchString(stderr) {
				t.Errorf("--verbose does not log the connection:\n%s", stderr)
			}
			hint := regexp.MustCompile(`(?m)^herald subscribe: stopped; resume with (.*)$`).FindStringSubmatch(stderr)
			if hint == nil {
				t.Fatalf("no resume hint at exit:\n%s", stderr)
			}
			var args []string
			for _, a := range regexp.MustCompile(`--\w+ (?:"[^"]*"|\S+)`).FindAllString(hint[1], -1) {
				name, value, _ := strings.Cut(a, " ")
				args = append(args, name, strings.Trim(value, `"`))
			}
			if tr == "ws" && (len(args) != 4 || args[0] != "--since" || args[1] != "2") {
				t.Errorf("ws resume hint %q, want --since \"2\" --epoch …", hint[1])
			}
			out, stderr, err = runSubscribeCmd(t, url, append([]string{"--transport", tr, "--channel", channel, "--max", "1"}, args...)...)
			if err != nil || out != msgs[2]+"\n" {
				t.Errorf("resumed with %q: %q, %v; want the third message\n%s", hint[1], out, err, stderr)
			}
			if stderr != "" {
				t.Errorf("without --verbose, a run that goes well logs nothing:\n%s", stderr)
			}
		})
	}
}

func TestSubscribeCommandEnds(t *testing.T) {
	t.Parallel()
	url := subTestServer(t)
	tok, err := cli.Token{Secret: adminTestSecret, Sub: "17", TTL: time.Hour}.Mint(time.Now())
	if err != nil {
		t.Fatal(err)
	}
	t.Run("refused", func(t *testing.T) {
		t.Parallel()
		_, _, err := runSubscribeCmd(t, url, "--channel", "closed_1", "--token", tok)
		if err == nil || !strings.HasPrefix(err.Error(), `server answered 403 Forbidden: not allowed to subscribe to channel "closed_1"`) {
			t.Errorf("err = %v, want the server's 403", err)
		}
	})
	t.Run("timeout", func(t *testing.T) {
		t.Parallel()
		// The timeout passes while nothing is published: only a bound
		// that ends the command.
		out, _, err := runSubscribeCmd(t, url, "--channel", "quiet", "--timeout", "1s", "--transport", "poll")
		var idle *idleTimeout
		if !errors.As(err, &idle) || err.Error() != "no message for 1s (--timeout)" || out != "" {
			t.Errorf("out %q, err = %v; want the --timeout error", out, err)
		}
	})
	t.Run("cancel", func(t *testing.T) {
		t.Parallel()
		opts, err := parseSubscribeFlags([]string{"--server", url, "--token", subTestKey, "--channel", "quiet"}, func(string) string { return "" }, nil, io.Discard)
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		if err := runSubscribe(ctx, opts, io.Discard, io.Discard); err != nil {
			t.Errorf("subscribe after a cancel (SIGINT): %v, want nil", err)
		}
	})
}

func TestSubscribeFlags(t *testing.T) {
	t.Parallel()
	cases := []struct {
		args    []string
		wantErr string
	}{
		{[]string{}, "--channel is required"},
		{[]string{"--channel", "A", "--transport", "poll"}, ""},
		{[]string{"--channel", "A", "--transport", "ws", "--cursor", "x"}, "--cursor is for --transport sse and poll"},
		{[]string{"--channel", "A", "--transport", "ws", "--since", "4", "--epoch", "e1"}, ""},
		{[]string{"--channel", "A", "--transport", "carrier-pigeon"}, "unknown"},
		{[]string{"--channel", "bad room"}, "character"},
		{[]string{"--channel", "A", "--channel", "A"}, "given twice"},
		{[]string{"--channel", "A", "--cursor", "x", "--since", "1"}, "not both"},
		{[]string{"--channel", "A", "--channel", "B", "--since", "1"}, "1 since values for 2 channels"},
		{[]string{"--channel", "A", "--since", "x"}, "not a non-negative integer"},
		{[]string{"--channel", "A", "--epoch", "e1"}, "--epoch needs --since"},
		{[]string{"--channel", "A", "--max", "-1"}, "--max"},
		{[]string{"--channel", "A", "extra"}, "unexpected argument"},
		{[]string{"--channel", "A", "--server", "ftp://x"}, "http:// or https://"},
		{[]string{"--channel", "A", "--transport", "sse", "--max", "2"}, ""},
		{[]string{"--channel", "A", "--transport", "poll", "--stall-timeout", "1s"}, ""}, // accepted, unused
		{[]string{"--channel", "A", "--transport", "poll", "--poll-timeout", "0"}, "--poll-timeout 0: want 1 second or more"},
		{[]string{"--channel", "A", "--transport", "poll", "--poll-timeout", "2s"}, "invalid value"},
		{[]string{"--channel", "A", "--stall-timeout", "-1s"}, "must not be negative"},
	}
	for _, tc := range cases {
		_, err := parseSubscribeFlags(tc.args, func(string) string { return "" }, nil, io.Discard)
		switch {
		case tc.wantErr == "" && err != nil:
			t.Errorf("%q: %v", tc.args, err)
		case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
			t.Errorf("%q: err = %v, want %q", tc.args, err, tc.wantErr)
		}
	}
	// The flags become the client's options.
	opts, err := parseSubscribeFlags([]string{"--channel", "A", "--channel", "B", "--since", "4", "--since", "", "--epoch", "e1", "--epoch", "",
		"--transport", "poll", "--poll-timeout", "10", "--stall-timeout", "0"}, func(string) string { return "" }, nil, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	want := client.SubscribeOptions{Transport: client.LongPoll, Channels: []string{"A", "B"},
		Positions: map[string]client.Position{"A": {Offset: 4, Epoch: "e1"}}, PollTimeout: 10 * time.Second, StallTimeout: -1}
	if got := fmt.Sprintf("%+v", opts.sub); got != fmt.Sprintf("%+v", want) {
		t.Errorf("options %s, want %s", got, fmt.Sprintf("%+v", want))
	}
	var help bytes.Buffer
	if _, err := parseSubscribeFlags([]string{"-h"}, func(string) string { return "secret-token" }, nil, &help); !errors.Is(err, flag.ErrHelp) {
		t.Errorf("-h: err = %v, want flag.ErrHelp", err)
	}
	for _, s := range []string{"poll (long polling", "-poll-timeout", "sse and ws only"} {
		if !strings.Contains(help.String(), s) {
			t.Errorf("help lacks %q:\n%s", s, help.String())
		}
	}
	if strings.Contains(help.String(), "secret-token") {
		t.Errorf("help shows the token from the environment:\n%s", help.String())
	}
}
