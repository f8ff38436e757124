package server

import (
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/heraldrt/herald/store"
)

// Config configures a Server. It is also the core's part of the
// configuration file: fields with a yaml tag are settings, under the key
// of the tag (the composition root puts them at the top level of the
// file). Zero fields take the defaults documented on each field (applied
// by withDefaults, the one place they live); Validate reports every
// problem at once.
type Config struct {
	// Dev opens every channel to everyone. Only for a local start: the
	// binary refuses it on a non-loopback address.
	Dev bool `yaml:"dev"`
	// APIKey authenticates the backend as role system. Required unless Dev.
	APIKey string `yaml:"api_key"`
	// JWTSecret verifies HS256 user tokens. Empty disables HS256.
	JWTSecret string `yaml:"jwt_secret"`
	// JWTPublicKeyFile is a PEM public key (RSA or ECDSA P-256) that
	// verifies RS256 or ES256 user tokens.
	JWTPublicKeyFile string `yaml:"jwt_public_key"`
	// JWKSFile is a JSON Web Key Set file whose RSA and P-256 keys verify
	// RS256 and ES256 user tokens, chosen by the token's kid.
	JWKSFile string `yaml:"jwks"`
	// JWTLeeway is the clock skew allowed on exp, nbf and iat. Default 5s
	// (0 means the default); at most 5 minutes.
	JWTLeeway time.Duration `yaml:"jwt_leeway"`
	// MetricsToken, when set, is required (Bearer) to read /metrics.
	MetricsToken string `yaml:"metrics_token"`

	// Rules are the channel rules (the channels: list), first match wins.
	// Without rules, only the API key may do anything (in Dev, everyone).
	Rules []RuleConfig `yaml:"channels"`
	// Tokens declares the roles and attributes user tokens carry (the
	// tokens: section), so that a principal naming anything else is a
	// typo caught at start-up rather than a rule that silently denies.
	Tokens TokenVocabulary `yaml:"tokens"`

	CORS     CORSConfig     `yaml:"cors"`
	History  HistoryConfig  `yaml:"history"`
	Limits   Limits         `yaml:"limits"`
	Presence PresenceConfig `yaml:"presence"`

	// CatchUpPage is how many stored messages a catch-up reads per step.
	// Default 512.
	CatchUpPage int
	// MaxPending bounds the live messages parked for a subscription while
	// it catches up; past it they are dropped and read from the store
	// instead. Default 4,096.
	MaxPending int

	// Logger receives the server's logs. Default slog.Default().
	Logger *slog.Logger
	// Now is the clock, used everywhere the server reads the time.
	// Default time.Now.
	Now func() time.Time
}

// CORSConfig is the cors: section.
type CORSConfig struct {
	// AllowedOrigins are the origins browsers may call from (CORS and the
	// WebSocket origin check). "*" allows any. Default: none, or "*" in
	// Dev.
	AllowedOrigins []string `yaml:"allowed_origins"`
}

// RetentionConfig is how much of a channel's log is kept: a rule's
// history, or, in HistoryConfig, every channel's default.
type RetentionConfig struct {
	// Size is the number of newest messages kept; 0 keeps none (live
	// only). Nil: the default (1,000, or the history: section's).
	Size *int `yaml:"size"`
	// TTL drops messages older than it. 0: the default (24h, or the
	// history: section's).
	TTL time.Duration `yaml:"ttl"`
}

// HistoryConfig is the history: section: the retention of every channel
// whose rule sets none, and how often retention is applied.
type HistoryConfig struct {
	RetentionConfig `yaml:",inline"`
	// TrimInterval is how often the engine applies retention in the
	// background (the composition root hands it to the engine). Default
	// the engine's (30s).
	TrimInterval time.Duration `yaml:"trim_interval"`
}

// retention is the default retention of every channel.
func (h HistoryConfig) retention() store.Retention {
	r := store.DefaultRetention
	if h.Size != nil {
		r.MaxCount = *h.Size
	}
	if h.TTL != 0 {
		r.MaxAge = h.TTL
	}
	return r
}

// What to do with a new session of a user at Limits.MaxSessionsPerUser.
const (
	// RejectNew refuses the new session with 429 (the default).
	RejectNew = "reject"
	// CloseOldest closes the user's oldest session (reason replaced).
	CloseOldest = "close_oldest"
)

