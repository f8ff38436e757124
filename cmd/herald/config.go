package main

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/heraldrt/herald/internal/configfile"
	"github.com/heraldrt/herald/server"
	"github.com/heraldrt/herald/store"
	"github.com/heraldrt/herald/transports/longpoll"
	"github.com/heraldrt/herald/transports/sse"
	"github.com/heraldrt/herald/transports/ws"
)

// fileConfig is the whole configuration, as the YAML file spells it.
// Flags and HERALD_* variables override single fields of it.
type fileConfig struct {
	Addr              string         `yaml:"addr"`
	DataDir           string         `yaml:"data_dir"`
	APIKey            string         `yaml:"api_key"`
	JWTSecret         string         `yaml:"jwt_secret"`
	JWTPublicKey      string         `yaml:"jwt_public_key"`
	JWKS              string         `yaml:"jwks"`
	JWTLeeway         time.Duration  `yaml:"jwt_leeway"`
	Channels          []ruleFile     `yaml:"channels"`
	Tokens            tokensConfig   `yaml:"tokens"`
	Dev               bool           `yaml:"dev"`
	Durability        string         `yaml:"durability"`
	IdempotencyWindow time.Duration  `yaml:"idempotency_window"`
	ShutdownTimeout   time.Duration  `yaml:"shutdown_timeout"`
	Log               logConfig      `yaml:"log"`
	CORS              corsConfig     `yaml:"cors"`
	History           historyConfig  `yaml:"history"`
	SSE               sseConfig      `yaml:"sse"`
	WS                wsConfig       `yaml:"ws"`
	Poll              pollConfig     `yaml:"poll"`
	Presence          presenceConfig `yaml:"presence"`
	// PprofAddr, when set, serves Go's profiler on this loopback address.
	PprofAddr string `yaml:"pprof_addr"`
	// MetricsToken, when set, is required (Bearer) to read /metrics.
	MetricsToken string       `yaml:"metrics_token"`
	Limits       limitsConfig `yaml:"limits"`
}

// tokensConfig declares the vocabulary of user tokens: the roles and
// attributes the channel rules may name (server.TokenVocabulary).
type tokensConfig struct {
	Roles []string `yaml:"roles"`
	Attrs []string `yaml:"attrs"`
}

type logConfig struct {
	Level  string `yaml:"level"`  // debug, info, warn, error
	Format string `yaml:"format"` // text, json
}

type corsConfig struct {
	AllowedOrigins []string `yaml:"allowed_origins"`
}

type historyConfig struct {
	Size *int          `yaml:"size"`
	TTL  time.Duration `yaml:"ttl"`
	// TrimInterval is how often retention is applied in the background.
	TrimInterval time.Duration `yaml:"trim_interval"`
}

type sseConfig struct {
	Coalesce     time.Duration `yaml:"coalesce"`
	Heartbeat    time.Duration `yaml:"heartbeat"`
	Retry        time.Duration `yaml:"retry"`
	WriteTimeout time.Duration `yaml:"write_timeout"`
}

type presenceConfig struct {
	Attrs        []string      `yaml:"attrs"`
	Grace        time.Duration `yaml:"grace"`
	SignalRate   float64       `yaml:"signal_rate"`
	SignalBurst  int           `yaml:"signal_burst"`
	SignalMaxTTL time.Duration `yaml:"signal_max_ttl"`
}

type pollConfig struct {
	DefaultTimeout time.Duration `yaml:"default_timeout"`
	MaxTimeout     time.Duration `yaml:"max_timeout"`
	Grace          time.Duration `yaml:"grace"`
	MaxMessages    int           `yaml:"max_messages"`
}

type wsConfig struct {
	Coalesce      time.Duration `yaml:"coalesce"`
	PingInterval  time.Duration `yaml:"ping_interval"`
	PongTimeout   time.Duration `yaml:"pong_timeout"`
	WriteTimeout  time.Duration `yaml:"write_timeout"`
	AuthTimeout   time.Duration `yaml:"auth_timeout"`
	MaxFrameBytes int64         `yaml:"max_frame_bytes"`
	MaxBatch      int           `yaml:"max_batch"`
	Compression   bool          `yaml:"compression"`
}

