package client_test

// A real Herald for the examples and the tests against a server: the core
// on a Badger store in a temporary directory, its API and the three
// transports, on a loopback address — stopped and started again on the
// same directory and address, as a restarted server is.

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"time"

	"github.com/julienschmidt/httprouter"

	"github.com/heraldrt/herald/server"
	"github.com/heraldrt/herald/store"
	"github.com/heraldrt/herald/transports/longpoll"
	"github.com/heraldrt/herald/transports/sse"
	"github.com/heraldrt/herald/transports/ws"
)

// apiKey is the test server's API key (role system).
const apiKey = "client-test-api-key-0123456789"

// jwtSecret signs the test server's user tokens.
const jwtSecret = "client-test-jwt-secret-0123456789abcdef"

// herald is a real server the tests start, restart and stop.
type herald struct {
	dir  string
	addr string // fixed at the first start, kept across restarts
	cfg  server.Config

	srv   *server.Server
	st    *store.Store
	hs    *http.Server
	sse   *sse.Handler
	ws    *ws.Handler
	serve chan error
}

// startHerald starts a server on a new data directory, with rules for
// the tests (chat rooms by grant, with presence) and the API key.
func startHerald() (*herald, error) {
	dir, err := os.MkdirTemp("", "herald-client-test-")
	if err != nil {
		return nil, err
	}
	h := &herald{dir: dir, addr: "127.0.0.1:0", cfg: server.Config{
		APIKey: apiKey, JWTSecret: jwtSecret, Logger: slog.New(slog.DiscardHandler),
		Rules: []server.RuleConfig{
			{Pattern: "chat_room_{id}", Subscribe: []string{"grant"}, Publish: []string{"grant"}, Presence: true},
		},
	}}
	if err := h.start(); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	return h, nil
}

// mustStartHerald is startHerald for examples, which have no *testing.T.
func mustStartHerald() *herald {
	h, err := startHerald()
	if err != nil {
		panic(err)
	}
	return h
}

// URL is the server's base URL.
func (h *herald) URL() string { return "http://" + h.addr }

func (h *herald) start() error {
	srv, st, err := server.Open(h.cfg, store.Options{Dir: h.dir, Durability: store.NoSync})
	if err != nil {
		return err
	}
	h.srv, h.st = srv, st
	if h.sse, err = sse.New(srv, sse.Options{}); err == nil {
		if h.ws, err = ws.New(srv, ws.Options{}); err == nil {
			var poll *longpoll.Handler
			if poll, err = longpoll.New(srv, longpoll.Options{}); err == nil {
				r := httprouter.New()
				srv.Routes(r)
				r.Handler(http.MethodGet, "/sse", h.sse)
				r.Handler(http.MethodGet, "/ws", h.ws)
				r.Handler(http.MethodGet, "/poll", poll)
				r.Handler(http.MethodPost, "/poll", poll)
				h.hs = &http.Server{Handler: srv.CORS(r), ReadHeaderTimeout: 10 * time.Second}
			}
		}
	}
	if err != nil {
		srv.Shutdown()
		st.Close()
		return err
	}
	// The same address on a restart: Go's listeners set SO_REUSEADDR, so
	// the port is free again at once.
	ln, err := net.Listen("tcp", h.addr)
	if err != nil {
		srv.Shutdown()
		st.Close()
		return err
	}
	h.addr = ln.Addr().String()
	h.serve = make(chan error, 1)
	go func() { h.serve <- h.hs.Serve(ln) }()
	return nil
}

// shutdown stops the server as herald serve does: stop accepting, tell
// every client to reconnect, wait for the connections, close the store.
func (h *herald) shutdown() error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- h.hs.Shutdown(ctx) }()
	h.srv.Shutdown()
	err := <-done
	if err != nil {
		_ = h.hs.Close()
	}
	err = errors.Join(err, h.sse.Wait(ctx), h.ws.Wait(ctx))
	if serr := <-h.serve; !errors.Is(serr, http.ErrServerClosed) {
		err = errors.Join(err, serr)
	}
	return errors.Join(err, h.st.Close())
}

// restart stops the server and starts a new one on the same directory
// and address.
func (h *herald) restart() error {
	if err := h.shutdown(); err != nil {
		return fmt.Errorf("stop: %w", err)
	}
	if err := h.start(); err != nil {
		return fmt.Errorf("start again: %w", err)
	}
	return nil
}

// stop stops the server for good and removes its data.
func (h *herald) stop() error {
	err := h.shutdown()
	return errors.Join(err, os.RemoveAll(h.dir))
}