// Limits is the limits: section: the sizes, rates and caps that keep one
// client from hurting the others.
type Limits struct {
	// MaxDataBytes bounds a message's data, compacted. Default 64 KiB.
	MaxDataBytes int `yaml:"max_data_bytes"`
	// MaxBodyBytes bounds a request body. Default 1 MiB.
	MaxBodyBytes int64 `yaml:"max_body_bytes"`
	// MaxBatchMessages bounds the messages of one batch publish (POST
	// /api/publish with "messages"). Default 1,000.
	MaxBatchMessages int `yaml:"max_batch_messages"`
	// MaxChannelsPerRequest bounds the channels of one SSE or poll
	// request. Default 64.
	MaxChannelsPerRequest int `yaml:"max_channels_per_request"`
	// MaxSubscriptions bounds one session's subscriptions. Default 128.
	MaxSubscriptions int `yaml:"max_subscriptions"`
	// MaxSessionsPerUser bounds the open sessions of one user (every
	// transport, long-poll sessions included, until they expire); past it
	// OnConnectionLimit says what happens. Default 32.
	MaxSessionsPerUser int `yaml:"max_connections_per_user"`
	// OnConnectionLimit is RejectNew (429, the default) or CloseOldest.
	OnConnectionLimit string `yaml:"on_connection_limit"`
	// OpsPerSecond and OpsBurst bound the ops of one WebSocket connection.
	// Defaults 50 and 100.
	OpsPerSecond float64 `yaml:"ops_per_second"`
	OpsBurst     int     `yaml:"ops_burst"`
	// ConnectsPerSecond and ConnectsBurst bound the new sessions per client
	// IP (loopback exempt). Defaults 20 and 100.
	ConnectsPerSecond float64 `yaml:"connections_per_ip_per_second"`
	ConnectsBurst     int     `yaml:"connections_per_ip_burst"`
	// AuthFailuresPerSecond and AuthFailuresBurst bound the requests with
	// bad credentials per client IP (loopback exempt): past them, every
	// request from that IP that brings credentials gets 429 before they
	// are checked, so a flood of forged tokens costs no verification.
	// Defaults 10 and 50.
	AuthFailuresPerSecond float64 `yaml:"auth_failures_per_ip_per_second"`
	AuthFailuresBurst     int     `yaml:"auth_failures_per_ip_burst"`
	// QueueMessages and QueueBytes bound a session's send queue; a client
	// that lets it overflow is disconnected as a slow consumer. Defaults
	// 4,096 messages and 4 MiB.
	QueueMessages int `yaml:"queue_messages"`
	QueueBytes    int `yaml:"queue_bytes"`
	// ReadHeaderTimeout and IdleTimeout bound a client that is slow to send
	// its request headers, and a keep-alive connection left idle. The core
	// does not use them: the composition root applies them to the HTTP
	// listener. Defaults 10s and 2 minutes.
	ReadHeaderTimeout time.Duration `yaml:"read_header_timeout"`
	IdleTimeout       time.Duration `yaml:"idle_timeout"`
}

// PresenceConfig is the presence: section.
type PresenceConfig struct {
	// Attrs are the token attributes a member shows to others (e.g. name,
	// avatar). Default none.
	Attrs []string `yaml:"attrs"`
	// Grace is how long a member (or an online user) whose last session
	// left is kept before herald.leave (offline): a quick reconnect makes
	// no leave/join pair. Default 5s.
	Grace time.Duration `yaml:"grace"`
	// SignalRate and SignalBurst bound a member's signals (typing…) per
	// channel, per second. Defaults 5 and 5.
	SignalRate  float64 `yaml:"signal_rate"`
	SignalBurst int     `yaml:"signal_burst"`
	// SignalMaxTTL bounds a signal's time to live. Default 1 minute.
	SignalMaxTTL time.Duration `yaml:"signal_max_ttl"`
}

// WithDefaults returns c with every default applied: what the server runs
// with (a configuration check prints it).
func (c Config) WithDefaults() Config { return c.withDefaults() }