type limitsConfig struct {
	MaxDataBytes          int           `yaml:"max_data_bytes"`
	MaxBodyBytes          int64         `yaml:"max_body_bytes"`
	MaxChannelsPerRequest int           `yaml:"max_channels_per_request"`
	MaxSubscriptions      int           `yaml:"max_subscriptions"`
	MaxConnectionsPerUser int           `yaml:"max_connections_per_user"`
	OnConnectionLimit     string        `yaml:"on_connection_limit"`
	OpsPerSecond          float64       `yaml:"ops_per_second"`
	OpsBurst              int           `yaml:"ops_burst"`
	ConnectsPerIPPerSec   float64       `yaml:"connections_per_ip_per_second"`
	ConnectsPerIPBurst    int           `yaml:"connections_per_ip_burst"`
	IdleTimeout           time.Duration `yaml:"idle_timeout"`
	QueueMessages         int           `yaml:"queue_messages"`
	QueueBytes            int           `yaml:"queue_bytes"`
	ReadHeaderTimeout     time.Duration `yaml:"read_header_timeout"`
}

// serveConfig is everything `herald serve` needs, resolved.
type serveConfig struct {
	file       fileConfig
	server     server.Config
	store      store.Options
	sse        sse.Options
	ws         ws.Options
	poll       longpoll.Options
	devKeys    bool // the API key or JWT secret was generated for dev mode
	configPath string
	// sources says where each setting came from (file line, flag,
	// variable), for herald config check.
	sources *configfile.Sources
}

// serveFlags are the flags of `herald serve` (and `herald config check`).
// Each sets one setting of the file, naming it by its key.
type serveFlags struct {
	config                       *string
	addr, dataDir, apiKey        *string
	jwtSecret, jwtPubKey, jwks   *string
	dev                          *bool
	durability, logLevel         *string
	logFormat, origins, pprofAdr *string
}

func registerServeFlags(fs *flag.FlagSet) *serveFlags {
	return &serveFlags{
		config:     fs.String("config", "", "YAML configuration file (env HERALD_CONFIG)"),
		addr:       fs.String("addr", "", "listen address host:port (env HERALD_ADDR; default 127.0.0.1:8080)"),
		dataDir:    fs.String("data-dir", "", "data directory (env HERALD_DATA_DIR; default ./data)"),
		apiKey:     fs.String("api-key", "", "API key of the backend, role system (env HERALD_API_KEY)"),
		jwtSecret:  fs.String("jwt-secret", "", "HS256 secret of user tokens (env HERALD_JWT_SECRET)"),
		jwtPubKey:  fs.String("jwt-public-key", "", "PEM public key verifying RS256/ES256 user tokens (env HERALD_JWT_PUBLIC_KEY)"),
		jwks:       fs.String("jwks", "", "JWKS file verifying RS256/ES256 user tokens (env HERALD_JWKS)"),
		dev:        fs.Bool("dev", false, "dev mode: loopback only, every channel open, generated keys printed"),
		durability: fs.String("durability", "", `"sync" (fsync every group commit, default) or "none" (env HERALD_DURABILITY)`),
		logLevel:   fs.String("log-level", "", "debug, info, warn or error (env HERALD_LOG_LEVEL)"),
		logFormat:  fs.String("log-format", "", "text or json (env HERALD_LOG_FORMAT)"),
		origins:    fs.String("allowed-origins", "", "comma-separated CORS origins, or * (env HERALD_ALLOWED_ORIGINS)"),
		pprofAdr:   fs.String("pprof-addr", "", "serve Go's profiler (/debug/pprof/) on this loopback host:port"),
	}
}

// loadServeConfig parses the flags of `herald serve` and resolves the
// configuration (see resolveConfig); dev mode's credentials are kept in
// the data folder.
func loadServeConfig(args []string, lookupEnv func(string) (string, bool), stderr io.Writer) (serveConfig, error) {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	fs.SetOutput(stderr)
	flags := registerServeFlags(fs)
	if err := fs.Parse(args); err != nil {
		return serveConfig{}, err
	}
	if fs.NArg() > 0 {
		return serveConfig{}, fmt.Errorf("serve: unexpected argument %q", fs.Arg(0))
	}
	return resolveConfig(fs, flags, lookupEnv, devCredentials)
}

