package app

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"strings"
	"sync"
	"time"

	"github.com/julienschmidt/httprouter"

	"github.com/heraldrt/herald/datasync"
	"github.com/heraldrt/herald/engine/jetstream"
	"github.com/heraldrt/herald/server"
	"github.com/heraldrt/herald/server/httpapi"
	"github.com/heraldrt/herald/store"
	"github.com/heraldrt/herald/transports/longpoll"
	"github.com/heraldrt/herald/transports/sse"
	"github.com/heraldrt/herald/transports/ws"
	"github.com/heraldrt/herald/web"
	"github.com/heraldrt/herald/webhooks"
)

// maxHeaderBytes bounds a request's headers.
const maxHeaderBytes = 64 << 10

// App is a running Herald: the engine, the core, the HTTP API and the
// transports behind one listener. New starts it; Shutdown (or Run's
// context) stops it, in the reverse order.
//
// Goroutines: the HTTP server's accept loop (started by New, ended by
// Shutdown), the profiler's when configured, on a cluster with webhooks
// the bid for the webhooks lease (ended by Shutdown through leadStop),
// and those the core and the transports own, which their own Shutdown
// and Wait end.
type App struct {
	cfg    Config
	logger *slog.Logger
	engine store.Engine
	badger *store.Store // the engine when it is the embedded store, else nil
	srv    *server.Server
	sse    *sse.Handler
	ws     *ws.Handler
	poll   *longpoll.Handler
	hooks  *webhooks.Service // nil without endpoints
	routes store.Outbox      // what the outbox queues take of stored messages
	// leadStops end this node's bids for the cluster's leases (webhooks,
	// sync) and their terms; none but on a cluster.
	leadStops []func()
	source    *datasync.Source // nil without sync.postgres

	http     *http.Server
	ln       *notifyListener
	serveErr chan error    // the accept loop's end
	pprof    func()        // stops the profiler; nil without one
	tls      *tlsSetup     // nil for plain HTTP
	hupStop  chan struct{} // closed at shutdown: ends watchHangUp
	hupDone  chan struct{} // closed by watchHangUp as it returns

	stopOnce sync.Once
	stopErr  error
}

// New opens the engine, builds the core, the API and the transports from
// cfg, and starts serving on cfg.Addr: the listener opens only once the
// engine is ready, so a client never reaches a server that cannot answer.
// cfg is validated first; logger receives every log (nil: slog.Default).
func New(cfg Config, logger *slog.Logger) (*App, error) {
	if logger == nil {
		logger = slog.Default()
	}
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	cfg = cfg.withOwnDefaults()
	cfg.Server.Logger = logger
	opts, err := cfg.engineOptions(logger)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	a := &App{cfg: cfg, logger: logger, serveErr: make(chan error, 1)}
	if a.hooks, a.routes, err = cfg.newWebhooks(logger); err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	opts.Outbox = a.routes
	if a.engine, a.badger, err = cfg.openEngine(logger, opts); err != nil {
		return nil, err
	}
	if err := a.build(); err != nil {
		if a.srv != nil {
			a.srv.Shutdown()
		}
		a.stopLeading()
		if a.hooks != nil {
			_ = a.hooks.Shutdown(context.Background())
		}
		_ = a.engine.Close()
		return nil, err
	}
	return a, nil
}

