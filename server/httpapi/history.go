package httpapi

import (
	"net/http"

	"github.com/heraldrt/herald/server"
)

// history serves GET /api/history?channel=&since=&limit=.
func (a *API) history(w http.ResponseWriter, r *http.Request) {
	id, ok := a.identity(w, r)
	if !ok {
		return
	}
	q := r.URL.Query()
	req := server.HistoryRequest{Channel: q.Get("channel")}
	since, err := uintParam(q.Get("since"), "since")
	if err == nil {
		req.Limit, err = uintParam(q.Get("limit"), "limit")
	}
	if err != nil {
		a.fail(w, r, err)
		return
	}
	if since != nil {
		req.Since = *since
	}
	page, err := a.srv.History(r.Context(), id, req)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	a.writeJSON(w, http.StatusOK, page)
}

// channels serves GET /api/channels?after=&limit=: the stored channels,
// for the API key.
func (a *API) channels(w http.ResponseWriter, r *http.Request) {
	id, ok := a.identity(w, r)
	if !ok {
		return
	}
	q := r.URL.Query()
	limit, err := uintParam(q.Get("limit"), "limit")
	if err != nil {
		a.fail(w, r, err)
		return
	}
	list, err := a.srv.Channels(r.Context(), id, q.Get("after"), limit)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	a.writeJSON(w, http.StatusOK, list)
}
