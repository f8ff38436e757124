package server

import (
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/heraldrt/herald/store"
)

// Config configures a Server. Zero fields take the defaults documented on
// each field (applied by withDefaults); validate reports every problem at
// once.
type Config struct {
	// Dev opens every channel to everyone. Only for a local start: the
	// binary refuses it on a non-loopback address.
	Dev bool
	// APIKey authenticates the backend as role system. Required unless Dev.
	APIKey string
	// JWTSecret verifies HS256 user tokens. Empty disables HS256.
	JWTSecret string
	// JWTPublicKeyFile is a PEM public key (RSA or ECDSA P-256) that
	// verifies RS256 or ES256 user tokens.
	JWTPublicKeyFile string
	// JWKSFile is a JSON Web Key Set file whose RSA and P-256 keys verify
	// RS256 and ES256 user tokens, chosen by the token's kid.
	JWKSFile string
	// JWTLeeway is the clock skew allowed on exp, nbf and iat. Default 5s
	// (0 means the default); at most 5 minutes.
	JWTLeeway time.Duration
	// AllowedOrigins are the origins browsers may call from (CORS). "*"
	// allows any. Default: none, or "*" in Dev.
	AllowedOrigins []string
	// History is the retention of every channel. Default 1,000 messages
	// and 24 hours; MaxCount 0 with HistoryOff keeps none.
	History    store.Retention
	HistoryOff bool

	// Rules are the channel rules (the channels: list), first match wins.
	// Without rules, only the API key may do anything (in Dev, everyone).
	Rules []RuleConfig
	// Tokens declares the roles and attributes user tokens carry (the
	// tokens: section), so that a principal naming anything else is a
	// typo caught at start-up rather than a rule that silently denies.
	Tokens TokenVocabulary

	// MaxDataBytes bounds a message's data, compacted. Default 64 KiB.
	MaxDataBytes int
	// MaxBodyBytes bounds a request body. Default 1 MiB.
	MaxBodyBytes int64
	// MaxChannelsPerRequest bounds the channels of one SSE or poll
	// request. Default 64.
	MaxChannelsPerRequest int
	// MaxSubscriptions bounds one session's subscriptions. Default 128.
	MaxSubscriptions int
	// MaxSessionsPerUser bounds the open sessions of one user (every
	// transport, long-poll sessions included, until they expire); past it a
	// new one is refused with 429, or, with CloseOldest, the user's oldest
	// session is closed (reason replaced). Default 32.
	MaxSessionsPerUser int
	CloseOldest        bool
	// OpsPerSecond and OpsBurst bound the ops of one WebSocket connection.
	// Defaults 50 and 100.
	OpsPerSecond float64
	OpsBurst     int
	// ConnectsPerSecond and ConnectsBurst bound the new sessions per client
	// IP (loopback exempt). Defaults 20 and 100.
	ConnectsPerSecond float64
	ConnectsBurst     int
	// MetricsToken, when set, is required (Bearer) to read /metrics.
	MetricsToken string
	// QueueMessages and QueueBytes bound a session's send queue; a client
	// that lets it overflow is disconnected as a slow consumer. Defaults
	// 4,096 messages and 4 MiB.
	QueueMessages int
	QueueBytes    int
	// CatchUpPage is how many stored messages a catch-up reads per step.
	// Default 512.
	CatchUpPage int
	// MaxPending bounds the live messages parked for a subscription while
	// it catches up; past it they are dropped and read from the store
	// instead. Default 4,096.
	MaxPending int

	// PresenceAttrs are the token attributes a member shows to others
	// (e.g. name, avatar). Default none.
	PresenceAttrs []string
	// PresenceGrace is how long a member (or an online user) whose last
	// session left is kept before herald.leave (offline): a quick
	// reconnect makes no leave/join pair. Default 5s.
	PresenceGrace time.Duration
	// SignalRate and SignalBurst bound a member's signals (typing…) per
	// channel, per second. Defaults 5 and 5.
	SignalRate  float64
	SignalBurst int
	// SignalMaxTTL bounds a signal's time to live. Default 1 minute.
	SignalMaxTTL time.Duration

	// Logger receives the server's logs. Default slog.Default().
	Logger *slog.Logger
	// Now is the clock, used everywhere the server reads the time.
	// Default time.Now.
	Now func() time.Time
}

