package httpapi

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"

	"github.com/julienschmidt/httprouter"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/heraldrt/herald/server"
)

// API serves the HTTP server API of one core.
type API struct {
	srv     *server.Server
	log     *slog.Logger
	maxBody int64 // bound of a request body (limits.max_body_bytes)
	origins []string
	metrics *metrics
	checks  []readyCheck // parts built beside the core that can be degraded
}

// New returns the API of srv. It registers the API's metrics observer
// with srv, so it is called once per Server, before serving traffic.
func New(srv *server.Server) (*API, error) {
	cfg := srv.Config()
	a := &API{srv: srv, log: cfg.Logger, maxBody: cfg.Limits.MaxBodyBytes, origins: cfg.CORS.AllowedOrigins}
	m, err := newMetrics(srv, cfg.MetricsToken)
	if err != nil {
		return nil, fmt.Errorf("httpapi: %w", err)
	}
	a.metrics = m
	return a, nil
}

// Routes registers the server API (DESIGN §4) and the health and metrics
// endpoints on r, and makes r answer what no route takes with the same
// JSON errors as the rest: a 404 naming the method and path, a 405 naming
// the methods the path takes (with Allow). OPTIONS requests are not
// answered by r: CORS, in front of it, answers the preflights of allowed
// origins; any other OPTIONS request is a 405.
func (a *API) Routes(r *httprouter.Router) {
	r.NotFound = http.HandlerFunc(a.notFound)
	r.MethodNotAllowed = http.HandlerFunc(a.methodNotAllowed)
	r.HandleOPTIONS = false
	r.HandlerFunc(http.MethodPost, "/api/publish", a.publish)
	r.HandlerFunc(http.MethodGet, "/api/history", a.history)
	r.HandlerFunc(http.MethodGet, "/api/channels", a.channels)
	r.HandlerFunc(http.MethodPost, "/api/grants", a.postGrant)
	r.HandlerFunc(http.MethodDelete, "/api/grants", a.deleteGrant)
	r.HandlerFunc(http.MethodGet, "/api/grants", a.listGrants)
	r.HandlerFunc(http.MethodGet, "/api/presence", a.presence)
	r.HandlerFunc(http.MethodPost, "/api/signal", a.signal)
	r.GET("/api/users/:id", a.user)
	r.HandlerFunc(http.MethodPost, "/api/broadcast", a.broadcast)
	r.HandlerFunc(http.MethodPost, "/api/disconnect", a.disconnect)
	r.HandlerFunc(http.MethodPost, "/api/ban", a.ban)
	r.HandlerFunc(http.MethodDelete, "/api/ban", a.unban)
	r.Handler(http.MethodGet, "/metrics", a.metrics.handler(a))
	r.HandlerFunc(http.MethodGet, "/api/metrics", a.metrics.jsonHandler(a))
	r.HandlerFunc(http.MethodGet, "/healthz", a.healthz)
	r.HandlerFunc(http.MethodGet, "/readyz", a.readyz)
}

// Register adds c to the metrics /metrics serves: how parts built beside
// the core (the webhooks) show theirs.
func (a *API) Register(c prometheus.Collector) error { return a.metrics.registry.Register(c) }

// fail answers with err (server.WriteError).
func (a *API) fail(w http.ResponseWriter, r *http.Request, err error) {
	server.WriteError(w, r, err, a.log)
}

func (a *API) notFound(w http.ResponseWriter, r *http.Request) {
	a.fail(w, r, server.Errorf(http.StatusNotFound, "no route for %s %s", r.Method, r.URL.Path))
}

// methodNotAllowed answers a path that exists for other methods. The
// router has set Allow; the message names the same methods, but OPTIONS,
// which only CORS preflights use.
func (a *API) methodNotAllowed(w http.ResponseWriter, r *http.Request) {
	var methods []string
	for m := range strings.SplitSeq(w.Header().Get("Allow"), ", ") {
		if m != "" && m != http.MethodOptions {
			methods = append(methods, m)
		}
	}
	a.fail(w, r, server.Errorf(http.StatusMethodNotAllowed,
		"%s %s is not allowed; use %s", r.Method, r.URL.Path, orList(methods)))
}

// orList joins words as "a", "a or b", "a, b or c".
func orList(words []string) string {
	if len(words) < 2 {
		return strings.Join(words, "")
	}
	return strings.Join(words[:len(words)-1], ", ") + " or " + words[len(words)-1]
}

// identity authenticates an /api/* request; every one needs credentials.
// It answers the request itself when ok is false.
func (a *API) identity(w http.ResponseWriter, r *http.Request) (id server.Identity, ok bool) {
	id, err := a.srv.Authenticate(r)
	if err == nil && id.Anonymous {
		err = server.Errorf(http.StatusUnauthorized,
			"the API needs credentials: Authorization: Bearer <API key or user token>")
	}
	if err != nil {
		a.fail(w, r, err)
		return server.Identity{}, false
	}
	return id, true
}

