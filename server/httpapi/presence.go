package httpapi

import (
	"net/http"

	"github.com/julienschmidt/httprouter"

	"github.com/heraldrt/herald/server"
)

// presence serves GET /api/presence?channel=[&stats=true]: who is in a
// channel.
func (a *API) presence(w http.ResponseWriter, r *http.Request) {
	id, ok := a.identity(w, r)
	if !ok {
		return
	}
	q := r.URL.Query()
	stats := false
	switch v := q.Get("stats"); v {
	case "", "0", "false":
	case "1", "true":
		stats = true
	default:
		a.fail(w, r, server.Invalidf("stats %q: want true or false", v))
		return
	}
	info, err := a.srv.Presence(id, q.Get("channel"), stats)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	a.writeJSON(w, http.StatusOK, info)
}

// signal serves POST /api/signal: the caller's short-lived state in a
// channel (typing).
func (a *API) signal(w http.ResponseWriter, r *http.Request) {
	id, ok := a.identity(w, r)
	if !ok {
		return
	}
	var req server.SignalRequest
	if err := a.decodeBody(w, r, &req); err != nil {
		a.fail(w, r, err)
		return
	}
	if err := a.srv.Signal(id, req); err != nil {
		a.fail(w, r, err)
		return
	}
	a.writeJSON(w, http.StatusOK, map[string]any{"channel": req.Channel, "ok": true})
}

// user serves GET /api/users/{id}: online, and last seen.
func (a *API) user(w http.ResponseWriter, r *http.Request, ps httprouter.Params) {
	id, ok := a.identity(w, r)
	if !ok {
		return
	}
	st, err := a.srv.User(r.Context(), id, ps.ByName("id"))
	if err != nil {
		a.fail(w, r, err)
		return
	}
	a.writeJSON(w, http.StatusOK, st)
}
