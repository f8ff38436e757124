package webhooks

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/heraldrt/herald/server"
)

func env(vars map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) { v, ok := vars[k]; return v, ok }
}

func TestCompileAppliesDefaultsAndSelects(t *testing.T) {
	t.Parallel()
	cfg := Config{Endpoints: []EndpointConfig{
		{Name: "n8n-orders", URL: "https://n8n.example.com/webhook/abc", SecretEnv: "N8N_SECRET",
			Events: []string{"message"}, Channels: []string{"orders_{id}"}, MessageEvents: []string{"order.created"}, Ordered: true,
			Body: `{"event":"{event}","workflow_id":"wf_1","data":{data}}`},
		{Name: "make", URL: "http://127.0.0.1:9000/hook", Secrets: []string{specSecret, specSecret},
			Events: []string{"connect", "join", "vacated"}},
	}}
	eps, err := cfg.Compile(env(map[string]string{"N8N_SECRET": specSecret}))
	if err != nil {
		t.Fatal(err)
	}
	n8n, mk := eps[0], eps[1]
	if n8n.Timeout != DefaultTimeout || n8n.Retry != (RetryConfig{DefaultRetryInitial, DefaultRetryMax, DefaultRetryFor}) ||
		n8n.Batch.Size != 1 || n8n.Parallel != 1 || n8n.OutboxSize != DefaultOutboxSize || len(n8n.Keys) != 1 {
		t.Errorf("n8n endpoint defaults: %+v", n8n.EndpointConfig)
	}
	if mk.Parallel != DefaultParallel || len(mk.Keys) != 2 || mk.URLParsed.Host != "127.0.0.1:9000" {
		t.Errorf("make endpoint: parallel %d, %d keys, url %v", mk.Parallel, len(mk.Keys), mk.URLParsed)
	}
	cases := []struct {
		ep                  *Endpoint
		typ, channel, event string
		want                bool
	}{
		{n8n, "message", "orders_7", "order.created", true},
		{n8n, "message", "orders_7", "order.paid", false},      // another event name
		{n8n, "message", "chat_lobby", "order.created", false}, // another channel
		{n8n, "join", "orders_7", "", false},                   // not asked for
		{mk, "join", "chat_lobby", "", true},                   // every channel
		{mk, "message", "chat_lobby", "message", false},
	}
	for _, tc := range cases {
		if got := tc.ep.Wants(tc.typ, tc.channel, tc.event); got != tc.want {
			t.Errorf("%s wants %s/%s/%s: %v, want %v", tc.ep.Name, tc.typ, tc.channel, tc.event, got, tc.want)
		}
	}
}

