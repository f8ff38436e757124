package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/heraldrt/herald/client"
	"github.com/heraldrt/herald/internal/app"
	"github.com/heraldrt/herald/internal/cli"
	"github.com/heraldrt/herald/protocol"
	"github.com/heraldrt/herald/webhooks"
)

const webhooksTestSecret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"

// webhooksTestServer is a real Herald with two endpoints: "ok", whose
// receiver answers 200 and hands over what it got, and "down", whose
// receiver answers 500 and which gives up after its first retry, so its
// events become dead letters at once.
func webhooksTestServer(t *testing.T) (base string, got <-chan receivedWebhook) {
	t.Helper()
	ch := make(chan receivedWebhook, 100)
	ok := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		ch <- receivedWebhook{signature: r.Header.Get("webhook-signature"), body: body}
	}))
	t.Cleanup(ok.Close)
	down := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "the database is down", http.StatusInternalServerError)
	}))
	t.Cleanup(down.Close)

	var cfg app.Config
	cfg.Addr = "127.0.0.1:0"
	cfg.Server.APIKey = adminTestKey
	cfg.Store.InMemory = true
	cfg.Webhooks.Endpoints = []webhooks.EndpointConfig{
		{Name: "ok", URL: ok.URL + "/hook", Secret: webhooksTestSecret, Events: []string{"message"}},
		{Name: "down", URL: down.URL, Secret: webhooksTestSecret, Events: []string{"message"}, Ordered: true,
			Retry: webhooks.RetryConfig{Initial: time.Millisecond, Max: time.Millisecond, For: time.Millisecond}},
	}
	a, err := app.New(cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = a.Shutdown() })
	return "http://" + a.Addr(), ch
}

type receivedWebhook struct {
	signature string
	body      []byte
}

// webhooksRun runs `herald webhooks ARGS` against base with the API key
// in the environment.
func webhooksRun(t *testing.T, base string, args ...string) (string, error) {
	t.Helper()
	env := map[string]string{cli.EnvURL: base, cli.EnvAPIKey: adminTestKey}
	var stdout, stderr bytes.Buffer
	err := runWebhooks(context.Background(), args, cli.Env{Getenv: func(k string) string { return env[k] }}, http.DefaultClient, &stdout, &stderr)
	return stdout.String(), err
}

// webhooksStatus reads GET /api/webhooks by name.
func webhooksStatus(t *testing.T, c *client.Client) map[string]webhooks.EndpointStatus {
	t.Helper()
	var answer struct {
		Webhooks []webhooks.EndpointStatus `json:"webhooks"`
	}
	if err := c.Call(context.Background(), http.MethodGet, "api/webhooks", nil, nil, &answer); err != nil {
		t.Fatal(err)
	}
	out := map[string]webhooks.EndpointStatus{}
	for _, e := range answer.Webhooks {
		out[e.Name] = e
	}
	return out
}

