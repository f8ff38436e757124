package webhooks

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/heraldrt/herald/server"
)

// Config is the webhooks: section, a list of endpoints.
type Config struct {
	Endpoints []EndpointConfig `yaml:"webhooks"`
}

// EndpointConfig is one endpoint as the file spells it. Zero values take
// the defaults documented on each field.
type EndpointConfig struct {
	// Name identifies the endpoint in the API, the metrics and the logs:
	// lower-case letters, digits, - and _. Required, unique.
	Name string `yaml:"name"`
	// URL is where events are POSTed: http or https, absolute. Required.
	URL string `yaml:"url"`
	// Secret signs every request ("whsec_…"). During a rotation, Secrets
	// holds the new and the old one and each request carries both
	// signatures. SecretEnv names an environment variable holding the
	// secret instead, so that it stays out of the file. Exactly one of the
	// three is required.
	Secret    string   `yaml:"secret"`
	Secrets   []string `yaml:"secrets"`
	SecretEnv string   `yaml:"secret_env"`
	// Events are the kinds sent (EventTypes). Required.
	Events []string `yaml:"events"`
	// Channels are patterns in the rule syntax; an event of a channel no
	// pattern matches is not sent. Default: every channel.
	Channels []string `yaml:"channels"`
	// MessageEvents, when set, sends only messages whose event name is in
	// it (message events only).
	MessageEvents []string `yaml:"message_events"`
	// Timeout bounds one request. Default 10s, at most 1m.
	Timeout time.Duration `yaml:"timeout"`
	// Retry is the retry schedule of a failed delivery.
	Retry RetryConfig `yaml:"retry"`
	// Batch sends up to Size events in one request, waiting at most
	// Timeout for them. Default size 1 (no batching), at most 1,000;
	// default timeout 1s.
	Batch BatchConfig `yaml:"batch"`
	// Ordered keeps one request in flight and the events in commit order.
	// Otherwise up to Parallel requests are in flight (default 4, at most
	// 64).
	Ordered  bool `yaml:"ordered"`
	Parallel int  `yaml:"parallel"`
	// Headers are added to every request (not the webhook-* ones).
	Headers map[string]string `yaml:"headers"`
	// Body, when set, is a template of the request body with placeholders
	// (Placeholders); by default the body is the event as JSON.
	Body string `yaml:"body"`
	// OutboxSize bounds the events waiting for this endpoint; past it the
	// oldest move to its dead letters. Default 100,000.
	OutboxSize int `yaml:"outbox_size"`
	// Breaker is the endpoint's circuit breaker.
	Breaker BreakerConfig `yaml:"breaker"`
}

// BreakerConfig is an endpoint's circuit breaker: Failures attempts in a
// row failing open it; no request goes out for Timeout; then one probe
// decides whether it closes or opens again.
type BreakerConfig struct {
	// Failures defaults to 5; Timeout to 30s, from 1s to 1h.
	Failures int           `yaml:"failures"`
	Timeout  time.Duration `yaml:"timeout"`
}

// RetryConfig is an endpoint's retry schedule: the first wait is Initial,
// each next one doubles (with jitter) up to Max, and a delivery is given
// up (dead-lettered) once it has failed for For.
type RetryConfig struct {
	// Initial defaults to 1s, Max to 10m, For to 24h.
	Initial time.Duration `yaml:"initial"`
	Max     time.Duration `yaml:"max"`
	For     time.Duration `yaml:"for"`
}

// BatchConfig groups events into one request.
type BatchConfig struct {
	Size    int           `yaml:"size"`
	Timeout time.Duration `yaml:"timeout"`
}

// The event types an endpoint may ask for.
const (
	EventMessage    = "message"    // a message was stored in a channel
	EventConnect    = "connect"    // a user's session started
	EventDisconnect = "disconnect" // a user's session ended
	EventJoin       = "join"       // a user joined a channel's presence
	EventLeave      = "leave"      // a user left it
	EventState      = "state"      // a user's short-lived state (typing) changed
	EventOccupied   = "occupied"   // a channel got its first subscriber
	EventVacated    = "vacated"    // a channel lost its last subscriber
)

// EventTypes lists every event type, in the order the docs give them.
var EventTypes = []string{EventMessage, EventConnect, EventDisconnect, EventJoin, EventLeave, EventState, EventOccupied, EventVacated}

// Placeholders are the names a body template may use, written {name}.
var Placeholders = []string{"type", "channel", "event", "data", "id", "timestamp", "user", "session"}