func (c Config) withDefaults() Config {
	if c.CORS.AllowedOrigins == nil && c.Dev {
		c.CORS.AllowedOrigins = []string{"*"}
	}
	l := &c.Limits
	setDefault(&l.MaxDataBytes, 64<<10)
	setDefault(&l.MaxBodyBytes, 1<<20)
	setDefault(&l.MaxBatchMessages, 1000)
	setDefault(&l.MaxChannelsPerRequest, 64)
	setDefault(&l.MaxSubscriptions, 128)
	setDefault(&l.MaxSessionsPerUser, 32)
	setDefault(&l.QueueMessages, 4096)
	setDefault(&l.QueueBytes, 4<<20)
	setDefault(&l.OpsPerSecond, 50)
	setDefault(&l.OpsBurst, 100)
	setDefault(&l.ConnectsPerSecond, 20)
	setDefault(&l.ConnectsBurst, 100)
	setDefault(&l.AuthFailuresPerSecond, 10)
	setDefault(&l.AuthFailuresBurst, 50)
	setDefault(&l.ReadHeaderTimeout, 10*time.Second)
	setDefault(&l.IdleTimeout, 2*time.Minute)
	if l.OnConnectionLimit == "" {
		l.OnConnectionLimit = RejectNew
	}
	p := &c.Presence
	setDefault(&p.Grace, 5*time.Second)
	setDefault(&p.SignalRate, 5)
	setDefault(&p.SignalBurst, 5)
	setDefault(&p.SignalMaxTTL, time.Minute)
	setDefault(&c.CatchUpPage, 512)
	setDefault(&c.MaxPending, 4096)
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	return c
}

func setDefault[T int | int64 | float64 | time.Duration](p *T, v T) {
	if *p == 0 {
		*p = v
	}
}

// Validate reports every problem of c (after defaults), each naming its
// configuration field, so a binary can check its configuration before it
// opens the store.
func (c Config) Validate() error {
	c = c.withDefaults()
	err := c.validate()
	if _, kerr := newVerifier(c); kerr != nil {
		err = errors.Join(err, kerr)
	}
	return err
}