func TestWebhooksCommandsAgainstARealServer(t *testing.T) {
	t.Parallel()
	base, got := webhooksTestServer(t)
	c, err := client.New(base, client.Options{Token: adminTestKey})
	if err != nil {
		t.Fatal(err)
	}

	// Before anything happened: both endpoints, nothing queued or dead.
	out, err := webhooksRun(t, base, "list")
	if err != nil {
		t.Fatal(err)
	}
	wantTable := regexp.MustCompile(`^NAME +BREAKER +DISABLED +DEPTH +DEAD +LAST SUCCESS +LAST ERROR\n` +
		`ok +closed +no +0 +0 +- +-\n` +
		`down +closed +no +0 +0 +- +-\n$`)
	if !wantTable.MatchString(out) {
		t.Errorf("list before any event:\n%s", out)
	}

	from := time.Now().Add(-time.Second).UTC()
	for i := range 3 {
		if _, err := c.Publish(context.Background(), protocol.PublishRequest{Channel: "orders", Event: "paid", Data: json.RawMessage(`{"n":` + strconv.Itoa(i) + `}`)}); err != nil {
			t.Fatal(err)
		}
	}
	to := time.Now().Add(time.Second).UTC()
	for range 3 {
		if r := <-got; r.signature == "" || !bytes.Contains(r.body, []byte(`"channel":"orders"`)) {
			t.Errorf("ok received %s (signature %q)", r.body, r.signature)
		}
	}
	// "down" gives up on each of the three: wait (bounded) for its dead
	// letters, and for "ok" to have removed what it delivered.
	deadline := time.Now().Add(30 * time.Second)
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for st := webhooksStatus(t, c); st["down"].Dead < 3 || st["ok"].LastSuccess == "" || st["ok"].Depth != 0; st = webhooksStatus(t, c) {
		if time.Now().After(deadline) {
			t.Fatalf("the dead letters never came: %+v", st)
		}
		<-tick.C
	}

	out, err = webhooksRun(t, base, "list")
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	if len(lines) != 3 {
		t.Fatalf("list: %q", out)
	}
	if !regexp.MustCompile(`^ok +closed +no +0 +0 +20\d\d-\d\d-\d\dT[0-9:.]+Z +-$`).MatchString(lines[1]) {
		t.Errorf("ok's row: %q", lines[1])
	}
	if !regexp.MustCompile(`^down +\S+ +no +\d+ +3 +- +20\d\d-\d\d-\d\dT[0-9:.]+Z (500 .*the database is down|webhooks: the endpoint's breaker is open)$`).MatchString(lines[2]) {
		t.Errorf("down's row: %q", lines[2])
	}
	out, err = webhooksRun(t, base, "list", "--json")
	var raw struct {
		Webhooks []webhooks.EndpointStatus `json:"webhooks"`
	}
	if err != nil || json.Unmarshal([]byte(out), &raw) != nil || len(raw.Webhooks) != 2 || raw.Webhooks[1].Dead != 3 || !strings.HasSuffix(out, "}\n") {
		t.Errorf("list --json: %q, %v", out, err)
	}

	// Dead letters, a page of two, then the rest from where it said.
	out, err = webhooksRun(t, base, "dead", "down", "--limit", "2")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`^SEQ +DIED +EVENT +TYPE +REASON\n` +
		`\d+ +\S+ +m_\S+ +message +gave up after 1ms of failed attempts: .*500.*\n` +
		`(\d+) +\S+ +m_\S+ +message +gave up .*\n` +
		`more: herald webhooks dead down --after (\d+) --limit 2\n$`).FindStringSubmatch(out)
	if m == nil || m[1] != m[2] {
		t.Fatalf("dead down --limit 2:\n%s", out)
	}
	out, err = webhooksRun(t, base, "dead", "--after", m[2], "down")
	if err != nil || strings.Count(out, "\n") != 2 || strings.Contains(out, "more:") {
		t.Errorf("dead --after %s down: %q, %v", m[2], out, err)
	}
	out, err = webhooksRun(t, base, "dead", "ok")
	if err != nil || out != "no dead letters for ok\n" {
		t.Errorf("dead ok: %q, %v", out, err)
	}

	// Replay: one dead letter, then a time range of stored messages.
	out, err = webhooksRun(t, base, "replay", "down", "--dead", "--limit", "1")
	if err != nil || out != `{"endpoint":"down","queued":1}`+"\n" {
		t.Errorf("replay --dead --limit 1: %q, %v", out, err)
	}
	out, err = webhooksRun(t, base, "replay", "ok", "--from", from.Format(time.RFC3339Nano), "--to", to.Format(time.RFC3339Nano))
	if err != nil || out != `{"endpoint":"ok","queued":3}`+"\n" {
		t.Errorf("replay --from --to: %q, %v", out, err)
	}
	for range 3 { // the replayed messages reach ok again
		if r := <-got; !bytes.Contains(r.body, []byte(`"channel":"orders"`)) {
			t.Errorf("ok received %s after the replay", r.body)
		}
	}

	// Test events: delivered to ok; down's failure is the command's.
	out, err = webhooksRun(t, base, "test", "ok")
	if err != nil || !regexp.MustCompile(`^\{"delivered":true,"status":200,"id":"\S+"\}\n$`).MatchString(out) {
		t.Errorf("test ok: %q, %v", out, err)
	}
	if r := <-got; !bytes.Contains(r.body, []byte(`"type":"test"`)) || r.signature == "" {
		t.Errorf("the test event: %s (signature %q)", r.body, r.signature)
	}
	out, err = webhooksRun(t, base, "test", "down")
	if err == nil || !strings.Contains(err.Error(), "endpoint down did not accept the test event") || !strings.Contains(out, `"delivered":false`) {
		t.Errorf("test down: %q, %v", out, err)
	}

	// The server's errors, with its message; mistakes caught before sending.
	for _, c := range []struct {
		args    []string
		wantErr string
	}{
		{[]string{"dead", "nosuch"}, `server answered 404 Not Found: no webhook endpoint is named "nosuch"`},
		{[]string{"test", "nosuch"}, `server answered 404 Not Found: no webhook endpoint is named "nosuch"`},
		{[]string{"replay", "ok", "--from", "2026-01-02T00:00:00Z", "--to", "2026-01-01T00:00:00Z"}, "server answered 400 Bad Request: from 2026-01-02T00:00:00Z is not before to"},
		{[]string{"list", "--token", "wrong-key-0123456789"}, "server answered 401 Unauthorized"},
		{[]string{"replay", "ok"}, "say what to replay: --dead, or --from and --to"},
		{[]string{"replay", "ok", "--dead", "--from", "2026-01-01T00:00:00Z"}, "give one or the other"},
		{[]string{"replay", "ok", "--from", "yesterday", "--to", "2026-01-01T00:00:00Z"}, `--from "yesterday": want an RFC 3339 time`},
		{[]string{"replay", "ok", "--limit", "5", "--from", "2026-01-01T00:00:00Z", "--to", "2026-01-02T00:00:00Z"}, "--limit goes with --dead"},
		{[]string{"dead", "ok", "--limit", "0"}, "--limit 0: want 1 to 1000"},
		{[]string{"dead"}, "name the endpoint: herald webhooks dead NAME"},
		{[]string{"test", "ok", "extra"}, `unexpected argument "extra"`},
		{[]string{"list", "ok"}, `unexpected argument "ok"`},
		{[]string{"purge"}, `unknown subcommand "purge"`},
		{nil, "name a subcommand"},
	} {
		if _, err := webhooksRun(t, base, c.args...); err == nil || !strings.Contains(err.Error(), c.wantErr) {
			t.Errorf("webhooks %q: %v, want an error with %q", c.args, err, c.wantErr)
		}
	}
}

