package httpapi

import (
	"net/http"

	"github.com/heraldrt/herald/server"
)

// healthz serves GET /healthz: the process answers.
func (a *API) healthz(w http.ResponseWriter, r *http.Request) {
	a.writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
}

// readyCheck is a part that can be degraded while the server takes
// traffic (the data-sync source, its database down).
type readyCheck struct {
	name  string
	check func() error
}

// AddCheck makes GET /readyz report name as degraded while check returns
// an error. Called before serving traffic.
func (a *API) AddCheck(name string, check func() error) {
	a.checks = append(a.checks, readyCheck{name: name, check: check})
}

// readyz serves GET /readyz: the server takes traffic (503 once it is
// shutting down). While a part added with AddCheck is degraded it still
// answers 200 — the server serves — with "status":"degraded" and what
// each degraded part says.
func (a *API) readyz(w http.ResponseWriter, r *http.Request) {
	if !a.srv.Ready() {
		a.fail(w, r, server.ErrShuttingDown)
		return
	}
	degraded := map[string]string{}
	for _, c := range a.checks {
		if err := c.check(); err != nil {
			degraded[c.name] = err.Error()
		}
	}
	if len(degraded) > 0 {
		a.writeJSON(w, http.StatusOK, map[string]any{"status": "degraded", "degraded": degraded})
		return
	}
	a.writeJSON(w, http.StatusOK, map[string]string{"status": "ready"})
}
