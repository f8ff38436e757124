package server

import (
	"fmt"

	"github.com/heraldrt/herald/store"
)

// Open opens the store with opts, connects its commit feed to a new
// Server on it and returns both: the usual way to run the core on Badger.
// The caller shuts the Server down before closing the store.
func Open(cfg Config, opts store.Options) (*Server, *store.Store, error) {
	// The feed runs on the store's committer, which only commits what was
	// appended through the Server; it cannot run before srv is set.
	var srv *Server
	next := opts.OnCommit
	opts.OnCommit = func(b []store.Committed) {
		srv.Committed(b)
		if next != nil {
			next(b)
		}
	}
	st, err := store.Open(opts)
	if err != nil {
		return nil, nil, fmt.Errorf("open store: %w", err)
	}
	if srv, err = New(cfg, st, st); err != nil {
		st.Close()
		return nil, nil, err
	}
	return srv, st, nil
}
