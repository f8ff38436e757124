package datasync

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"

	"github.com/julienschmidt/httprouter"

	"github.com/heraldrt/herald/server"
)

// ChangeRequest is the body of POST /api/changes: a row changed in a
// table, as a backend that holds both records reports it.
type ChangeRequest struct {
	Table string                     `json:"table"`
	Op    string                     `json:"op"`
	Old   map[string]json.RawMessage `json:"old"`
	New   map[string]json.RawMessage `json:"new"`
	// Key names the primary-key columns when they are not the rule's.
	Key []string `json:"key"`
	// IdempotencyKey makes a retried change publish nothing twice: each
	// event is published idempotently on it and its place.
	IdempotencyKey string `json:"idempotency_key"`
}

// ChangeResult is the answer: the events published, in the rule's order.
type ChangeResult struct {
	Events []server.PublishResult `json:"events"`
}

// API serves the change API on the core's publish path, and the sync
// status.
type API struct {
	rules  *Rules
	srv    *server.Server
	source *Source // nil without a database source
}

// NewAPI returns the change API for rules, publishing through srv, and
// the status of source (nil: none).
func NewAPI(rules *Rules, srv *server.Server, source *Source) *API {
	return &API{rules: rules, srv: srv, source: source}
}

// Routes registers POST /api/changes and GET /api/sync on r.
func (a *API) Routes(r *httprouter.Router) {
	r.POST("/api/changes", a.change)
	r.GET("/api/sync", a.status)
}

// Status is the answer of GET /api/sync.
type Status struct {
	Tables   []string      `json:"tables"`
	Postgres *SourceStatus `json:"postgres,omitempty"`
}

func (a *API) status(w http.ResponseWriter, r *http.Request, _ httprouter.Params) {
	if !a.srv.RequireSystem(w, r, "reading the sync status") {
		return
	}
	st := Status{Tables: []string{}}
	for _, t := range a.rules.Tables() {
		st.Tables = append(st.Tables, t.Name)
	}
	if a.source != nil {
		ss := a.source.Status()
		st.Postgres = &ss
	}
	server.WriteJSON(w, st)
}

func (a *API) change(w http.ResponseWriter, r *http.Request, _ httprouter.Params) {
	if !a.srv.RequireSystem(w, r, "reporting database changes") {
		return
	}
	id := server.Identity{System: true}
	limit := int64(a.srv.Config().Limits.MaxBodyBytes)
	body, err := io.ReadAll(io.LimitReader(r.Body, limit+1))
	if err != nil {
		a.fail(w, r, server.Invalidf("reading the body: %v", err))
		return
	}
	if int64(len(body)) > limit {
		a.fail(w, r, server.Errorf(http.StatusRequestEntityTooLarge, "the body is over %d bytes (limits.max_body_bytes)", limit))
		return
	}
	var req ChangeRequest
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		a.fail(w, r, server.Invalidf("the body: %v", err))
		return
	}
	if req.Table == "" || req.Op == "" {
		a.fail(w, r, server.Invalidf(`table and op are required: {"table":"projects","op":"update","old":{…},"new":{…}}`))
		return
	}
	events, err := a.rules.Events(Change{Table: req.Table, Op: req.Op, Old: req.Old, New: req.New, Key: req.Key})
	switch {
	case errors.Is(err, ErrNoRule):
		a.fail(w, r, server.Invalidf("table %q has no sync rule (sync.tables)", req.Table))
		return
	case err != nil:
		a.fail(w, r, server.Invalidf("%s", strings.TrimPrefix(err.Error(), "datasync: ")))
		return
	}
	res := ChangeResult{Events: []server.PublishResult{}}
	if len(events) > 0 {
		out, err := a.srv.PublishBatch(r.Context(), id, publishRequests(events, req.IdempotencyKey))
		if err != nil {
			a.fail(w, r, err)
			return
		}
		for _, o := range out {
			if o.Err != nil {
				// Judged one by one, as a batch publish is: the events
				// before it are stored, and a retry with the same
				// idempotency_key publishes none of them twice.
				a.fail(w, r, o.Err)
				return
			}
			res.Events = append(res.Events, o.Result)
		}
	}
	server.WriteJSON(w, res)
}

func (a *API) fail(w http.ResponseWriter, r *http.Request, err error) {
	server.WriteError(w, r, err, a.srv.Config().Logger)
}
