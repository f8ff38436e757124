package app

import (
	"context"
	"fmt"
	"log/slog"
	"regexp"
	"strings"
	"time"

	"github.com/heraldrt/herald/engine/jetstream"
	"github.com/heraldrt/herald/store"
)

// EngineConfig is the engine: section: where channel logs and the small
// state live. Written `engine: badger` (the default: the embedded store
// in data_dir) or `engine: {nats: {urls, stream, replicas}}`: NATS
// JetStream, shared by every Herald node of a cluster.
type EngineConfig struct {
	// NATS, when set, runs on NATS JetStream instead of the embedded
	// store.
	NATS *NATSConfig `yaml:"nats"`
}

// NATSConfig is engine.nats: the JetStream cluster Herald nodes share.
type NATSConfig struct {
	// URLs are the NATS servers to connect to (any of them will do; the
	// client learns the others). Required.
	URLs []string `yaml:"urls"`
	// Stream names the JetStream stream of the channel logs; its key-value
	// buckets are named after it (<stream>_epochs, _idem, _state,
	// _floors). Default HERALD. Nodes of one cluster name the same.
	Stream string `yaml:"stream"`
	// Replicas is how many NATS servers hold each message and key: a
	// publish is acknowledged once a majority has it. 1, 3 or 5; default
	// 1 (use 3 on a three-server NATS cluster).
	Replicas int `yaml:"replicas"`
	// ConnectTimeout bounds the start-up's connection and stream set-up
	// (the first start of a new cluster elects a leader for the stream
	// and each bucket). Default 2m.
	ConnectTimeout time.Duration `yaml:"connect_timeout"`
}

// Defaults of the NATS engine.
const (
	DefaultNATSStream         = "HERALD"
	DefaultNATSReplicas       = 1
	DefaultNATSConnectTimeout = 2 * time.Minute
)

// DecodeScalar reads the one-word form: `engine: badger`.
func (e *EngineConfig) DecodeScalar(word string) error {
	if word != "badger" {
		return fmt.Errorf("engine %q: want badger (the default) or {nats: {urls: [...]}}", word)
	}
	*e = EngineConfig{}
	return nil
}

// Name is the engine's name for logs and metrics: badger or nats.
func (e EngineConfig) Name() string {
	if e.NATS != nil {
		return "nats"
	}
	return "badger"
}

// streamName is what JetStream accepts as a stream name (and as the
// start of a bucket name).
var streamName = regexp.MustCompile(`^[A-Za-z0-9_-]{1,32}$`)

func (e EngineConfig) validate(bad func(key, format string, args ...any)) {
	n := e.NATS
	if n == nil {
		return
	}
	if len(n.URLs) == 0 {
		bad("engine.nats.urls", "engine.nats.urls: name at least one NATS server, such as [nats://127.0.0.1:4222]")
	}
	for _, u := range n.URLs {
		if strings.TrimSpace(u) == "" || strings.ContainsAny(u, " ,") {
			bad("engine.nats.urls", "engine.nats.urls: %q is not a URL such as nats://127.0.0.1:4222 (one per item)", u)
		}
	}
	if n.Stream != "" && !streamName.MatchString(n.Stream) {
		bad("engine.nats.stream", "engine.nats.stream %q: 1 to 32 letters, digits, _ or -", n.Stream)
	}
	if r := n.Replicas; r != 0 && r != 1 && r != 3 && r != 5 {
		bad("engine.nats.replicas", "engine.nats.replicas %d: want 1, 3 or 5 (a majority must be able to acknowledge)", r)
	}
	if n.ConnectTimeout < 0 {
		bad("engine.nats.connect_timeout", "engine.nats.connect_timeout %s: must not be negative", n.ConnectTimeout)
	}
}

// openEngine opens the configured engine. badger is the embedded store
// when that is the engine (the webhooks' outbox lives in it), else nil.
func (c Config) openEngine(logger *slog.Logger, opts store.Options) (engine store.Engine, badger *store.Store, err error) {
	n := c.Engine.NATS
	if n == nil {
		s, err := store.Open(opts)
		if err != nil {
			return nil, nil, fmt.Errorf("%s: %w", opts.Dir, err)
		}
		return s, s, nil
	}
	timeout := n.ConnectTimeout
	if timeout == 0 {
		timeout = DefaultNATSConnectTimeout
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	stream := n.Stream
	if stream == "" {
		stream = DefaultNATSStream
	}
	js, err := jetstream.Open(ctx, jetstream.Options{
		URLs:           strings.Join(n.URLs, ","),
		Stream:         stream,
		Replicas:       max(n.Replicas, DefaultNATSReplicas),
		Retention:      opts.Retention,
		IdempotencyTTL: opts.IdempotencyTTL,
		TrimInterval:   opts.TrimInterval,
		Logger:         logger,
	})
	if err != nil {
		return nil, nil, fmt.Errorf("engine nats: %w", err)
	}
	return js, nil, nil
}
