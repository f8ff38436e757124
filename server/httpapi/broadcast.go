package httpapi

import (
	"net/http"

	"github.com/heraldrt/herald/server"
)

// broadcast serves POST /api/broadcast: one message to many channels, or
// to every connected user.
func (a *API) broadcast(w http.ResponseWriter, r *http.Request) {
	id, ok := a.identity(w, r)
	if !ok {
		return
	}
	var req server.BroadcastRequest
	if err := a.decodeBody(w, r, &req); err != nil {
		a.fail(w, r, err)
		return
	}
	res, err := a.srv.Broadcast(r.Context(), id, req)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	a.writeJSON(w, http.StatusOK, res)
}
