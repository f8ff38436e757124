package server

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"strconv"

	"github.com/heraldrt/herald/protocol"
)

// WriteError answers with err as {"error":{"code","message",…}} and the
// matching status. Errors that are not *Error are logged and answered as a
// 500 that does not leak internals. Transports use it for every error
// before a stream starts.
func (s *Server) WriteError(w http.ResponseWriter, r *http.Request, err error) {
	e := AsError(err)
	if e.Code >= 500 && !errors.Is(err, ErrShuttingDown) && !errors.Is(err, ErrClosed) {
		s.logger.Error("request failed", "method", r.Method, "path", r.URL.Path, "err", err)
	}
	h := w.Header()
	if e.Code == http.StatusUnauthorized {
		h.Set("WWW-Authenticate", `Bearer realm="herald"`)
	}
	body := protocol.ErrorBody{Error: protocol.ErrorDetail{Code: e.Code, Message: e.Message, Channel: e.Channel}}
	if e.RetryAfter > 0 {
		secs := int((e.RetryAfter + 999_999_999) / 1_000_000_000)
		h.Set("Retry-After", strconv.Itoa(secs))
		body.Error.RetryAfter = secs
	}
	writeJSON(w, e.Code, body, s.logger)
}

// writeJSON answers with v as one line of JSON. <, > and & are written as
// they are, not as \u003c…: an error quoting a client's value reads as the
// client wrote it. JSON is never HTML; nosniff keeps a browser from
// guessing otherwise.
func writeJSON(w http.ResponseWriter, status int, v any, logger *slog.Logger) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil { // Encode ends the value with a newline
		logger.Error("encode response", "err", err)
		status = http.StatusInternalServerError
		buf.Reset()
		buf.WriteString(`{"error":{"code":500,"message":"internal error"}}` + "\n")
	}
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	_, _ = w.Write(buf.Bytes())
}

// decodeBody reads a JSON request body into v, strictly: a body over the
// limit is a 413, unknown fields and trailing data are 400s.
func (s *Server) decodeBody(w http.ResponseWriter, r *http.Request, v any) error {
	r.Body = http.MaxBytesReader(w, r.Body, s.cfg.MaxBodyBytes)
	dec := json.NewDecoder(r.Body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		var tooBig *http.MaxBytesError
		var syntax *json.SyntaxError
		var typeErr *json.UnmarshalTypeError
		switch {
		case errors.As(err, &tooBig):
			return tooLargef("request body is over the %d byte limit", tooBig.Limit)
		case errors.Is(err, io.ErrUnexpectedEOF):
			return invalidf("request body is not valid JSON: it ends early")
		case errors.Is(err, io.EOF):
			return invalidf("request body is empty; send a JSON object")
		case errors.As(err, &syntax):
			return invalidf("request body is not valid JSON: %v (at byte %d)", err, syntax.Offset)
		case errors.As(err, &typeErr):
			return invalidf("request body field %q must be %s", typeErr.Field, typeErr.Type)
		}
		return invalidf("request body: %v", err)
	}
	if dec.More() {
		return invalidf("request body has data after the JSON object")
	}
	return nil
}