// resolveConfig resolves the configuration: defaults, then the YAML file,
// then HERALD_* variables, then flags — each layer applying only what it
// sets — and validates all of it as serve will use it, without opening
// anything. Every problem is reported at once (configfile.Problems), each
// at the line of the file, or naming the flag or variable, that set it.
// devCreds supplies dev mode's generated credentials.
func resolveConfig(fs *flag.FlagSet, flags *serveFlags, lookupEnv func(string) (string, bool), devCreds func(dataDir string) (devKeys, error)) (serveConfig, error) {
	var sc serveConfig
	fc := &sc.file
	src := configfile.NewSources()
	var problems configfile.Problems
	sc.configPath = *flags.config
	if sc.configPath == "" {
		sc.configPath, _ = lookupEnv("HERALD_CONFIG")
	}
	if sc.configPath != "" {
		b, err := os.ReadFile(sc.configPath)
		if err != nil {
			return serveConfig{}, fmt.Errorf("config: %w", err)
		}
		src, problems = configfile.Decode(sc.configPath, b, fc)
	}
	sc.sources = src

	// errs are the validation errors, each naming its setting's key so
	// that it is shown where the value came from.
	var errs []error
	bad := func(key, format string, args ...any) {
		errs = append(errs, &server.ConfigError{Keys: []string{key}, Err: fmt.Errorf(format, args...)})
	}

	// Environment: only the variables that are set.
	envString := func(name, key string, dst *string) {
		if v, ok := lookupEnv(name); ok {
			*dst = v
			src.Set(key, configfile.Env(name))
		}
	}
	envString("HERALD_ADDR", "addr", &fc.Addr)
	envString("HERALD_DATA_DIR", "data_dir", &fc.DataDir)
	envString("HERALD_API_KEY", "api_key", &fc.APIKey)
	envString("HERALD_JWT_SECRET", "jwt_secret", &fc.JWTSecret)
	envString("HERALD_JWT_PUBLIC_KEY", "jwt_public_key", &fc.JWTPublicKey)
	envString("HERALD_JWKS", "jwks", &fc.JWKS)
	envString("HERALD_METRICS_TOKEN", "metrics_token", &fc.MetricsToken)
	envString("HERALD_DURABILITY", "durability", &fc.Durability)
	envString("HERALD_LOG_LEVEL", "log.level", &fc.Log.Level)
	envString("HERALD_LOG_FORMAT", "log.format", &fc.Log.Format)
	if v, ok := lookupEnv("HERALD_DEV"); ok {
		src.Set("dev", configfile.Env("HERALD_DEV"))
		b, err := strconv.ParseBool(v)
		if err != nil {
			bad("dev", "dev %q: want true or false", v)
		}
		fc.Dev = b
	}
	if v, ok := lookupEnv("HERALD_ALLOWED_ORIGINS"); ok {
		fc.CORS.AllowedOrigins = splitList(v)
		src.Set("cors.allowed_origins", configfile.Env("HERALD_ALLOWED_ORIGINS"))
	}

	// Flags: only the ones given.
	fs.Visit(func(f *flag.Flag) {
		key := ""
		switch f.Name {
		case "addr":
			fc.Addr, key = *flags.addr, "addr"
		case "data-dir":
			fc.DataDir, key = *flags.dataDir, "data_dir"
		case "api-key":
			fc.APIKey, key = *flags.apiKey, "api_key"
		case "jwt-secret":
			fc.JWTSecret, key = *flags.jwtSecret, "jwt_secret"
		case "jwt-public-key":
			fc.JWTPublicKey, key = *flags.jwtPubKey, "jwt_public_key"
		case "jwks":
			fc.JWKS, key = *flags.jwks, "jwks"
		case "dev":
			fc.Dev, key = *flags.dev, "dev"
		case "durability":
			fc.Durability, key = *flags.durability, "durability"
		case "log-level":
			fc.Log.Level, key = *flags.logLevel, "log.level"
		case "log-format":
			fc.Log.Format, key = *flags.logFormat, "log.format"
		case "allowed-origins":
			fc.CORS.AllowedOrigins, key = splitList(*flags.origins), "cors.allowed_origins"
		case "pprof-addr":
			fc.PprofAddr, key = *flags.pprofAdr, "pprof_addr"
		}
		if key != "" {
			src.Set(key, configfile.Flag("--"+f.Name))
		}
	})

	fc.applyDefaults()
	switch fc.Limits.OnConnectionLimit {
	case "", "reject", "close_oldest":
	default:
		bad("limits.on_connection_limit", "limits.on_connection_limit %q: want reject or close_oldest", fc.Limits.OnConnectionLimit)
	}
	for _, d := range []struct {
		key string
		v   time.Duration
	}{
		{"shutdown_timeout", fc.ShutdownTimeout}, {"limits.idle_timeout", fc.Limits.IdleTimeout},
		{"limits.read_header_timeout", fc.Limits.ReadHeaderTimeout}, {"idempotency_window", fc.IdempotencyWindow},
	} {
		if d.v < 0 {
			bad(d.key, "%s %s: must not be negative", d.key, d.v)
		}
	}

	if _, _, err := net.SplitHostPort(fc.Addr); err != nil {
		bad("addr", "addr %q: want host:port, such as 127.0.0.1:8080 or :8080", fc.Addr)
	} else if fc.Dev && !isLoopback(fc.Addr) {
		bad("addr", "addr %q: dev mode opens every channel to everyone, so it only listens on a loopback address (127.0.0.1:PORT or [::1]:PORT)", fc.Addr)
	}
	if fc.PprofAddr != "" && !isLoopback(fc.PprofAddr) {
		bad("pprof_addr", "pprof_addr %q: the profiler only listens on a loopback address", fc.PprofAddr)
	}
	if _, err := parseLevel(fc.Log.Level); err != nil {
		bad("log.level", "%v", err)
	}
	if f := fc.Log.Format; f != "" && f != "text" && f != "json" {
		bad("log.format", "log.format %q: want text or json", f)
	}
	dur, err := store.ParseDurability(fc.Durability)
	if err != nil {
		bad("durability", "%v", err)
	}
	if fc.Dev && (fc.APIKey == "" || fc.JWTSecret == "") {
		keys, err := devCreds(fc.DataDir)
		if err != nil {
			bad("data_dir", "%v", err)
		}
		if fc.APIKey == "" {
			fc.APIKey, sc.devKeys = keys.APIKey, true
		}
		if fc.JWTSecret == "" {
			fc.JWTSecret, sc.devKeys = keys.JWTSecret, true
		}
	}

	sc.server = server.Config{
		Dev:                   fc.Dev,
		APIKey:                fc.APIKey,
		JWTSecret:             fc.JWTSecret,
		JWTPublicKeyFile:      fc.JWTPublicKey,
		JWKSFile:              fc.JWKS,
		JWTLeeway:             fc.JWTLeeway,
		Rules:                 rulesOf(fc.Channels),
		Tokens:                server.TokenVocabulary{Roles: fc.Tokens.Roles, Attrs: fc.Tokens.Attrs},
		AllowedOrigins:        fc.CORS.AllowedOrigins,
		MaxDataBytes:          fc.Limits.MaxDataBytes,
		MaxBodyBytes:          fc.Limits.MaxBodyBytes,
		MaxChannelsPerRequest: fc.Limits.MaxChannelsPerRequest,
		MaxSubscriptions:      fc.Limits.MaxSubscriptions,
		MaxSessionsPerUser:    fc.Limits.MaxConnectionsPerUser,
		CloseOldest:           fc.Limits.OnConnectionLimit == "close_oldest",
		OpsPerSecond:          fc.Limits.OpsPerSecond,
		OpsBurst:              fc.Limits.OpsBurst,
		ConnectsPerSecond:     fc.Limits.ConnectsPerIPPerSec,
		ConnectsBurst:         fc.Limits.ConnectsPerIPBurst,
		MetricsToken:          fc.MetricsToken,
		PresenceAttrs:         fc.Presence.Attrs,
		PresenceGrace:         fc.Presence.Grace,
		SignalRate:            fc.Presence.SignalRate,
		SignalBurst:           fc.Presence.SignalBurst,
		SignalMaxTTL:          fc.Presence.SignalMaxTTL,
		QueueMessages:         fc.Limits.QueueMessages,
		QueueBytes:            fc.Limits.QueueBytes,
	}
	if t := fc.History.TrimInterval; t < 0 || (t > 0 && t < 10*time.Millisecond) {
		bad("history.trim_interval", "history.trim_interval %s: want at least 10ms", t)
	}
	if h := fc.History; h.Size != nil || h.TTL != 0 {
		sc.server.History = store.DefaultRetention
		if h.Size != nil {
			sc.server.History.MaxCount = *h.Size
			sc.server.HistoryOff = *h.Size == 0
		}
		if h.TTL != 0 {
			sc.server.History.MaxAge = h.TTL
		}
	}
	sc.poll = longpoll.Options{
		DefaultTimeout: fc.Poll.DefaultTimeout,
		MaxTimeout:     fc.Poll.MaxTimeout,
		Grace:          fc.Poll.Grace,
		MaxMessages:    fc.Poll.MaxMessages,
	}
	sc.ws = ws.Options{
		Coalesce:      fc.WS.Coalesce,
		PingInterval:  fc.WS.PingInterval,
		PongTimeout:   fc.WS.PongTimeout,
		WriteTimeout:  fc.WS.WriteTimeout,
		AuthTimeout:   fc.WS.AuthTimeout,
		MaxFrameBytes: fc.WS.MaxFrameBytes,
		MaxBatch:      fc.WS.MaxBatch,
		Compression:   fc.WS.Compression,
	}
	sc.sse = sse.Options{
		Coalesce:     fc.SSE.Coalesce,
		Heartbeat:    fc.SSE.Heartbeat,
		Retry:        fc.SSE.Retry,
		WriteTimeout: fc.SSE.WriteTimeout,
	}
	errs = append(errs, sc.server.Validate(), sc.sse.Validate(), sc.ws.Validate(), sc.poll.Validate())
	problems = append(problems, src.Locate(errors.Join(errs...))...)
	if len(problems) > 0 {
		return serveConfig{}, problemsError(problems.Sorted())
	}

	retention, err := sc.server.Retention()
	if err != nil {
		return serveConfig{}, err // Validate compiled the same rules
	}
	sc.store = store.Options{
		Dir:            fc.DataDir,
		Durability:     dur,
		IdempotencyTTL: fc.IdempotencyWindow,
		TrimInterval:   fc.History.TrimInterval,
		Retention:      retention,
	}
	return sc, nil
}

