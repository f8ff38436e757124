package client_test

// A real Herald for the examples and the tests against a server: the
// binary's composition root (internal/app) on a Badger store in a
// temporary directory, on a loopback address — stopped and started again
// on the same directory and address, as a restarted server is.

import (
	"errors"
	"fmt"
	"log/slog"
	"os"

	"github.com/heraldrt/herald/internal/app"
	"github.com/heraldrt/herald/server"
	"github.com/heraldrt/herald/store"
)

// apiKey is the test server's API key (role system).
const apiKey = "client-test-api-key-0123456789"

// jwtSecret signs the test server's user tokens.
const jwtSecret = "client-test-jwt-secret-0123456789abcdef"

// herald is a real server the tests start, restart and stop.
type herald struct {
	cfg app.Config // its Addr is fixed at the first start, kept across restarts
	app *app.App
}

// startHerald starts a server on a new data directory, with rules for
// the tests (chat rooms by grant, with presence) and the API key.
func startHerald() (*herald, error) {
	dir, err := os.MkdirTemp("", "herald-client-test-")
	if err != nil {
		return nil, err
	}
	var cfg app.Config
	cfg.Addr = "127.0.0.1:0"
	cfg.Store.Dir, cfg.Store.Durability = dir, store.NoSync
	cfg.Server = server.Config{
		APIKey: apiKey, JWTSecret: jwtSecret,
		Rules: []server.RuleConfig{
			{Pattern: "chat_room_{id}", Subscribe: []string{"grant"}, Publish: []string{"grant"}, Presence: true},
		},
	}
	h := &herald{cfg: cfg}
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
func (h *herald) URL() string { return "http://" + h.cfg.Addr }

// start starts the server; the address it got is kept for restarts
// (Go's listeners set SO_REUSEADDR, so the port is free again at once).
func (h *herald) start() error {
	a, err := app.New(h.cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		return err
	}
	h.app, h.cfg.Addr = a, a.Addr()
	return nil
}

// restart stops the server and starts a new one on the same directory
// and address.
func (h *herald) restart() error {
	if err := h.app.Shutdown(); err != nil {
		return fmt.Errorf("stop: %w", err)
	}
	if err := h.start(); err != nil {
		return fmt.Errorf("start again: %w", err)
	}
	return nil
}

// stop stops the server for good and removes its data.
func (h *herald) stop() error {
	return errors.Join(h.app.Shutdown(), os.RemoveAll(h.cfg.Store.Dir))
}
