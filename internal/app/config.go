package app

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strings"
	"time"

	"github.com/heraldrt/herald/datasync"
	"github.com/heraldrt/herald/server"
	"github.com/heraldrt/herald/store"
	"github.com/heraldrt/herald/transports/longpoll"
	"github.com/heraldrt/herald/transports/sse"
	"github.com/heraldrt/herald/transports/ws"
	"github.com/heraldrt/herald/webhooks"
)

// Config is the whole configuration of a Herald server, as the file
// spells it: the process's own settings here, the core's and the
// engine's at the top level of the file, each transport's under its name.
// A setting is declared once, with its default and its check, in the
// options struct it fills; adding one touches that struct and its test.
type Config struct {
	// Addr is the listen address, host:port. Default 127.0.0.1:8080.
	Addr string `yaml:"addr"`
	// ShutdownTimeout bounds a graceful stop. Default 10s.
	ShutdownTimeout time.Duration `yaml:"shutdown_timeout"`
	// PprofAddr, when set, serves Go's profiler on this loopback address.
	PprofAddr string    `yaml:"pprof_addr"`
	Log       LogConfig `yaml:"log"`
	// TLS serves HTTPS, HTTP/2 included (tls:).
	TLS TLSConfig `yaml:"tls"`
	// H2C serves HTTP/2 without TLS as well as HTTP/1.1, for a proxy in
	// front that terminates TLS and speaks HTTP/2 to Herald.
	H2C bool `yaml:"h2c"`

	// Server is the core: credentials, channel rules, history, limits,
	// presence.
	Server server.Config `yaml:",inline"`
	// Engine chooses where channel logs live: the embedded Badger store
	// (the default) or NATS JetStream for a cluster (engine:).
	Engine EngineConfig `yaml:"engine"`
	// Store is the Badger engine: data_dir (default ./data), durability,
	// idempotency_window. Its retention comes from Server.
	Store store.Options `yaml:",inline"`

	// Webhooks are the endpoints events are sent to (webhooks:).
	Webhooks webhooks.Config `yaml:",inline"`
	// Sync maps database changes to channel events (sync:).
	Sync datasync.Config `yaml:",inline"`

	// lookupEnv reads the variables the file names (a webhook's
	// secret_env); Load sets it, os.LookupEnv otherwise.
	lookupEnv func(string) (string, bool)

	SSE  sse.Options      `yaml:"sse"`
	WS   ws.Options       `yaml:"ws"`
	Poll longpoll.Options `yaml:"poll"`
}

// LogConfig is the log: section.
type LogConfig struct {
	// Level is debug, info (the default), warn or error.
	Level string `yaml:"level"`
	// Format is text (the default) or json.
	Format string `yaml:"format"`
}

// Defaults of the process's own settings; the others live with the
// options they belong to.
const (
	DefaultAddr            = "127.0.0.1:8080"
	DefaultDataDir         = "./data"
	DefaultShutdownTimeout = 10 * time.Second
)

// WithDefaults returns c with the process's defaults and every
// section's defaults applied: what the server runs with.
func (c Config) WithDefaults() Config {
	c = c.withOwnDefaults()
	c.Server = c.Server.WithDefaults()
	c.SSE = c.SSE.WithDefaults()
	c.WS = c.WS.WithDefaults()
	c.Poll = c.Poll.WithDefaults()
	return c
}

func (c Config) withOwnDefaults() Config {
	if c.Addr == "" {
		c.Addr = DefaultAddr
	}
	if c.Store.Dir == "" && !c.Store.InMemory {
		c.Store.Dir = DefaultDataDir
	}
	if c.ShutdownTimeout == 0 {
		c.ShutdownTimeout = DefaultShutdownTimeout
	}
	if c.Log.Level == "" {
		c.Log.Level = "info"
	}
	if c.Log.Format == "" {
		c.Log.Format = "text"
	}
	return c
}

// Validate reports every problem of c at once, each a
// *server.ConfigError naming its settings, so that it can be shown where
// the value came from.
func (c Config) Validate() error {
	c = c.withOwnDefaults()
	var errs []error
	bad := func(key, format string, args ...any) {
		errs = append(errs, &server.ConfigError{Keys: []string{key}, Err: fmt.Errorf(format, args...)})
	}
	if _, _, err := net.SplitHostPort(c.Addr); err != nil {
		bad("addr", "addr %q: want host:port, such as 127.0.0.1:8080 or :8080", c.Addr)
	} else if c.Server.Dev && !isLoopback(c.Addr) {
		bad("addr", "addr %q: dev mode opens every channel to everyone, so it only listens on a loopback address (127.0.0.1:PORT or [::1]:PORT)", c.Addr)
	}
	if c.PprofAddr != "" && !isLoopback(c.PprofAddr) {
		bad("pprof_addr", "pprof_addr %q: the profiler only listens on a loopback address", c.PprofAddr)
	}
	c.TLS.validate(bad)
	c.Engine.validate(bad)
	if c.H2C && c.TLS.enabled() {
		bad("h2c", "h2c is HTTP/2 without TLS; with tls: set, HTTP/2 is already served")
	}
	if c.ShutdownTimeout < 0 {
		bad("shutdown_timeout", "shutdown_timeout %s: must not be negative", c.ShutdownTimeout)
	}
	if c.Store.IdempotencyTTL < 0 {
		bad("idempotency_window", "idempotency_window %s: must not be negative", c.Store.IdempotencyTTL)
	}
	if _, err := parseLevel(c.Log.Level); err != nil {
		bad("log.level", "%v", err)
	}
	if f := c.Log.Format; f != "text" && f != "json" {
		bad("log.format", "log.format %q: want text or json", f)
	}
	_, werr := c.Webhooks.Compile(c.env())
	_, _, serr := c.Sync.Sync.Compile(c.env())
	errs = append(errs, c.Server.Validate(), c.Store.Validate(), werr, serr, c.SSE.Validate(), c.WS.Validate(), c.Poll.Validate())
	return errors.Join(errs...)
}

// env returns the lookup of environment variables the file refers to.
func (c Config) env() func(string) (string, bool) {
	if c.lookupEnv != nil {
		return c.lookupEnv
	}
	return os.LookupEnv
}

// engineOptions returns the store's options: the section's own, and the
// retention the core's rules decide.
func (c Config) engineOptions(logger *slog.Logger) (store.Options, error) {
	o := c.withOwnDefaults().Store
	retention, err := c.Server.Retention()
	if err != nil {
		return store.Options{}, err
	}
	o.Retention = retention
	o.TrimInterval = c.Server.History.TrimInterval
	o.Logger = logger
	o.Companions = []string{DevKeyFile, acmeDir}
	return o, nil
}

// NewLogger returns the logger c.Log describes, writing to w.
func (c Config) NewLogger(w interface{ Write([]byte) (int, error) }) *slog.Logger {
	level, _ := parseLevel(c.Log.Level)
	opts := &slog.HandlerOptions{Level: level}
	if c.Log.Format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
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