// applyDefaults sets the defaults of the binary's own settings; the
// others are applied by the packages they configure.
func (fc *fileConfig) applyDefaults() {
	if fc.Addr == "" {
		fc.Addr = "127.0.0.1:8080"
	}
	if fc.DataDir == "" {
		fc.DataDir = "./data"
	}
	if fc.ShutdownTimeout == 0 {
		fc.ShutdownTimeout = 10 * time.Second
	}
	if fc.Limits.IdleTimeout == 0 {
		fc.Limits.IdleTimeout = 2 * time.Minute
	}
	if fc.Limits.ReadHeaderTimeout == 0 {
		fc.Limits.ReadHeaderTimeout = 10 * time.Second
	}
	if fc.IdempotencyWindow == 0 {
		fc.IdempotencyWindow = 24 * time.Hour
	}
}

// problemsError returns the problems as the error the commands print:
// one problem a line, under a count when there are several.
func problemsError(ps configfile.Problems) error {
	if len(ps) == 1 {
		return ps
	}
	return &countedProblems{ps}
}

// countedProblems prints "N problems in the configuration:" and then one
// problem a line; errors.As finds the configfile.Problems.
type countedProblems struct{ configfile.Problems }

func (c *countedProblems) Error() string {
	return fmt.Sprintf("%d problems in the configuration:\n%s", len(c.Problems), c.Problems.Error())
}