// Defaults and bounds of an endpoint's settings.
const (
	DefaultTimeout      = 10 * time.Second
	MaxTimeout          = time.Minute
	DefaultRetryInitial = time.Second
	DefaultRetryMax     = 10 * time.Minute
	DefaultRetryFor     = 24 * time.Hour
	DefaultBatchTimeout = time.Second
	MaxBatchSize        = 1000
	DefaultParallel     = 4
	MaxParallel         = 64
	DefaultOutboxSize   = 100_000
)

// Endpoint is an endpoint ready to use: its settings with defaults
// applied, its secrets parsed and its patterns compiled.
type Endpoint struct {
	EndpointConfig
	URLParsed *url.URL
	Keys      []Secret
	Patterns  []server.ChannelPattern
}

// Wants reports whether the endpoint takes an event of type typ in
// channel (with message event name, for messages).
func (e *Endpoint) Wants(typ, channel, event string) bool {
	if !slices.Contains(e.Events, typ) {
		return false
	}
	if typ == EventMessage && len(e.MessageEvents) > 0 && !slices.Contains(e.MessageEvents, event) {
		return false
	}
	if len(e.Patterns) == 0 || channel == "" {
		return true // connect and disconnect have no channel
	}
	for _, p := range e.Patterns {
		if p.Match(channel) {
			return true
		}
	}
	return false
}