// The command's exit codes and messages through main's dispatcher.
func TestWebhooksCommandExitCodes(t *testing.T) {
	t.Parallel()
	base, _ := webhooksTestServer(t)
	for _, c := range []struct {
		args       []string
		code       int
		out, inErr string
	}{
		{[]string{"webhooks", "list", "--json", "--server", base, "--token", adminTestKey}, 0, `{"webhooks":[{"name":"ok",`, ""},
		{[]string{"webhooks", "dead", "nosuch", "--server", base, "--token", adminTestKey}, 1, "",
			`herald webhooks: server answered 404 Not Found: no webhook endpoint is named "nosuch"`},
		{[]string{"webhooks", "replay", "ok", "--server", base}, 1, "", "herald webhooks: say what to replay"},
		{[]string{"webhooks", "-h"}, 0, "", "Usage: herald webhooks SUBCOMMAND"},
		{[]string{"webhooks", "dead", "-h"}, 0, "", "Usage: herald webhooks dead NAME"},
	} {
		var stdout, stderr bytes.Buffer
		code := run(context.Background(), c.args, &stdout, &stderr)
		if code != c.code || !strings.HasPrefix(stdout.String(), c.out) || !strings.Contains(stderr.String(), c.inErr) {
			t.Errorf("%q: exit %d, stdout %q, stderr %q; want %d, %q, %q", c.args, code, stdout.String(), stderr.String(), c.code, c.out, c.inErr)
		}
	}
}