// build makes the core, the API, the transports and the listener, and
// starts serving.
func (a *App) build() error {
	var err error
	if a.srv, err = server.New(a.cfg.Server, a.engine); err != nil {
		return err
	}
	if a.sse, err = sse.New(a.srv, a.cfg.SSE); err != nil {
		return fmt.Errorf("config: %w", err)
	}
	if a.ws, err = ws.New(a.srv, a.cfg.WS); err != nil {
		return fmt.Errorf("config: %w", err)
	}
	if a.poll, err = longpoll.New(a.srv, a.cfg.Poll); err != nil {
		return fmt.Errorf("config: %w", err)
	}
	api, err := httpapi.New(a.srv)
	if err != nil {
		return err
	}
	router := httprouter.New()
	api.Routes(router)
	if a.hooks != nil {
		if err := a.startWebhooks(a.routes); err != nil {
			return err
		}
		if err := api.Register(a.hooks.Metrics()); err != nil {
			return err
		}
		a.hooks.Routes(router, a.srv)
	}
	if h, ok := a.engine.(interface{ Healthy() error }); ok {
		api.AddRequirement("engine", h.Healthy)
	}
	if a.badger != nil {
		// A nearly full disk refuses publishes; subscribers still read.
		api.AddCheck("storage", a.badger.SpaceProblem)
	}
	rules, dsn, err := a.cfg.Sync.Sync.Compile(a.cfg.env())
	if err != nil {
		return fmt.Errorf("config: %w", err)
	}
	if len(rules.Tables()) > 0 {
		if dsn != "" {
			pg := a.cfg.Sync.Sync.Postgres
			a.source = datasync.NewSource(rules, dsn, pg.Publication, pg.Slot, a.srv, a.logger)
			if err := api.Register(a.source.Metrics()); err != nil {
				return err
			}
			api.AddCheck("sync", a.source.Healthy)
		}
		datasync.NewAPI(rules, a.srv, a.source).Routes(router)
	}
	pages, err := web.New(a.srv, a.logger)
	if err != nil {
		return err
	}
	pages.Routes(router)
	router.HandlerFunc(http.MethodGet, "/api/backup", a.backup)
	router.Handler(http.MethodGet, "/sse", a.sse)
	router.Handler(http.MethodGet, "/ws", a.ws)
	router.Handler(http.MethodGet, "/poll", a.poll)
	router.Handler(http.MethodPost, "/poll", a.poll)

	inner, err := net.Listen("tcp", a.cfg.Addr)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", a.cfg.Addr, err)
	}
	if a.cfg.PprofAddr != "" {
		if a.pprof, err = servePprof(a.cfg.PprofAddr, a.logger); err != nil {
			inner.Close()
			return err
		}
	}
	a.ln = &notifyListener{Listener: inner, closed: make(chan struct{})}
	if a.tls, err = newTLS(a.cfg.TLS, a.cfg.Store.Dir); err != nil {
		a.ln.Close()
		return err
	}
	a.logFileLimit()
	limits := a.srv.Config().Limits
	a.http = &http.Server{
		Handler:           api.CORS(router),
		ReadHeaderTimeout: limits.ReadHeaderTimeout,
		IdleTimeout:       limits.IdleTimeout,
		MaxHeaderBytes:    maxHeaderBytes,
		ErrorLog:          slog.NewLogLogger(a.logger.Handler(), slog.LevelDebug),
		Protocols:         protocols(a.cfg.H2C),
	}
	var ln net.Listener = a.ln
	if a.tls != nil {
		a.http.TLSConfig = a.tls.config
		ln = tls.NewListener(a.ln, a.tls.config)
		if a.tls.cert != nil {
			a.hupStop, a.hupDone = make(chan struct{}), make(chan struct{})
			go a.watchHangUp(a.hupStop, a.hupDone)
		}
	}
	go func() { a.serveErr <- a.http.Serve(ln) }()
	if a.source != nil {
		if js, ok := a.engine.(*jetstream.Engine); ok {
			// One node of a cluster streams: a slot takes one reader.
			a.source.Standby()
			a.lead(js, "sync", a.source.Run)
		} else {
			a.source.Start() // it reconnects by itself: an unreachable database is reported, not fatal
		}
	}
	where := []any{"data_dir", a.cfg.Store.Dir, "durability", a.cfg.Store.Durability.String()}
	if n := a.cfg.Engine.NATS; n != nil {
		where = []any{"nats", strings.Join(n.URLs, ","), "replicas", max(n.Replicas, DefaultNATSReplicas)}
	}
	a.logger.Info("listening", append([]any{"addr", a.Addr(), "tls", a.tls != nil, "h2c", a.cfg.H2C, "engine", a.cfg.Engine.Name()},
		append(where, "dev", a.cfg.Server.Dev)...)...)
	return nil
}

// Addr is the address the App listens on (with the port chosen when
// Config.Addr asked for port 0).
func (a *App) Addr() string { return a.ln.Addr().String() }

// Server is the App's core, for callers that act on it directly.
func (a *App) Server() *server.Server { return a.srv }

// Config is the configuration the App runs with (own defaults applied).
func (a *App) Config() Config { return a.cfg }

