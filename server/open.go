package server

import (
	"fmt"

	"github.com/heraldrt/herald/store"
)

// Open opens a Badger store with opts and a Server on it, and returns
// both: the usual way to run the core on one machine. The caller shuts the
// Server down before closing the store.
func Open(cfg Config, opts store.Options) (*Server, *store.Store, error) {
	st, err := store.Open(opts)
	if err != nil {
		return nil, nil, fmt.Errorf("open store: %w", err)
	}
	srv, err := New(cfg, st)
	if err != nil {
		st.Close()
		return nil, nil, err
	}
	return srv, st, nil
}