// system authenticates a request that needs the API key; what names the
// action in the refusal ("managing grants needs the API key").
func (a *API) system(w http.ResponseWriter, r *http.Request, what string) bool {
	id, ok := a.identity(w, r)
	if !ok {
		return false
	}
	if !id.System {
		a.fail(w, r, server.Errorf(http.StatusForbidden, "%s needs the API key", what))
		return false
	}
	return true
}

// writeJSON answers with v as one line of JSON. <, > and & are written as
// they are, not as \u003c…: an error quoting a client's value reads as the
// client wrote it. JSON is never HTML; nosniff keeps a browser from
// guessing otherwise.
func (a *API) writeJSON(w http.ResponseWriter, status int, v any) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil { // Encode ends the value with a newline
		a.log.Error("encode response", "err", err)
		status = http.StatusInternalServerError
		buf.Reset()
		buf.WriteString(`{"error":{"code":500,"message":"internal error"}}` + "\n")
	}
	setJSONHeaders(w.Header())
	w.WriteHeader(status)
	_, _ = w.Write(buf.Bytes())
}

// The headers of every JSON answer, as shared values: nothing changes a
// header's value slice (Add appends to a copy, as len == cap), so sharing
// saves three allocations per answer.
var (
	jsonContentType = []string{"application/json"}
	noStore         = []string{"no-store"}
	noSniff         = []string{"nosniff"}
)

func setJSONHeaders(h http.Header) {
	h["Content-Type"] = jsonContentType
	h["Cache-Control"] = noStore
	h["X-Content-Type-Options"] = noSniff
}

// writeRaw answers 200 with body, JSON already encoded on one line.
func (a *API) writeRaw(w http.ResponseWriter, body []byte) {
	setJSONHeaders(w.Header())
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(body)
}

// answer answers with v, or with err when there is one.
func (a *API) answer(w http.ResponseWriter, r *http.Request, v any, err error) {
	if err != nil {
		a.fail(w, r, err)
		return
	}
	a.writeJSON(w, http.StatusOK, v)
}

// decodeBody reads a JSON request body into v, strictly: a body over the
// limit is a 413, unknown fields and trailing data are 400s.
func (a *API) decodeBody(w http.ResponseWriter, r *http.Request, v any) error {
	r.Body = http.MaxBytesReader(w, r.Body, a.maxBody)
	return decodeJSON(r.Body, v)
}

// readBody reads a whole request body into buf, up to the limit (a 413
// past it).
func (a *API) readBody(w http.ResponseWriter, r *http.Request, buf *bytes.Buffer) error {
	if n := r.ContentLength; n > 0 && n <= a.maxBody {
		buf.Grow(int(n))
	}
	_, err := buf.ReadFrom(http.MaxBytesReader(w, r.Body, a.maxBody))
	var tooBig *http.MaxBytesError
	if errors.As(err, &tooBig) {
		return server.Errorf(http.StatusRequestEntityTooLarge, "request body is over the %d byte limit", tooBig.Limit)
	}
	if err != nil {
		return server.Invalidf("request body: %v", err)
	}
	return nil
}

// decodeJSON decodes one JSON object from body into v, strictly (unknown
// fields and trailing data are 400s), with errors that name the problem.
func decodeJSON(body io.Reader, v any) error {
	dec := json.NewDecoder(body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		var tooBig *http.MaxBytesError
		var syntax *json.SyntaxError
		var typeErr *json.UnmarshalTypeError
		switch {
		case errors.As(err, &tooBig):
			return server.Errorf(http.StatusRequestEntityTooLarge, "request body is over the %d byte limit", tooBig.Limit)
		case errors.Is(err, io.ErrUnexpectedEOF):
			return server.Invalidf("request body is not valid JSON: it ends early")
		case errors.Is(err, io.EOF):
			return server.Invalidf("request body is empty; send a JSON object")
		case errors.As(err, &syntax):
			return server.Invalidf("request body is not valid JSON: %v (at byte %d)", err, syntax.Offset)
		case errors.As(err, &typeErr):
			return server.Invalidf("request body field %q must be %s", fieldName(typeErr.Field), typeErr.Type)
		}
		return server.Invalidf("request body: %v", err)
	}
	if dec.More() {
		return server.Invalidf("request body has data after the JSON object")
	}
	return nil
}

// fieldName is a decoding error's field path in the body's own terms:
// without the Go names of embedded structs (the publish body embeds one).
func fieldName(path string) string {
	parts := strings.Split(path, ".")
	kept := parts[:0]
	for _, p := range parts {
		if p != "" && (p[0] < 'A' || p[0] > 'Z') {
			kept = append(kept, p)
		}
	}
	return strings.Join(kept, ".")
}

// uintParam parses an optional non-negative integer query parameter (nil
// when absent).
func uintParam(v, name string) (*uint64, error) {
	if v == "" {
		return nil, nil
	}
	n, err := strconv.ParseUint(v, 10, 64)
	if err != nil {
		return nil, server.Invalidf("%s %q is not a non-negative integer", name, v)
	}
	return &n, nil
}