var (
	nameRE        = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]{0,63}$`)
	placeholderRE = regexp.MustCompile(`\{([a-z_]+)\}`) // JSON around them has quotes
)

// Compile checks every endpoint and returns them ready to use, or every
// problem at once, each a *server.ConfigError keyed by its setting
// (webhooks[2].url) so that it is shown with its line. getenv reads the
// variables SecretEnv names.
func (c Config) Compile(getenv func(string) (string, bool)) ([]*Endpoint, error) {
	var errs []error
	names := map[string]int{}
	out := make([]*Endpoint, 0, len(c.Endpoints))
	for i, ec := range c.Endpoints {
		e, problems := compileEndpoint(i, ec, getenv)
		errs = append(errs, problems...)
		if ec.Name != "" {
			if first, dup := names[ec.Name]; dup {
				errs = append(errs, configError(i, "name", "name %q is already the name of webhooks[%d]", ec.Name, first))
			} else {
				names[ec.Name] = i
			}
		}
		out = append(out, e)
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return out, nil
}

func configError(i int, key, format string, args ...any) error {
	return &server.ConfigError{Keys: []string{fmt.Sprintf("webhooks[%d].%s", i, key)},
		Err: fmt.Errorf("webhooks[%d]: "+format, append([]any{i}, args...)...)}
}

func compileEndpoint(i int, c EndpointConfig, getenv func(string) (string, bool)) (*Endpoint, []error) {
	var errs []error
	bad := func(key, format string, args ...any) { errs = append(errs, configError(i, key, format, args...)) }
	e := &Endpoint{}

	if !nameRE.MatchString(c.Name) {
		bad("name", "name %q: want 1 to 64 lower-case letters, digits, - or _, starting with a letter or digit", c.Name)
	}
	if u, err := url.Parse(c.URL); c.URL == "" {
		bad("url", "url is required")
	} else if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		bad("url", "url %q: want an absolute http:// or https:// URL", c.URL)
	} else {
		e.URLParsed = u
	}

	var texts []string
	var from string
	switch given := btoi(c.Secret != "") + btoi(len(c.Secrets) > 0) + btoi(c.SecretEnv != ""); {
	case given == 0:
		bad("secret", "a secret is required (secret, secrets during a rotation, or secret_env naming an environment variable)")
	case given > 1:
		bad("secret", "give one of secret, secrets and secret_env")
	case c.Secret != "":
		texts, from = []string{c.Secret}, "secret"
	case len(c.Secrets) > 0:
		texts, from = c.Secrets, "secrets"
		if len(c.Secrets) > 2 {
			bad("secrets", "secrets: at most two (the new one and the old one, during a rotation), got %d", len(c.Secrets))
		}
	default:
		v, ok := getenv(c.SecretEnv)
		if !ok || v == "" {
			bad("secret_env", "secret_env: the environment variable %s is not set", c.SecretEnv)
		}
		texts, from = []string{v}, "secret_env"
	}
	for j, t := range texts {
		if t == "" {
			continue // reported above
		}
		s, err := ParseSecret(t)
		if err != nil {
			key := from
			if from == "secrets" {
				key = fmt.Sprintf("secrets[%d]", j)
			}
			bad(key, "%s: %v", key, err)
			continue
		}
		e.Keys = append(e.Keys, s)
	}

	if len(c.Events) == 0 {
		bad("events", "events is required: some of %s", strings.Join(EventTypes, ", "))
	}
	for j, ev := range c.Events {
		if !slices.Contains(EventTypes, ev) {
			bad(fmt.Sprintf("events[%d]", j), "events[%d] %q: want one of %s", j, ev, strings.Join(EventTypes, ", "))
		}
	}
	if len(c.MessageEvents) > 0 && !slices.Contains(c.Events, EventMessage) {
		bad("message_events", "message_events filters messages, but events does not list message")
	}
	for j, src := range c.Channels {
		p, err := server.CompileChannelPattern(src)
		if err != nil {
			bad(fmt.Sprintf("channels[%d]", j), "channels[%d]: %v", j, err)
			continue
		}
		e.Patterns = append(e.Patterns, p)
	}

	if c.Timeout == 0 {
		c.Timeout = DefaultTimeout
	}
	if c.Timeout < 0 || c.Timeout > MaxTimeout {
		bad("timeout", "timeout %s: want more than 0 and at most %s", c.Timeout, MaxTimeout)
	}
	if c.Breaker.Failures == 0 {
		c.Breaker.Failures = BreakerFailures
	}
	if c.Breaker.Failures < 1 || c.Breaker.Failures > 1000 {
		bad("breaker.failures", "breaker.failures %d: want 1 to 1000", c.Breaker.Failures)
	}
	if c.Breaker.Timeout == 0 {
		c.Breaker.Timeout = BreakerTimeout
	}
	if c.Breaker.Timeout < time.Second || c.Breaker.Timeout > time.Hour {
		bad("breaker.timeout", "breaker.timeout %s: want 1s to 1h", c.Breaker.Timeout)
	}
	if c.Retry.Initial == 0 {
		c.Retry.Initial = DefaultRetryInitial
	}
	if c.Retry.Max == 0 {
		c.Retry.Max = max(DefaultRetryMax, c.Retry.Initial)
	}
	if c.Retry.For == 0 {
		c.Retry.For = DefaultRetryFor
	}
	switch {
	case c.Retry.Initial < 0 || c.Retry.Max < 0 || c.Retry.For < 0:
		bad("retry", "retry: initial, max and for must not be negative")
	case c.Retry.Max < c.Retry.Initial:
		bad("retry.max", "retry.max %s is shorter than retry.initial %s", c.Retry.Max, c.Retry.Initial)
	}
	if c.Batch.Size == 0 {
		c.Batch.Size = 1
	}
	if c.Batch.Size < 1 || c.Batch.Size > MaxBatchSize {
		bad("batch.size", "batch.size %d: want 1 to %d", c.Batch.Size, MaxBatchSize)
	}
	if c.Batch.Timeout == 0 {
		c.Batch.Timeout = DefaultBatchTimeout
	}
	if c.Batch.Timeout < 0 {
		bad("batch.timeout", "batch.timeout %s: must not be negative", c.Batch.Timeout)
	}
	switch {
	case c.Ordered && c.Parallel > 1:
		bad("parallel", "parallel %d: an ordered endpoint has one request in flight", c.Parallel)
	case c.Ordered:
		c.Parallel = 1
	case c.Parallel == 0:
		c.Parallel = DefaultParallel
	case c.Parallel < 0 || c.Parallel > MaxParallel:
		bad("parallel", "parallel %d: want 1 to %d", c.Parallel, MaxParallel)
	}
	for name := range c.Headers {
		if strings.HasPrefix(strings.ToLower(name), "webhook-") || http.CanonicalHeaderKey(name) == "Content-Type" {
			bad("headers", "headers: %q is set by Herald", name)
		}
	}
	for _, m := range placeholderRE.FindAllStringSubmatch(c.Body, -1) {
		if !slices.Contains(Placeholders, m[1]) {
			bad("body", "body: unknown placeholder {%s}; want one of {%s}", m[1], strings.Join(Placeholders, "}, {"))
		}
	}
	if c.Body != "" && len(errs) == 0 {
		sample := Event{ID: "evt_1", Type: EventMessage, Time: time.Unix(0, 0), Channel: "c", Name: "n", User: "u", Session: "s", Data: []byte(`{"x":1}`)}
		if out := render(c.Body, sample); !json.Valid([]byte(out)) {
			bad("body", "body: with its placeholders filled it is not JSON (write {data} bare and the others in quotes, as in \"channel\":\"{channel}\"): %s", out)
		}
	}
	if c.OutboxSize == 0 {
		c.OutboxSize = DefaultOutboxSize
	}
	if c.OutboxSize < 0 {
		bad("outbox_size", "outbox_size %d: must not be negative", c.OutboxSize)
	}
	e.EndpointConfig = c
	return e, errs
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}
