package ws

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/heraldrt/herald/protocol"
	"github.com/heraldrt/herald/server"
)

// decodeRequest parses a frame strictly: one JSON object, known fields
// only, an op. The error message names the problem for the error reply.
func decodeRequest(frame []byte) (protocol.Request, error) {
	var req protocol.Request
	dec := json.NewDecoder(bytes.NewReader(frame))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		var syntax *json.SyntaxError
		var typeErr *json.UnmarshalTypeError
		switch {
		case errors.As(err, &syntax):
			return req, fmt.Errorf("frame is not valid JSON: %v (at byte %d)", err, syntax.Offset)
		case errors.As(err, &typeErr) && typeErr.Field == "":
			return req, errors.New("frame is not a JSON object")
		case errors.As(err, &typeErr):
			return req, fmt.Errorf("field %q must be %s", typeErr.Field, typeErr.Type)
		case strings.HasPrefix(err.Error(), "json: unknown field"):
			return req, fmt.Errorf("unknown field %s", strings.TrimPrefix(err.Error(), "json: unknown field "))
		}
		return req, fmt.Errorf("frame is not a JSON object: %v", err)
	}
	if dec.More() {
		return req, errors.New("frame holds more than one JSON value")
	}
	if req.Op == "" {
		return req, errors.New(`frame has no "op"`)
	}
	return req, nil
}

// encode marshals v, a reply (which embeds protocol.Reply) or a push; the
// fields are ours, so it cannot fail. <, > and & stay as they are (not
// \u003c…), as in the API's answers, so an error quoting a client's value
// reads as it was sent.
func encode(v any) []byte {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		panic(fmt.Sprintf("ws: encode %T: %v", v, err))
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n")) // Encode ends every value with one
}

func okReply(id uint64) []byte { return encode(protocol.Reply{ID: id, OK: true}) }

func errorReply(id uint64, err error) []byte {
	e := server.AsError(err)
	d := &protocol.ErrorDetail{Code: e.Code, Message: e.Message, Channel: e.Channel}
	if e.RetryAfter > 0 {
		d.RetryAfter = int((e.RetryAfter + 999_999_999) / 1_000_000_000)
	}
	return encode(protocol.Reply{ID: id, Error: d})
}

// badRequest is a 400 reply for a frame the transport itself refuses.
func badRequest(id uint64, format string, args ...any) []byte {
	return encode(protocol.Reply{ID: id, Error: &protocol.ErrorDetail{Code: 400, Message: fmt.Sprintf(format, args...)}})
}
