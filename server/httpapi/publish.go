package httpapi

import (
	"net/http"

	"github.com/heraldrt/herald/server"
)

// publish serves POST /api/publish: one message, answered once durable.
func (a *API) publish(w http.ResponseWriter, r *http.Request) {
	id, ok := a.identity(w, r)
	if !ok {
		return
	}
	done, err := a.srv.EnterUser(id)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	defer done()
	var req server.PublishRequest
	if err := a.decodeBody(w, r, &req); err != nil {
		a.fail(w, r, err)
		return
	}
	res, err := a.srv.Publish(r.Context(), id, req)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	a.writeJSON(w, http.StatusOK, res)
}
