package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/julienschmidt/httprouter"

	"github.com/heraldrt/herald/server"
	"github.com/heraldrt/herald/server/httpapi"
	"github.com/heraldrt/herald/transports/longpoll"
	"github.com/heraldrt/herald/transports/sse"
	"github.com/heraldrt/herald/transports/ws"
)

// cmdServe implements `herald serve`: it opens the store, then the
// listener (so a client never reaches a server whose store is not ready),
// serves until ctx is cancelled (SIGINT/SIGTERM), and shuts down in order:
// stop accepting, tell every client to reconnect, finish in-flight
// requests, flush and close the store.
func cmdServe(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	cfg, err := loadServeConfig(args, os.LookupEnv, stderr)
	if err != nil {
		return err
	}
	logger := newLogger(cfg.file.Log, stderr)
	cfg.server.Logger = logger
	cfg.store.Logger = logger

	srv, st, err := server.Open(cfg.server, cfg.store)
	if err != nil {
		return fmt.Errorf("%s: %w", cfg.store.Dir, err)
	}
	defer st.Close()
	sseHandler, err := sse.New(srv, cfg.sse)
	if err != nil {
		return fmt.Errorf("config: %w", err)
	}

	wsHandler, err := ws.New(srv, cfg.ws)
	if err != nil {
		return fmt.Errorf("config: %w", err)
	}
	pollHandler, err := longpoll.New(srv, cfg.poll)
	if err != nil {
		return fmt.Errorf("config: %w", err)
	}

	api, err := httpapi.New(srv)
	if err != nil {
		return err
	}
	router := httprouter.New()
	api.Routes(router)
	router.Handler(http.MethodGet, "/sse", sseHandler)
	router.Handler(http.MethodGet, "/ws", wsHandler)
	router.Handler(http.MethodGet, "/poll", pollHandler)
	router.Handler(http.MethodPost, "/poll", pollHandler)

	inner, err := net.Listen("tcp", cfg.file.Addr)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", cfg.file.Addr, err)
	}
	ln := &notifyListener{Listener: inner, closed: make(chan struct{})}
	httpSrv := &http.Server{
		Handler:           api.CORS(router),
		ReadHeaderTimeout: cfg.file.Limits.ReadHeaderTimeout,
		IdleTimeout:       cfg.file.Limits.IdleTimeout,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(logger.Handler(), slog.LevelDebug),
	}
	serveErr := make(chan error, 1)
	go func() { serveErr <- httpSrv.Serve(ln) }()

	announce(logger, stderr, cfg, ln.Addr().String())
	if cfg.file.PprofAddr != "" {
		stop, err := servePprof(cfg.file.PprofAddr, logger)
		if err != nil {
			return err
		}
		defer stop()
	}

	select {
	case <-ctx.Done():
	case err := <-serveErr:
		return fmt.Errorf("serve: %w", err)
	}

	logger.Info("shutting down", "timeout", cfg.file.ShutdownTimeout)
	// Close the listener before closing sessions: a browser told to
	// reconnect must meet a refused connection (it retries), never a 503
	// (EventSource gives up for good on a non-200 answer).
	shutdownCtx, cancel := context.WithTimeout(context.Background(), cfg.file.ShutdownTimeout)
	defer cancel()
	httpDone := make(chan error, 1)
	go func() { httpDone <- httpSrv.Shutdown(shutdownCtx) }()
	select {
	case <-ln.closed:
	case <-shutdownCtx.Done():
	}
	srv.Shutdown()
	if err := <-httpDone; err != nil {
		logger.Warn("connections still open at the shutdown deadline; closing them", "err", err)
		_ = httpSrv.Close()
	}
	// Hijacked SSE and WebSocket connections are not http.Server's to
	// wait for.
	if err := sseHandler.Wait(shutdownCtx); err != nil {
		logger.Warn("SSE streams still open at the shutdown deadline", "err", err)
	}
	if err := wsHandler.Wait(shutdownCtx); err != nil {
		logger.Warn("WebSocket connections still open at the shutdown deadline", "err", err)
	}
	if err := <-serveErr; err != nil && !errors.Is(err, http.ErrServerClosed) {
		logger.Warn("serve", "err", err)
	}
	if err := st.Close(); err != nil {
		return fmt.Errorf("close store: %w", err)
	}
	logger.Info("stopped")
	return nil
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

func newLogger(c logConfig, w io.Writer) *slog.Logger {
	level, _ := parseLevel(c.Level)
	opts := &slog.HandlerOptions{Level: level}
	if c.Format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

// announce logs the listening address and, in dev mode, the generated
// credentials, loudly.
func announce(logger *slog.Logger, stderr io.Writer, cfg serveConfig, addr string) {
	logger.Info("listening", "addr", addr, "data_dir", cfg.store.Dir,
		"durability", cfg.store.Durability.String(), "dev", cfg.server.Dev)
	if !cfg.server.Dev {
		return
	}
	logger.Warn("DEV MODE: every channel is open to everyone; never expose this server")
	if cfg.devKeys {
		fmt.Fprintf(stderr, "\n  Herald dev server on http://%s\n  HERALD_API_KEY=%s\n  HERALD_JWT_SECRET=%s\n  (kept in %s)\n\n",
			addr, cfg.server.APIKey, cfg.server.JWTSecret, filepath.Join(cfg.store.Dir, devKeyFile))
	}
}
