package httpapi

import (
	"net/http"

	"github.com/heraldrt/herald/server"
)

// healthz serves GET /healthz: the process answers.
func (a *API) healthz(w http.ResponseWriter, r *http.Request) {
	a.writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
}

// readyz serves GET /readyz: the server takes traffic (503 once it is
// shutting down).
func (a *API) readyz(w http.ResponseWriter, r *http.Request) {
	if !a.srv.Ready() {
		a.fail(w, r, server.ErrShuttingDown)
		return
	}
	a.writeJSON(w, http.StatusOK, map[string]string{"status": "ready"})
}