// Run serves until ctx is done, then shuts down; it returns early with
// the error if the listener fails.
func (a *App) Run(ctx context.Context) error {
	select {
	case <-ctx.Done():
		return a.Shutdown()
	case err := <-a.serveErr:
		a.serveErr <- err // for Shutdown
		_ = a.Shutdown()
		return fmt.Errorf("serve: %w", err)
	}
}

// Shutdown stops the App in order, within Config.ShutdownTimeout: stop
// accepting connections, tell every client to reconnect (SSE, WebSocket,
// waiting polls), finish the requests in flight, wait for the streams,
// then flush and close the engine. It is idempotent.
func (a *App) Shutdown() error {
	a.stopOnce.Do(func() { a.stopErr = a.shutdown() })
	return a.stopErr
}

func (a *App) shutdown() error {
	a.logger.Info("shutting down", "timeout", a.cfg.ShutdownTimeout)
	ctx, cancel := context.WithTimeout(context.Background(), a.cfg.ShutdownTimeout)
	defer cancel()
	// Close the listener before closing sessions: a browser told to
	// reconnect must meet a refused connection (it retries), never a 503
	// (EventSource gives up for good on a non-200 answer).
	httpDone := make(chan error, 1)
	go func() { httpDone <- a.http.Shutdown(ctx) }()
	select {
	case <-a.ln.closed:
	case <-ctx.Done():
	}
	if a.source != nil {
		a.source.Stop() // what it has not confirmed is sent again at the next start
	}
	a.stopLeading() // the leases go at once: other nodes take the work over
	if a.hupStop != nil {
		close(a.hupStop)
		<-a.hupDone
	}
	a.srv.Shutdown()
	if err := <-httpDone; err != nil {
		a.logger.Warn("connections still open at the shutdown deadline; closing them", "err", err)
		_ = a.http.Close()
	}
	// Hijacked SSE and WebSocket connections, and parked polls, are not
	// http.Server's to wait for.
	if err := a.sse.Wait(ctx); err != nil {
		a.logger.Warn("SSE streams still open at the shutdown deadline", "err", err)
	}
	if err := a.ws.Wait(ctx); err != nil {
		a.logger.Warn("WebSocket connections still open at the shutdown deadline", "err", err)
	}
	if err := a.poll.Wait(ctx); err != nil {
		a.logger.Warn("parked polls still unanswered at the shutdown deadline", "err", err)
	}
	if err := <-a.serveErr; err != nil && !errors.Is(err, http.ErrServerClosed) {
		a.logger.Warn("serve", "err", err)
	}
	if a.hooks != nil {
		if err := a.hooks.Shutdown(ctx); err != nil {
			a.logger.Warn("webhook deliveries still in flight at the shutdown deadline", "err", err)
		}
	}
	if a.pprof != nil {
		a.pprof()
	}
	if err := a.engine.Close(); err != nil {
		return fmt.Errorf("close engine: %w", err)
	}
	a.logger.Info("stopped")
	return nil
}

// lead bids for the cluster's lease called name, running term while this
// node holds it, until stopLeading.
func (a *App) lead(js *jetstream.Engine, name string, term func(context.Context)) {
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		js.Lead(ctx, name, term)
	}()
	a.leadStops = append(a.leadStops, func() { stop(); <-done })
}

// stopLeading ends every bid and term, releasing the leases held.
func (a *App) stopLeading() {
	for _, stop := range a.leadStops {
		stop()
	}
	a.leadStops = nil
}

// servePprof serves Go's profiler on a loopback address until stop.
func servePprof(addr string, logger *slog.Logger) (stop func(), err error) {
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index) // also serves heap, goroutine, allocs…
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("pprof listen on %s: %w", addr, err)
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = srv.Serve(ln)
	}()
	logger.Info("profiler listening", "addr", ln.Addr().String())
	return func() { _ = srv.Close(); <-done }, nil
}

// notifyListener tells when http.Server.Shutdown has closed it.
type notifyListener struct {
	net.Listener
	once   sync.Once
	closed chan struct{}
}

func (l *notifyListener) Close() error {
	err := l.Listener.Close()
	l.once.Do(func() { close(l.closed) })
	return err
}