// validate reports every problem of a defaulted Config, each a
// *ConfigError naming its settings.
func (c Config) validate() error {
	var errs []error
	bad := func(keys []string, format string, args ...any) {
		errs = append(errs, &ConfigError{Keys: keys, Err: fmt.Errorf(format, args...)})
	}
	if !c.Dev && c.APIKey == "" {
		bad([]string{"api_key"}, "api_key is required outside dev mode (set HERALD_API_KEY)")
	}
	if c.APIKey != "" && len(c.APIKey) < 16 {
		bad([]string{"api_key"}, "api_key is %d characters long; use at least 16", len(c.APIKey))
	}
	if c.JWTSecret != "" && len(c.JWTSecret) < 32 {
		bad([]string{"jwt_secret"}, "jwt_secret is %d bytes long; HS256 needs at least 32", len(c.JWTSecret))
	}
	if c.APIKey != "" && c.APIKey == c.JWTSecret {
		bad([]string{"jwt_secret", "api_key"}, "api_key and jwt_secret must differ")
	}
	for i, o := range c.CORS.AllowedOrigins {
		if o != "*" && !strings.HasPrefix(o, "http://") && !strings.HasPrefix(o, "https://") {
			bad([]string{fmt.Sprintf("cors.allowed_origins[%d]", i)}, "cors.allowed_origins[%d] %q: want \"*\" or an origin such as https://app.example.com", i, o)
		}
	}
	if h := c.History; h.Size != nil && (*h.Size < 0 || *h.Size > 1_000_000) {
		bad([]string{"history.size"}, "history.size %d: want 0 to 1000000", *h.Size)
	}
	if c.History.TTL < 0 {
		bad([]string{"history.ttl"}, "history.ttl %s: must not be negative", c.History.TTL)
	}
	if t := c.History.TrimInterval; t < 0 || (t > 0 && t < 10*time.Millisecond) {
		bad([]string{"history.trim_interval"}, "history.trim_interval %s: want at least 10ms", t)
	}
	switch c.Limits.OnConnectionLimit {
	case RejectNew, CloseOldest:
	default:
		bad([]string{"limits.on_connection_limit"}, "limits.on_connection_limit %q: want %s or %s", c.Limits.OnConnectionLimit, RejectNew, CloseOldest)
	}
	for _, d := range []struct {
		name  string
		value time.Duration
	}{{"limits.read_header_timeout", c.Limits.ReadHeaderTimeout}, {"limits.idle_timeout", c.Limits.IdleTimeout}} {
		if d.value < 0 {
			bad([]string{d.name}, "%s %s: must not be negative", d.name, d.value)
		}
	}
	for _, f := range []struct {
		name  string
		value int64
	}{
		{"limits.max_data_bytes", int64(c.Limits.MaxDataBytes)},
		{"limits.max_body_bytes", c.Limits.MaxBodyBytes},
		{"limits.max_batch_messages", int64(c.Limits.MaxBatchMessages)},
		{"limits.max_channels_per_request", int64(c.Limits.MaxChannelsPerRequest)},
		{"limits.max_subscriptions", int64(c.Limits.MaxSubscriptions)},
		{"limits.max_connections_per_user", int64(c.Limits.MaxSessionsPerUser)},
		{"limits.queue_messages", int64(c.Limits.QueueMessages)},
		{"limits.queue_bytes", int64(c.Limits.QueueBytes)},
		{"catch_up_page", int64(c.CatchUpPage)},
		{"max_pending", int64(c.MaxPending)},
	} {
		if f.value < 0 {
			bad([]string{f.name}, "%s %d: must be positive", f.name, f.value)
		}
	}
	for _, f := range []struct {
		name  string
		value float64
	}{
		{"limits.ops_per_second", c.Limits.OpsPerSecond},
		{"limits.ops_burst", float64(c.Limits.OpsBurst)},
		{"limits.connections_per_ip_per_second", c.Limits.ConnectsPerSecond},
		{"limits.connections_per_ip_burst", float64(c.Limits.ConnectsBurst)},
		{"limits.auth_failures_per_ip_per_second", c.Limits.AuthFailuresPerSecond},
		{"limits.auth_failures_per_ip_burst", float64(c.Limits.AuthFailuresBurst)},
		{"presence.signal_rate", c.Presence.SignalRate},
		{"presence.signal_burst", float64(c.Presence.SignalBurst)},
	} {
		if f.value < 0 {
			bad([]string{f.name}, "%s %g: must be positive", f.name, f.value)
		}
	}
	if c.Presence.Grace < 0 {
		bad([]string{"presence.grace"}, "presence.grace %s: must not be negative", c.Presence.Grace)
	}
	if c.Presence.SignalMaxTTL < 0 {
		bad([]string{"presence.signal_max_ttl"}, "presence.signal_max_ttl %s: must not be negative", c.Presence.SignalMaxTTL)
	}
	errs = append(errs, c.Tokens.check(c.Presence.Attrs)...)
	if _, err := compileRules(c.Rules, c.History.retention(), c.Tokens); err != nil {
		errs = append(errs, err)
	}
	if l := c.Limits; int64(l.MaxDataBytes) >= l.MaxBodyBytes {
		bad([]string{"limits.max_data_bytes", "limits.max_body_bytes"}, "limits.max_data_bytes (%d) must be below limits.max_body_bytes (%d)", l.MaxDataBytes, l.MaxBodyBytes)
	}
	if l := c.Limits; l.QueueBytes < l.MaxDataBytes*2 {
		bad([]string{"limits.queue_bytes", "limits.max_data_bytes"}, "limits.queue_bytes (%d) must hold at least two messages of limits.max_data_bytes (%d)", l.QueueBytes, l.MaxDataBytes)
	}
	return errors.Join(errs...)
}

// Retention returns the retention of each channel — its rule's history,
// or History — for store.Options.Retention. It fails when the rules do not
// compile.
func (c Config) Retention() (func(channel string) store.Retention, error) {
	c = c.withDefaults()
	def := c.History.retention()
	rs, err := compileRules(c.Rules, def, c.Tokens)
	if err != nil {
		return nil, err
	}
	return func(channel string) store.Retention { return rs.retention(channel, def) }, nil
}

// EffectiveRules returns the channel rules as the server applies them,
// for a configuration check: history_access and presence_access filled
// from subscribe where not given, and every rule's history filled from
// the server's where the rule leaves it out.
func (c Config) EffectiveRules() []RuleConfig {
	c = c.withDefaults()
	out := make([]RuleConfig, len(c.Rules))
	for i, r := range c.Rules {
		if r.HistoryAccess == nil {
			r.HistoryAccess = r.Subscribe
		}
		if r.PresenceAccess == nil {
			r.PresenceAccess = r.Subscribe
		}
		def := c.History.retention()
		h := RetentionConfig{Size: &def.MaxCount, TTL: def.MaxAge}
		if r.History != nil {
			if r.History.Size != nil {
				h.Size = r.History.Size
			}
			if r.History.TTL > 0 {
				h.TTL = r.History.TTL
			}
		}
		size := *h.Size
		h.Size = &size
		r.History = &h
		out[i] = r
	}
	return out
}
