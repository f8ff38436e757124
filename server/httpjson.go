package server

import (
	"bytes"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"strconv"

	"github.com/heraldrt/herald/protocol"
)

// ErrorDetail returns err as the wire says it (AsError): its code, message,
// channel, and retry_after in whole seconds, rounded up.
func ErrorDetail(err error) protocol.ErrorDetail {
	e := AsError(err)
	d := protocol.ErrorDetail{Code: e.Code, Message: e.Message, Channel: e.Channel}
	if e.RetryAfter > 0 {
		d.RetryAfter = int((e.RetryAfter + 999_999_999) / 1_000_000_000)
	}
	return d
}

// WriteError answers an HTTP request with err as
// {"error":{"code","message",…}} and the matching status, with
// WWW-Authenticate on a 401 and Retry-After when the error says when to
// retry. Errors that are not *Error are logged to logger and answered as
// a 500 that does not leak internals. The HTTP API and the transports
// (before a stream starts) answer every error with it.
func WriteError(w http.ResponseWriter, r *http.Request, err error, logger *slog.Logger) {
	e := AsError(err)
	// A full disk is logged once by the store, not at every refusal.
	if e.Code >= 500 && !errors.Is(err, ErrShuttingDown) && !errors.Is(err, ErrClosed) && e.Code != http.StatusInsufficientStorage {
		if logger == nil {
			logger = slog.Default()
		}
		logger.Error("request failed", "method", r.Method, "path", r.URL.Path, "err", err)
	}
	h := w.Header()
	if e.Code == http.StatusUnauthorized {
		h.Set("WWW-Authenticate", `Bearer realm="herald"`)
	}
	body := protocol.ErrorBody{Error: ErrorDetail(err)}
	if secs := body.Error.RetryAfter; secs > 0 {
		h.Set("Retry-After", strconv.Itoa(secs))
	}
	// <, > and & are written as they are, not as \u003c…: an error
	// quoting a client's value reads as the client wrote it. JSON is never
	// HTML; nosniff keeps a browser from guessing otherwise.
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(body) // strings and ints only: it cannot fail
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(e.Code)
	_, _ = w.Write(buf.Bytes())
}

// WriteJSON answers 200 with v as one line of JSON, written as the API's
// answers are (<, > and & as they are; no caching), for the routes built
// beside the core (webhooks, data sync).
func WriteJSON(w http.ResponseWriter, v any) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		http.Error(w, "encode the answer: "+err.Error(), http.StatusInternalServerError)
		return
	}
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
	_, _ = w.Write(buf.Bytes())
}

// RequireSystem authenticates r and reports whether it carries the API
// key. Anyone else is answered: a 401 without or with bad credentials, a
// 403 saying that what ("managing webhooks") needs the API key.
func (s *Server) RequireSystem(w http.ResponseWriter, r *http.Request, what string) bool {
	id, err := s.Authenticate(r)
	switch {
	case err != nil:
	case id.Anonymous:
		err = Errorf(http.StatusUnauthorized, "the API needs credentials: Authorization: Bearer <API key>")
	case !id.System:
		err = Errorf(http.StatusForbidden, "%s needs the API key", what)
	default:
		return true
	}
	WriteError(w, r, err, s.logger)
	return false
}
