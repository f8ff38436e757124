package servertest

import (
	"context"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/julienschmidt/httprouter"

	"github.com/heraldrt/herald/server"
	"github.com/heraldrt/herald/server/httpapi"
	"github.com/heraldrt/herald/store"
)

// Fixture is a running core and its HTTP server.
type Fixture struct {
	Srv   *server.Server
	Store *store.Store
	HTTP  *httptest.Server
}

// Mount adds a transport's routes to the router. It returns the
// transport's Wait (for connections it serves after their handler
// returned), or nil.
type Mount func(srv *server.Server, r *httprouter.Router) (wait func(context.Context) error)

// Start opens the core with cfg on an in-memory store (so's other
// options apply), mounts the API (behind CORS) and the
// transport, and serves them until the test ends; the cleanup shuts the
// core down, closes the client connections, waits for the transport's
// connections and closes the store, so goroutine-leak checks hold.
func Start(t testing.TB, cfg server.Config, so store.Options, mount Mount) *Fixture {
	t.Helper()
	so.InMemory, so.Dir = true, ""
	srv, st, err := server.Open(cfg, so)
	if err != nil {
		t.Fatal(err)
	}
	api, err := httpapi.New(srv)
	if err != nil {
		t.Fatal(err)
	}
	r := httprouter.New()
	api.Routes(r)
	wait := mount(srv, r)
	hs := httptest.NewServer(api.CORS(r))
	t.Cleanup(func() {
		srv.Shutdown()
		hs.CloseClientConnections()
		// A connection a parked long poll hands back to net/http is served
		// by hs.Config.Serve; shutting that server down first orders every
		// such Serve before Close, and makes a later one return at once.
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_ = hs.Config.Shutdown(ctx)
		cancel()
		hs.Close()
		if wait != nil {
			if err := wait(context.Background()); err != nil {
				t.Error(err)
			}
		}
		st.Close()
	})
	return &Fixture{Srv: srv, Store: st, HTTP: hs}
}