func (c Config) withDefaults() Config {
	if c.History == (store.Retention{}) && !c.HistoryOff {
		c.History = store.DefaultRetention
	}
	if c.AllowedOrigins == nil && c.Dev {
		c.AllowedOrigins = []string{"*"}
	}
	setDefault(&c.MaxDataBytes, 64<<10)
	setDefault(&c.MaxBodyBytes, 1<<20)
	setDefault(&c.MaxChannelsPerRequest, 64)
	setDefault(&c.MaxSubscriptions, 128)
	setDefault(&c.MaxSessionsPerUser, 32)
	setDefault(&c.QueueMessages, 4096)
	setDefault(&c.QueueBytes, 4<<20)
	setDefault(&c.CatchUpPage, 512)
	setDefault(&c.MaxPending, 4096)
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.OpsPerSecond == 0 {
		c.OpsPerSecond = 50
	}
	if c.OpsBurst == 0 {
		c.OpsBurst = 100
	}
	if c.ConnectsPerSecond == 0 {
		c.ConnectsPerSecond = 20
	}
	if c.ConnectsBurst == 0 {
		c.ConnectsBurst = 100
	}
	if c.PresenceGrace == 0 {
		c.PresenceGrace = 5 * time.Second
	}
	if c.SignalRate == 0 {
		c.SignalRate = 5
	}
	if c.SignalBurst == 0 {
		c.SignalBurst = 5
	}
	if c.SignalMaxTTL == 0 {
		c.SignalMaxTTL = time.Minute
	}
	return c
}

func setDefault[T int | int64](p *T, v T) {
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
	for i, o := range c.AllowedOrigins {
		if o != "*" && !strings.HasPrefix(o, "http://") && !strings.HasPrefix(o, "https://") {
			bad([]string{fmt.Sprintf("cors.allowed_origins[%d]", i)}, "cors.allowed_origins[%d] %q: want \"*\" or an origin such as https://app.example.com", i, o)
		}
	}
	if c.History.MaxCount < 0 || c.History.MaxCount > 1_000_000 {
		bad([]string{"history.size"}, "history.size %d: want 0 to 1000000", c.History.MaxCount)
	}
	if c.History.MaxAge < 0 {
		bad([]string{"history.ttl"}, "history.ttl %s: must not be negative", c.History.MaxAge)
	}
	for _, f := range []struct {
		name  string
		value int64
	}{
		{"limits.max_data_bytes", int64(c.MaxDataBytes)},
		{"limits.max_body_bytes", c.MaxBodyBytes},
		{"limits.max_channels_per_request", int64(c.MaxChannelsPerRequest)},
		{"limits.max_subscriptions", int64(c.MaxSubscriptions)},
		{"limits.max_connections_per_user", int64(c.MaxSessionsPerUser)},
		{"limits.queue_messages", int64(c.QueueMessages)},
		{"limits.queue_bytes", int64(c.QueueBytes)},
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
		{"limits.ops_per_second", c.OpsPerSecond},
		{"limits.ops_burst", float64(c.OpsBurst)},
		{"limits.connections_per_ip_per_second", c.ConnectsPerSecond},
		{"limits.connections_per_ip_burst", float64(c.ConnectsBurst)},
		{"presence.signal_rate", c.SignalRate},
		{"presence.signal_burst", float64(c.SignalBurst)},
	} {
		if f.value < 0 {
			bad([]string{f.name}, "%s %g: must be positive", f.name, f.value)
		}
	}
	if c.PresenceGrace < 0 {
		bad([]string{"presence.grace"}, "presence.grace %s: must not be negative", c.PresenceGrace)
	}
	if c.SignalMaxTTL < 0 {
		bad([]string{"presence.signal_max_ttl"}, "presence.signal_max_ttl %s: must not be negative", c.SignalMaxTTL)
	}
	errs = append(errs, c.Tokens.check(c.PresenceAttrs)...)
	if _, err := compileRules(c.Rules, c.History, c.Tokens); err != nil {
		errs = append(errs, err)
	}
	if int64(c.MaxDataBytes) >= c.MaxBodyBytes {
		bad([]string{"limits.max_data_bytes", "limits.max_body_bytes"}, "limits.max_data_bytes (%d) must be below limits.max_body_bytes (%d)", c.MaxDataBytes, c.MaxBodyBytes)
	}
	if c.QueueBytes < c.MaxDataBytes*2 {
		bad([]string{"limits.queue_bytes", "limits.max_data_bytes"}, "limits.queue_bytes (%d) must hold at least two messages of limits.max_data_bytes (%d)", c.QueueBytes, c.MaxDataBytes)
	}
	return errors.Join(errs...)
}

// Retention returns the retention of each channel — its rule's history,
// or History — for store.Options.Retention. It fails when the rules do not
// compile.
func (c Config) Retention() (func(channel string) store.Retention, error) {
	c = c.withDefaults()
	rs, err := compileRules(c.Rules, c.History, c.Tokens)
	if err != nil {
		return nil, err
	}
	def := c.History
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
		h := HistoryConfig{Size: &c.History.MaxCount, TTL: c.History.MaxAge}
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
