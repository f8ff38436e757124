package ws

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/heraldrt/herald/server"
)

// request is one client frame. Fields unused by an op must be absent.
type request struct {
	ID             uint64          `json:"id"`
	Op             string          `json:"op"`
	Token          string          `json:"token,omitempty"`
	Session        string          `json:"session,omitempty"`
	Channel        string          `json:"channel,omitempty"`
	Since          *uint64         `json:"since,omitempty"`
	Epoch          string          `json:"epoch,omitempty"`
	Limit          *uint64         `json:"limit,omitempty"`
	Event          string          `json:"event,omitempty"`
	Data           json.RawMessage `json:"data,omitempty"`
	IdempotencyKey string          `json:"idempotency_key,omitempty"`
	ExcludeSelf    bool            `json:"exclude_self,omitempty"`
	Ephemeral      bool            `json:"ephemeral,omitempty"`
	Stats          bool            `json:"stats,omitempty"`
	State          json.RawMessage `json:"state,omitempty"`
	TTL            *float64        `json:"ttl,omitempty"`
}

// decodeRequest parses a frame strictly: one JSON object, known fields
// only, an op. The error message names the problem for the error reply.
func decodeRequest(frame []byte) (request, error) {
	var req request
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

// reply is the envelope of every answer: the request's id and ok, plus
// the op's fields or the error.
type reply struct {
	ID    uint64       `json:"id"`
	OK    bool         `json:"ok"`
	Error *errorDetail `json:"error,omitempty"`
}

type errorDetail struct {
	Code       int    `json:"code"`
	Message    string `json:"message"`
	Channel    string `json:"channel,omitempty"`
	RetryAfter int    `json:"retry_after,omitempty"`
}

// encode marshals v, which embeds reply; the fields are ours, so it cannot
// fail. <, > and & stay as they are (not \u003c…), as in the API's
// answers, so an error quoting a client's value reads as it was sent.
func encode(v any) []byte {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		panic(fmt.Sprintf("ws: encode %T: %v", v, err))
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n")) // Encode ends every value with one
}

func okReply(id uint64) []byte { return encode(reply{ID: id, OK: true}) }

func errorReply(id uint64, err error) []byte {
	e := server.AsError(err)
	d := &errorDetail{Code: e.Code, Message: e.Message, Channel: e.Channel}
	if e.RetryAfter > 0 {
		d.RetryAfter = int((e.RetryAfter + 999_999_999) / 1_000_000_000)
	}
	return encode(reply{ID: id, Error: d})
}

// badRequest is a 400 reply for a frame the transport itself refuses.
func badRequest(id uint64, format string, args ...any) []byte {
	return encode(reply{ID: id, Error: &errorDetail{Code: 400, Message: fmt.Sprintf(format, args...)}})
}

type subscribeReply struct {
	reply
	server.SubscribeResult
}

type publishReply struct {
	reply
	Channel   string `json:"channel"`
	Offset    uint64 `json:"offset,omitempty"`
	Epoch     string `json:"epoch,omitempty"`
	MessageID string `json:"message_id"`
	Duplicate bool   `json:"duplicate,omitempty"`
	Ephemeral bool   `json:"ephemeral,omitempty"`
}

type historyReply struct {
	reply
	server.HistoryPage
}

type presenceReply struct {
	reply
	server.PresenceInfo
}

type authReply struct {
	reply
	Session string `json:"session"`
	User    string `json:"user,omitempty"`
}

type refreshReply struct {
	reply
	Expires string `json:"expires,omitempty"`
}

// Pushes.

type connectedPush struct {
	Type        string `json:"type"`
	Session     string `json:"session"`
	User        string `json:"user,omitempty"`
	UserChannel string `json:"user_channel,omitempty"`
}

type disconnectPush struct {
	Type      string `json:"type"`
	Code      int    `json:"code"`
	Reason    string `json:"reason"`
	Reconnect bool   `json:"reconnect"`
}

// skipPush stands for a message the client excluded itself from.
type skipPush struct {
	Type    string `json:"type"`
	Channel string `json:"channel"`
	Offset  uint64 `json:"offset"`
	Epoch   string `json:"epoch"`
}

type unsubscribedPush struct {
	Type    string `json:"type"`
	Channel string `json:"channel"`
	Reason  string `json:"reason"`
}

// Frame pieces around envelopes, which are written as they are, never
// re-encoded.
const (
	messagePrefix  = `{"type":"message","message":`
	resetPrefix    = `{"type":"reset","message":`
	presencePrefix = `{"type":"presence","message":`
	batchPrefix    = `{"type":"batch","messages":[`
)

// Close codes (PROTOCOL.md). 4000–4999 are Herald's own.
const (
	closeUnauthorized = 4001
	closePolicy       = 4008
	closeSlowConsumer = 4009
	closeTokenExpired = 4010
)
