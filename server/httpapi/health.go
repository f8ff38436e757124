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
// traffic (the data-sync source, its database down), or that the server
// cannot serve without (required: the engine, NATS unreachable).
type readyCheck struct {
	name     string
	check    func() error
	required bool
}

// AddCheck makes GET /readyz report name as degraded while check returns
// an error. Called before serving traffic.
func (a *API) AddCheck(name string, check func() error) {
	a.checks = append(a.checks, readyCheck{name: name, check: check})
}

// AddRequirement makes GET /readyz answer 503 while check returns an
// error: a load balancer then sends clients to another node. Called
// before serving traffic.
func (a *API) AddRequirement(name string, check func() error) {
	a.checks = append(a.checks, readyCheck{name: name, check: check, required: true})
}

// readyz serves GET /readyz: the server takes traffic (503 once it is
// shutting down, or while a requirement fails, with
// "status":"unavailable" and why). While a part added with AddCheck is
// degraded it still answers 200 — the server serves — with
// "status":"degraded" and what each degraded part says.
func (a *API) readyz(w http.ResponseWriter, r *http.Request) {
	if !a.srv.Ready() {
		a.fail(w, r, server.ErrShuttingDown)
		return
	}
	degraded, missing := map[string]string{}, map[string]string{}
	for _, c := range a.checks {
		if err := c.check(); err != nil && c.required {
			missing[c.name] = err.Error()
		} else if err != nil {
			degraded[c.name] = err.Error()
		}
	}
	if len(missing) > 0 {
		a.writeJSON(w, http.StatusServiceUnavailable, map[string]any{"status": "unavailable", "unavailable": missing, "degraded": degraded})
		return
	}
	if len(degraded) > 0 {
		a.writeJSON(w, http.StatusOK, map[string]any{"status": "degraded", "degraded": degraded})
		return
	}
	a.writeJSON(w, http.StatusOK, map[string]string{"status": "ready"})
}