func TestCompileNamesEveryProblemWithItsSetting(t *testing.T) {
	t.Parallel()
	good := func() EndpointConfig {
		return EndpointConfig{Name: "hook", URL: "https://example.com/h", Secret: specSecret, Events: []string{"message"}}
	}
	cases := []struct {
		name    string
		edit    func(*EndpointConfig)
		key     string
		message string
	}{
		{"no name", func(c *EndpointConfig) { c.Name = "" }, "webhooks[0].name", `name "": want 1 to 64`},
		{"a bad name", func(c *EndpointConfig) { c.Name = "My Hook" }, "webhooks[0].name", `name "My Hook"`},
		{"no url", func(c *EndpointConfig) { c.URL = "" }, "webhooks[0].url", "url is required"},
		{"a relative url", func(c *EndpointConfig) { c.URL = "/hook" }, "webhooks[0].url", `url "/hook": want an absolute http:// or https:// URL`},
		{"another scheme", func(c *EndpointConfig) { c.URL = "ftp://example.com/h" }, "webhooks[0].url", "want an absolute http"},
		{"no secret", func(c *EndpointConfig) { c.Secret = "" }, "webhooks[0].secret", "a secret is required"},
		{"two ways to give a secret", func(c *EndpointConfig) { c.SecretEnv = "X" }, "webhooks[0].secret", "give one of secret, secrets and secret_env"},
		{"a bad secret", func(c *EndpointConfig) { c.Secret = "hunter2" }, "webhooks[0].secret", `secret: webhooks: bad secret: it must start with "whsec_"`},
		{"a bad rotated secret", func(c *EndpointConfig) { c.Secret, c.Secrets = "", []string{specSecret, "whsec_AAAA"} }, "webhooks[0].secrets[1]", "secrets[1]: webhooks: bad secret"},
		{"three secrets", func(c *EndpointConfig) { c.Secret, c.Secrets = "", []string{specSecret, specSecret, specSecret} }, "webhooks[0].secrets", "at most two"},
		{"a secret_env not set", func(c *EndpointConfig) { c.Secret, c.SecretEnv = "", "NOT_SET" }, "webhooks[0].secret_env", "NOT_SET is not set"},
		{"no events", func(c *EndpointConfig) { c.Events = nil }, "webhooks[0].events", "events is required"},
		{"an unknown event", func(c *EndpointConfig) { c.Events = []string{"message", "typing"} }, "webhooks[0].events[1]", `events[1] "typing": want one of message, connect`},
		{"message_events without messages", func(c *EndpointConfig) { c.Events, c.MessageEvents = []string{"join"}, []string{"x"} }, "webhooks[0].message_events", "does not list message"},
		{"a bad pattern", func(c *EndpointConfig) { c.Channels = []string{"chat_{"} }, "webhooks[0].channels[0]", "channels[0]:"},
		{"a long timeout", func(c *EndpointConfig) { c.Timeout = 2 * time.Minute }, "webhooks[0].timeout", "timeout 2m0s: want more than 0 and at most 1m0s"},
		{"retry max under initial", func(c *EndpointConfig) { c.Retry = RetryConfig{Initial: time.Minute, Max: time.Second} }, "webhooks[0].retry.max", "shorter than retry.initial"},
		{"breaker failing at zero", func(c *EndpointConfig) { c.Breaker.Failures = -1 }, "webhooks[0].breaker.failures", "want 1 to 1000"},
		{"breaker open a day", func(c *EndpointConfig) { c.Breaker.Timeout = 24 * time.Hour }, "webhooks[0].breaker.timeout", "want 1s to 1h"},
		{"a huge batch", func(c *EndpointConfig) { c.Batch.Size = 5000 }, "webhooks[0].batch.size", "batch.size 5000: want 1 to 1000"},
		{"ordered and parallel", func(c *EndpointConfig) { c.Ordered, c.Parallel = true, 8 }, "webhooks[0].parallel", "one request in flight"},
		{"too parallel", func(c *EndpointConfig) { c.Parallel = 100 }, "webhooks[0].parallel", "parallel 100: want 1 to 64"},
		{"a signature header", func(c *EndpointConfig) { c.Headers = map[string]string{"Webhook-Signature": "x"} }, "webhooks[0].headers", "is set by Herald"},
		{"an unknown placeholder", func(c *EndpointConfig) { c.Body = `{"channel":"{channel}","who":{username}}` }, "webhooks[0].body", "unknown placeholder {username}"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			c := good()
			tc.edit(&c)
			_, err := Config{Endpoints: []EndpointConfig{c}}.Compile(env(nil))
			var ce *server.ConfigError
			if !errors.As(err, &ce) {
				t.Fatalf("Compile: %v, want a *server.ConfigError", err)
			}
			if ce.Keys[0] != tc.key || !strings.Contains(err.Error(), tc.message) || !strings.HasPrefix(err.Error(), "webhooks[0]: ") {
				t.Fatalf("Compile: keys %v, %q; want key %s and a message containing %q", ce.Keys, err, tc.key, tc.message)
			}
			if strings.Contains(err.Error(), "MfKQ9r8G") {
				t.Fatalf("the error %q shows a secret", err)
			}
		})
	}
}

func TestCompileReportsEveryProblemAtOnceAndDuplicateNames(t *testing.T) {
	t.Parallel()
	_, err := Config{Endpoints: []EndpointConfig{
		{Name: "a", URL: "https://example.com", Secret: specSecret, Events: []string{"message"}},
		{Name: "a", URL: "", Events: []string{"nope"}},
	}}.Compile(env(nil))
	text := err.Error()
	for _, want := range []string{`webhooks[1]: name "a" is already the name of webhooks[0]`, "webhooks[1]: url is required", "webhooks[1]: a secret is required", `webhooks[1]: events[0] "nope"`} {
		if !strings.Contains(text, want) {
			t.Errorf("the errors %q do not say %q", text, want)
		}
	}
}
