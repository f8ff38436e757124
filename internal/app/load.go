package app

import (
	"errors"
	"flag"
	"fmt"
	"os"

	"github.com/heraldrt/herald/internal/configfile"
)

// A setting that a flag or an environment variable sets too, named by its
// key in the file. Adding one is one line in settings.
type setting struct {
	key   string // as the file spells it
	flag  string // without dashes; "" for none
	env   string // "" for none
	usage string
	bool  bool // a flag that needs no value (--dev)
}

// settings are the settings of the file that flags and variables set.
// The precedence is file < variable < flag.
func settings() []setting {
	return []setting{
		{key: "addr", flag: "addr", env: "HERALD_ADDR", usage: "listen address host:port (default " + DefaultAddr + ")"},
		{key: "data_dir", flag: "data-dir", env: "HERALD_DATA_DIR", usage: "data directory (default " + DefaultDataDir + ")"},
		{key: "api_key", flag: "api-key", env: "HERALD_API_KEY", usage: "API key of the backend, role system"},
		{key: "jwt_secret", flag: "jwt-secret", env: "HERALD_JWT_SECRET", usage: "HS256 secret of user tokens"},
		{key: "jwt_public_key", flag: "jwt-public-key", env: "HERALD_JWT_PUBLIC_KEY", usage: "PEM public key verifying RS256/ES256 user tokens"},
		{key: "jwks", flag: "jwks", env: "HERALD_JWKS", usage: "JWKS file verifying RS256/ES256 user tokens"},
		{key: "metrics_token", env: "HERALD_METRICS_TOKEN"},
		{key: "dev", flag: "dev", env: "HERALD_DEV", usage: "dev mode: loopback only, every channel open, generated keys printed", bool: true},
		{key: "durability", flag: "durability", env: "HERALD_DURABILITY", usage: `"sync" (fsync every group commit, default) or "none"`},
		{key: "log.level", flag: "log-level", env: "HERALD_LOG_LEVEL", usage: "debug, info, warn or error"},
		{key: "log.format", flag: "log-format", env: "HERALD_LOG_FORMAT", usage: "text or json"},
		{key: "cors.allowed_origins", flag: "allowed-origins", env: "HERALD_ALLOWED_ORIGINS", usage: "comma-separated CORS origins, or *"},
		{key: "tls.cert_file", flag: "tls-cert", env: "HERALD_TLS_CERT_FILE", usage: "PEM certificate (chain): serve HTTPS and HTTP/2 (with --tls-key)"},
		{key: "tls.key_file", flag: "tls-key", env: "HERALD_TLS_KEY_FILE", usage: "PEM private key of --tls-cert"},
		{key: "engine.nats.urls", flag: "nats-urls", env: "HERALD_NATS_URLS", usage: "comma-separated NATS servers: run on NATS JetStream, shared by a cluster of Herald nodes, instead of the embedded store"},
		{key: "engine.nats.stream", env: "HERALD_NATS_STREAM"},
		{key: "engine.nats.replicas", flag: "nats-replicas", env: "HERALD_NATS_REPLICAS", usage: "how many NATS servers hold each message: 1, 3 or 5 (with --nats-urls)"},
		{key: "pprof_addr", flag: "pprof-addr", usage: "serve Go's profiler (/debug/pprof/) on this loopback host:port"},
	}
}

// ConfigEnv names the variable that names the configuration file.
const ConfigEnv = "HERALD_CONFIG"

// Flags are the flags of `herald serve` (and `herald config check`):
// --config and one flag per setting that has one.
type Flags struct {
	// Config is the configuration file ("" for none: HERALD_CONFIG).
	Config string
	values []*settingFlag
}

// settingFlag is one setting's flag: its text once given.
type settingFlag struct {
	s    setting
	text string
	set  bool
}

func (f *settingFlag) String() string { return f.text }

func (f *settingFlag) Set(v string) error {
	f.text, f.set = v, true
	return nil
}

// IsBoolFlag lets a boolean setting's flag be given without a value.
func (f *settingFlag) IsBoolFlag() bool { return f.s.bool }

// RegisterFlags registers the serve flags on fs.
func RegisterFlags(fs *flag.FlagSet) *Flags {
	f := &Flags{}
	fs.StringVar(&f.Config, "config", "", "YAML configuration file (env "+ConfigEnv+")")
	for _, s := range settings() {
		if s.flag == "" {
			continue
		}
		v := &settingFlag{s: s}
		usage := s.usage
		if s.env != "" {
			usage += " (env " + s.env + ")"
		}
		fs.Var(v, s.flag, usage)
		f.values = append(f.values, v)
	}
	return f
}

// Loaded is a resolved configuration and where its settings came from.
type Loaded struct {
	Config Config
	// File is the configuration file read ("" for none).
	File string
	// Sources says where each setting came from: a line of the file, a
	// variable, a flag.
	Sources *configfile.Sources
	// DevKeys is true when the API key or the JWT secret was generated
	// for dev mode.
	DevKeys bool
}

// Load resolves the configuration — the file (flags.Config, else
// HERALD_CONFIG), then the HERALD_* variables, then the flags, each layer
// setting only what it gives — and validates all of it as New will use
// it, without opening anything. Every problem is reported at once, as
// configfile.Problems, each at the line of the file, or naming the flag or
// variable, that set the value. creds supplies dev mode's credentials
// (DevCredentials creates them in the data folder; PeekDevCredentials
// creates nothing).
func Load(flags *Flags, lookupEnv func(string) (string, bool), creds func(dataDir string) (DevKeys, error)) (*Loaded, error) {
	l := &Loaded{File: flags.Config, Sources: configfile.NewSources()}
	l.Config.lookupEnv = lookupEnv
	if l.File == "" {
		l.File, _ = lookupEnv(ConfigEnv)
	}
	var problems configfile.Problems
	if l.File != "" {
		b, err := os.ReadFile(l.File)
		if err != nil {
			return nil, fmt.Errorf("config: %w", err)
		}
		l.Sources, problems = configfile.Decode(l.File, b, &l.Config)
	}
	set := func(s setting, text string, o configfile.Origin) {
		l.Sources.Set(s.key, o)
		if err := configfile.SetString(&l.Config, s.key, text); err != nil {
			problems = append(problems, configfile.Problem{Message: fmt.Sprintf("%s %v", o.Name, err)})
		}
	}
	for _, s := range settings() {
		if v, ok := lookupEnv(s.env); ok && s.env != "" {
			set(s, v, configfile.Env(s.env))
		}
	}
	for _, f := range flags.values {
		if f.set {
			set(f.s, f.text, configfile.Flag("--"+f.s.flag))
		}
	}

	c := &l.Config
	var errs []error
	if c.Server.Dev && (c.Server.APIKey == "" || c.Server.JWTSecret == "") {
		keys, err := creds(c.withOwnDefaults().Store.Dir)
		if err != nil {
			errs = append(errs, keyed("data_dir", err))
		}
		if c.Server.APIKey == "" {
			c.Server.APIKey, l.DevKeys = keys.APIKey, true
		}
		if c.Server.JWTSecret == "" {
			c.Server.JWTSecret, l.DevKeys = keys.JWTSecret, true
		}
	}
	errs = append(errs, c.Validate())
	problems = append(problems, l.Sources.Locate(errors.Join(errs...))...)
	if len(problems) > 0 {
		return nil, problemsError(problems.Sorted())
	}
	*c = c.withOwnDefaults()
	return l, nil
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
