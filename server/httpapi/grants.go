package httpapi

import (
	"net/http"

	"github.com/heraldrt/herald/server"
)

// readGrant reads the body of POST and DELETE /api/grants, for the API
// key.
func (a *API) readGrant(w http.ResponseWriter, r *http.Request) (server.Grant, bool) {
	var g server.Grant
	if !a.system(w, r, "managing grants") {
		return g, false
	}
	if err := a.decodeBody(w, r, &g); err != nil {
		a.fail(w, r, err)
		return g, false
	}
	return g, true
}

// postGrant serves POST /api/grants: sets a user's actions on a channel
// (all four when none are given).
func (a *API) postGrant(w http.ResponseWriter, r *http.Request) {
	g, ok := a.readGrant(w, r)
	if !ok {
		return
	}
	g, err := a.srv.Grants().Set(r.Context(), g)
	a.answer(w, r, g, err)
}

// deleteGrant serves DELETE /api/grants: takes actions (all when none
// are given) away, and answers with what is left.
func (a *API) deleteGrant(w http.ResponseWriter, r *http.Request) {
	g, ok := a.readGrant(w, r)
	if !ok {
		return
	}
	g, err := a.srv.Grants().Revoke(r.Context(), g)
	a.answer(w, r, g, err)
}

// listGrants serves GET /api/grants?user=.
func (a *API) listGrants(w http.ResponseWriter, r *http.Request) {
	if !a.system(w, r, "listing grants") {
		return
	}
	user := r.URL.Query().Get("user")
	if user == "" {
		a.fail(w, r, server.Invalidf("user is required: GET /api/grants?user=<id>"))
		return
	}
	grants, err := a.srv.Grants().List(user)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	a.writeJSON(w, http.StatusOK, struct {
		User   string         `json:"user"`
		Grants []server.Grant `json:"grants"`
	}{user, grants})
}