func (c *countedProblems) Unwrap() error { return c.Problems }

func splitList(v string) []string {
	var out []string
	for _, s := range strings.Split(v, ",") {
		if s = strings.TrimSpace(s); s != "" {
			out = append(out, s)
		}
	}
	return out
}

func isLoopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

func parseLevel(s string) (slog.Level, error) {
	switch strings.ToLower(s) {
	case "", "info":
		return slog.LevelInfo, nil
	case "debug":
		return slog.LevelDebug, nil
	case "warn", "warning":
		return slog.LevelWarn, nil
	case "error":
		return slog.LevelError, nil
	}
	return 0, fmt.Errorf("log.level %q: want debug, info, warn or error", s)
}

// devKeyFile holds the credentials dev mode generated, in the data folder,
// so that a restarted dev server keeps its API key and the tokens minted
// with its secret stay valid.
const devKeyFile = "dev-credentials.json"

type devKeys struct {
	APIKey    string `json:"api_key"`
	JWTSecret string `json:"jwt_secret"`
}

// devCredentials returns the dev credentials stored in dataDir, creating
// them on first use.
func devCredentials(dataDir string) (devKeys, error) {
	k, ok, err := readDevCredentials(dataDir)
	if err != nil || ok {
		return k, err
	}
	k = devKeys{APIKey: "dev_" + randomHex(16), JWTSecret: randomHex(32)}
	if err := os.MkdirAll(dataDir, 0o700); err != nil {
		return devKeys{}, fmt.Errorf("create data folder: %w", err)
	}
	b, _ := json.Marshal(k)
	if err := os.WriteFile(filepath.Join(dataDir, devKeyFile), b, 0o600); err != nil {
		return devKeys{}, fmt.Errorf("write dev credentials: %w", err)
	}
	return k, nil
}

// readDevCredentials returns the dev credentials stored in dataDir; ok is
// false when there are none yet.
func readDevCredentials(dataDir string) (k devKeys, ok bool, err error) {
	path := filepath.Join(dataDir, devKeyFile)
	b, err := os.ReadFile(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return devKeys{}, false, nil
	case err != nil:
		return devKeys{}, false, fmt.Errorf("read dev credentials: %w", err)
	}
	if err := json.Unmarshal(b, &k); err != nil || k.APIKey == "" || k.JWTSecret == "" {
		return devKeys{}, false, fmt.Errorf("%s is damaged; delete it to get new dev credentials", path)
	}
	return k, true, nil
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
