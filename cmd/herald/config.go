package main

import (
	"bytes"
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

	"go.yaml.in/yaml/v3"

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
	JWTLeeway         duration       `yaml:"jwt_leeway"`
	Channels          ruleList       `yaml:"channels"`
	Dev               bool           `yaml:"dev"`
	Durability        string         `yaml:"durability"`
	IdempotencyWindow duration       `yaml:"idempotency_window"`
	ShutdownTimeout   duration       `yaml:"shutdown_timeout"`
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

type logConfig struct {
	Level  string `yaml:"level"`  // debug, info, warn, error
	Format string `yaml:"format"` // text, json
}

type corsConfig struct {
	AllowedOrigins []string `yaml:"allowed_origins"`
}

type historyConfig struct {
	Size *int     `yaml:"size"`
	TTL  duration `yaml:"ttl"`
	// TrimInterval is how often retention is applied in the background.
	TrimInterval duration `yaml:"trim_interval"`
}

type sseConfig struct {
	Coalesce     duration `yaml:"coalesce"`
	Heartbeat    duration `yaml:"heartbeat"`
	Retry        duration `yaml:"retry"`
	WriteTimeout duration `yaml:"write_timeout"`
}

type presenceConfig struct {
	Attrs        []string `yaml:"attrs"`
	Grace        duration `yaml:"grace"`
	SignalRate   float64  `yaml:"signal_rate"`
	SignalBurst  int      `yaml:"signal_burst"`
	SignalMaxTTL duration `yaml:"signal_max_ttl"`
}

type pollConfig struct {
	DefaultTimeout duration `yaml:"default_timeout"`
	MaxTimeout     duration `yaml:"max_timeout"`
	Grace          duration `yaml:"grace"`
	MaxMessages    int      `yaml:"max_messages"`
}

type wsConfig struct {
	Coalesce      duration `yaml:"coalesce"`
	PingInterval  duration `yaml:"ping_interval"`
	PongTimeout   duration `yaml:"pong_timeout"`
	WriteTimeout  duration `yaml:"write_timeout"`
	AuthTimeout   duration `yaml:"auth_timeout"`
	MaxFrameBytes int64    `yaml:"max_frame_bytes"`
	MaxBatch      int      `yaml:"max_batch"`
	Compression   bool     `yaml:"compression"`
}

type limitsConfig struct {
	MaxDataBytes          int      `yaml:"max_data_bytes"`
	MaxBodyBytes          int64    `yaml:"max_body_bytes"`
	MaxChannelsPerRequest int      `yaml:"max_channels_per_request"`
	MaxSubscriptions      int      `yaml:"max_subscriptions"`
	MaxConnectionsPerUser int      `yaml:"max_connections_per_user"`
	OnConnectionLimit     string   `yaml:"on_connection_limit"`
	OpsPerSecond          float64  `yaml:"ops_per_second"`
	OpsBurst              int      `yaml:"ops_burst"`
	ConnectsPerIPPerSec   float64  `yaml:"connections_per_ip_per_second"`
	ConnectsPerIPBurst    int      `yaml:"connections_per_ip_burst"`
	IdleTimeout           duration `yaml:"idle_timeout"`
	QueueMessages         int      `yaml:"queue_messages"`
	QueueBytes            int      `yaml:"queue_bytes"`
	ReadHeaderTimeout     duration `yaml:"read_header_timeout"`
}

// duration is a time.Duration written as "15s", "1m30s", "24h".
type duration time.Duration

func (d *duration) UnmarshalYAML(n *yaml.Node) error {
	v, err := time.ParseDuration(n.Value)
	if err != nil {
		return fmt.Errorf("line %d: %q is not a duration (write it like 15s, 2m or 24h)", n.Line, n.Value)
	}
	*d = duration(v)
	return nil
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
}

// loadServeConfig resolves the configuration: defaults, then the YAML file,
// then HERALD_* variables, then flags — each layer applying only what it
// sets. Every problem found is reported at once, each naming its source.
func loadServeConfig(args []string, lookupEnv func(string) (string, bool), stderr io.Writer) (serveConfig, error) {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var (
		configPath = fs.String("config", "", "YAML configuration file (env HERALD_CONFIG)")
		addr       = fs.String("addr", "", "listen address host:port (env HERALD_ADDR; default 127.0.0.1:8080)")
		dataDir    = fs.String("data-dir", "", "data directory (env HERALD_DATA_DIR; default ./data)")
		apiKey     = fs.String("api-key", "", "API key of the backend, role system (env HERALD_API_KEY)")
		jwtSecret  = fs.String("jwt-secret", "", "HS256 secret of user tokens (env HERALD_JWT_SECRET)")
		jwtPubKey  = fs.String("jwt-public-key", "", "PEM public key verifying RS256/ES256 user tokens (env HERALD_JWT_PUBLIC_KEY)")
		jwks       = fs.String("jwks", "", "JWKS file verifying RS256/ES256 user tokens (env HERALD_JWKS)")
		dev        = fs.Bool("dev", false, "dev mode: loopback only, every channel open, generated keys printed")
		durability = fs.String("durability", "", `"sync" (fsync every group commit, default) or "none" (env HERALD_DURABILITY)`)
		logLevel   = fs.String("log-level", "", "debug, info, warn or error (env HERALD_LOG_LEVEL)")
		logFormat  = fs.String("log-format", "", "text or json (env HERALD_LOG_FORMAT)")
		origins    = fs.String("allowed-origins", "", "comma-separated CORS origins, or * (env HERALD_ALLOWED_ORIGINS)")
		pprofAddr  = fs.String("pprof-addr", "", "serve Go's profiler (/debug/pprof/) on this loopback host:port")
	)
	if err := fs.Parse(args); err != nil {
		return serveConfig{}, err
	}
	if fs.NArg() > 0 {
		return serveConfig{}, fmt.Errorf("serve: unexpected argument %q", fs.Arg(0))
	}

	var sc serveConfig
	fc := &sc.file
	var errs []error
	sc.configPath = *configPath
	if sc.configPath == "" {
		sc.configPath, _ = lookupEnv("HERALD_CONFIG")
	}
	if sc.configPath != "" {
		if err := decodeConfigFile(sc.configPath, fc); err != nil {
			return serveConfig{}, err
		}
	}

	// Environment: only the variables that are set.
	envString := func(name string, dst *string) {
		if v, ok := lookupEnv(name); ok {
			*dst = v
		}
	}
	envString("HERALD_ADDR", &fc.Addr)
	envString("HERALD_DATA_DIR", &fc.DataDir)
	envString("HERALD_API_KEY", &fc.APIKey)
	envString("HERALD_JWT_SECRET", &fc.JWTSecret)
	envString("HERALD_JWT_PUBLIC_KEY", &fc.JWTPublicKey)
	envString("HERALD_JWKS", &fc.JWKS)
	envString("HERALD_METRICS_TOKEN", &fc.MetricsToken)
	envString("HERALD_DURABILITY", &fc.Durability)
	envString("HERALD_LOG_LEVEL", &fc.Log.Level)
	envString("HERALD_LOG_FORMAT", &fc.Log.Format)
	if v, ok := lookupEnv("HERALD_DEV"); ok {
		b, err := strconv.ParseBool(v)
		if err != nil {
			errs = append(errs, fmt.Errorf("HERALD_DEV %q: want true or false", v))
		}
		fc.Dev = b
	}
	if v, ok := lookupEnv("HERALD_ALLOWED_ORIGINS"); ok {
		fc.CORS.AllowedOrigins = splitList(v)
	}

	// Flags: only the ones given.
	fs.Visit(func(f *flag.Flag) {
		switch f.Name {
		case "addr":
			fc.Addr = *addr
		case "data-dir":
			fc.DataDir = *dataDir
		case "api-key":
			fc.APIKey = *apiKey
		case "jwt-secret":
			fc.JWTSecret = *jwtSecret
		case "jwt-public-key":
			fc.JWTPublicKey = *jwtPubKey
		case "jwks":
			fc.JWKS = *jwks
		case "dev":
			fc.Dev = *dev
		case "durability":
			fc.Durability = *durability
		case "log-level":
			fc.Log.Level = *logLevel
		case "log-format":
			fc.Log.Format = *logFormat
		case "allowed-origins":
			fc.CORS.AllowedOrigins = splitList(*origins)
		case "pprof-addr":
			fc.PprofAddr = *pprofAddr
		}
	})

	// Defaults of the binary's own settings.
	if fc.Addr == "" {
		fc.Addr = "127.0.0.1:8080"
	}
	if fc.DataDir == "" {
		fc.DataDir = "./data"
	}
	if fc.ShutdownTimeout == 0 {
		fc.ShutdownTimeout = duration(10 * time.Second)
	}
	if fc.Limits.IdleTimeout == 0 {
		fc.Limits.IdleTimeout = duration(2 * time.Minute)
	}
	switch fc.Limits.OnConnectionLimit {
	case "", "reject", "close_oldest":
	default:
		errs = append(errs, fmt.Errorf("limits.on_connection_limit %q: want reject or close_oldest", fc.Limits.OnConnectionLimit))
	}
	if fc.Limits.ReadHeaderTimeout == 0 {
		fc.Limits.ReadHeaderTimeout = duration(10 * time.Second)
	}
	if fc.IdempotencyWindow == 0 {
		fc.IdempotencyWindow = duration(24 * time.Hour)
	}

	if _, _, err := net.SplitHostPort(fc.Addr); err != nil {
		errs = append(errs, fmt.Errorf("addr %q: want host:port, such as 127.0.0.1:8080 or :8080", fc.Addr))
	} else if fc.Dev && !isLoopback(fc.Addr) {
		errs = append(errs, fmt.Errorf("addr %q: dev mode opens every channel to everyone, so it only listens on a loopback address (127.0.0.1:PORT or [::1]:PORT)", fc.Addr))
	}
	if fc.PprofAddr != "" && !isLoopback(fc.PprofAddr) {
		errs = append(errs, fmt.Errorf("pprof_addr %q: the profiler only listens on a loopback address", fc.PprofAddr))
	}
	if _, err := parseLevel(fc.Log.Level); err != nil {
		errs = append(errs, err)
	}
	if f := fc.Log.Format; f != "" && f != "text" && f != "json" {
		errs = append(errs, fmt.Errorf("log.format %q: want text or json", f))
	}
	dur, err := store.ParseDurability(fc.Durability)
	if err != nil {
		errs = append(errs, err)
	}
	if fc.Dev && (fc.APIKey == "" || fc.JWTSecret == "") {
		keys, err := devCredentials(fc.DataDir)
		if err != nil {
			errs = append(errs, err)
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
		JWTLeeway:             time.Duration(fc.JWTLeeway),
		Rules:                 fc.Channels.rules,
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
		PresenceGrace:         time.Duration(fc.Presence.Grace),
		SignalRate:            fc.Presence.SignalRate,
		SignalBurst:           fc.Presence.SignalBurst,
		SignalMaxTTL:          time.Duration(fc.Presence.SignalMaxTTL),
		QueueMessages:         fc.Limits.QueueMessages,
		QueueBytes:            fc.Limits.QueueBytes,
	}
	if t := time.Duration(fc.History.TrimInterval); t < 0 || (t > 0 && t < 10*time.Millisecond) {
		errs = append(errs, fmt.Errorf("history.trim_interval %s: want at least 10ms", t))
	}
	if h := fc.History; h.Size != nil || h.TTL != 0 {
		sc.server.History = store.DefaultRetention
		if h.Size != nil {
			sc.server.History.MaxCount = *h.Size
			sc.server.HistoryOff = *h.Size == 0
		}
		if h.TTL != 0 {
			sc.server.History.MaxAge = time.Duration(h.TTL)
		}
	}
	retention, err := sc.server.Retention()
	if err != nil {
		errs = append(errs, err)
	}
	sc.store = store.Options{
		Dir:            fc.DataDir,
		Durability:     dur,
		IdempotencyTTL: time.Duration(fc.IdempotencyWindow),
		TrimInterval:   time.Duration(fc.History.TrimInterval),
		Retention:      retention,
	}
	sc.poll = longpoll.Options{
		DefaultTimeout: time.Duration(fc.Poll.DefaultTimeout),
		MaxTimeout:     time.Duration(fc.Poll.MaxTimeout),
		Grace:          time.Duration(fc.Poll.Grace),
		MaxMessages:    fc.Poll.MaxMessages,
	}
	sc.ws = ws.Options{
		Coalesce:      time.Duration(fc.WS.Coalesce),
		PingInterval:  time.Duration(fc.WS.PingInterval),
		PongTimeout:   time.Duration(fc.WS.PongTimeout),
		WriteTimeout:  time.Duration(fc.WS.WriteTimeout),
		AuthTimeout:   time.Duration(fc.WS.AuthTimeout),
		MaxFrameBytes: fc.WS.MaxFrameBytes,
		MaxBatch:      fc.WS.MaxBatch,
		Compression:   fc.WS.Compression,
	}
	sc.sse = sse.Options{
		Coalesce:     time.Duration(fc.SSE.Coalesce),
		Heartbeat:    time.Duration(fc.SSE.Heartbeat),
		Retry:        time.Duration(fc.SSE.Retry),
		WriteTimeout: time.Duration(fc.SSE.WriteTimeout),
	}
	if err := errors.Join(errs...); err != nil {
		return serveConfig{}, err
	}
	return sc, nil
}

// decodeConfigFile decodes the YAML file strictly: an unknown key or a
// value of the wrong type stops start-up, naming the file and line.
func decodeConfigFile(path string, fc *fileConfig) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("config: %w", err)
	}
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(fc); err != nil && !errors.Is(err, io.EOF) {
		return fmt.Errorf("config %s: %w", path, err)
	}
	return nil
}

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
	path := filepath.Join(dataDir, devKeyFile)
	var k devKeys
	b, err := os.ReadFile(path)
	switch {
	case err == nil:
		if err := json.Unmarshal(b, &k); err != nil || k.APIKey == "" || k.JWTSecret == "" {
			return devKeys{}, fmt.Errorf("%s is damaged; delete it to get new dev credentials", path)
		}
		return k, nil
	case !errors.Is(err, fs.ErrNotExist):
		return devKeys{}, fmt.Errorf("read dev credentials: %w", err)
	}
	k = devKeys{APIKey: "dev_" + randomHex(16), JWTSecret: randomHex(32)}
	if err := os.MkdirAll(dataDir, 0o700); err != nil {
		return devKeys{}, fmt.Errorf("create data folder: %w", err)
	}
	b, _ = json.Marshal(k)
	if err := os.WriteFile(path, b, 0o600); err != nil {
		return devKeys{}, fmt.Errorf("write dev credentials: %w", err)
	}
	return k, nil
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
