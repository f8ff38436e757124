package client

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/heraldrt/herald/protocol"
)

// Errors a caller tests with errors.Is. A subscription's terminal error
// (from Subscribe or Next) wraps one of the first three, or is the
// context's.
var (
	// ErrRefused: the server refused the subscription for good — a
	// 4xx answer other than 408 and 429 (bad channel, bad cursor, 401,
	// 403), a WebSocket closed with 4001, or a URL that is not a Herald
	// server. errors.As finds the *APIError when there is one.
	ErrRefused = errors.New("subscription refused")
	// ErrDisconnected: the server ended the subscription and said not to
	// reconnect (revoked, disconnected, banned, replaced). errors.As finds
	// the *DisconnectError.
	ErrDisconnected = errors.New("disconnected for good")
	// ErrInconsistent: the server sent streams that break the protocol
	// (gaps, malformed events) several times in a row.
	ErrInconsistent = errors.New("inconsistent streams")
	// ErrClosed: the subscription was closed by Close.
	ErrClosed = errors.New("subscription closed")
)

// APIError is an error answer of the server: a non-2xx HTTP answer, or
// an ok:false WebSocket reply (whose code is the HTTP status of the same
// error on the API).
type APIError struct {
	Status  int    // HTTP status (a WebSocket reply: its code)
	Code    int    // the error body's code (equals Status on Herald)
	Message string // the error body's message, or a snippet of the body
	// Channel is the channel the error names, when it names one.
	Channel string
	// RetryAfter is when to try again (429, 503); 0 when the server did
	// not say.
	RetryAfter time.Duration
}

var _ error = (*APIError)(nil)

func (e *APIError) Error() string {
	s := fmt.Sprintf("server answered %d %s", e.Status, http.StatusText(e.Status))
	if e.Message != "" {
		s += ": " + e.Message
	}
	return s
}

// Retryable reports whether trying again later can help: 408, 429 and
// server-side (5xx) failures. Other 4xx answers (bad request, bad cursor,
// 401, 403, 404) will be the same next time.
func (e *APIError) Retryable() bool {
	return e.Status == http.StatusRequestTimeout || e.Status == http.StatusTooManyRequests || e.Status >= 500
}

// maxErrorBody bounds how much of an error answer is read.
const maxErrorBody = 64 << 10

// ErrorFromResponse reads a non-2xx answer into an *APIError: Herald's
// {"error":{"code","message","channel","retry_after"}} (protocol.ErrorBody)
// and Retry-After; anything else (a proxy's HTML page) is quoted briefly.
// It does not close the body. For callers that send their own requests.
func ErrorFromResponse(resp *http.Response) *APIError {
	e := &APIError{Status: resp.StatusCode, Code: resp.StatusCode}
	body, _ := io.ReadAll(io.LimitReader(resp.Body, maxErrorBody))
	var eb protocol.ErrorBody
	if json.Unmarshal(body, &eb) == nil && eb.Error.Message != "" {
		e.Message, e.Channel = eb.Error.Message, eb.Error.Channel
		if eb.Error.Code != 0 {
			e.Code = eb.Error.Code
		}
		if eb.Error.RetryAfter > 0 {
			e.RetryAfter = time.Duration(eb.Error.RetryAfter) * time.Second
		}
	} else {
		e.Message = bodySnippet(body)
	}
	if secs, err := strconv.Atoi(strings.TrimSpace(resp.Header.Get("Retry-After"))); err == nil && secs > 0 {
		e.RetryAfter = time.Duration(secs) * time.Second
	}
	return e
}

// replyError turns an ok:false WebSocket reply into an *APIError, so a
// refusal reads, and is retried or not, the same on every transport.
func replyError(f protocol.Frame) *APIError {
	if f.Error == nil || f.Error.Code == 0 {
		msg := "an error reply without an error code"
		if f.Error != nil && f.Error.Message != "" {
			msg = f.Error.Message
		}
		return &APIError{Status: http.StatusInternalServerError, Code: http.StatusInternalServerError, Message: msg}
	}
	e := f.Error
	return &APIError{Status: e.Code, Code: e.Code, Message: e.Message, Channel: e.Channel,
		RetryAfter: time.Duration(e.RetryAfter) * time.Second}
}

// bodySnippet returns the start of a body, on one line, for an error message.
func bodySnippet(b []byte) string {
	const max = 200
	s := strings.Join(strings.Fields(string(b)), " ")
	if len(s) > max {
		s = s[:max] + "…"
	}
	return s
}

// DisconnectError is the server's notice that it ended a subscription
// (herald.disconnect, or a WebSocket disconnect push) with reconnect:
// false. errors.Is(err, ErrDisconnected) holds.
type DisconnectError struct {
	// Reason is protocol.ReasonRevoked, ReasonDisconnected, ReasonBanned
	// or ReasonReplaced.
	Reason string
}

func (e *DisconnectError) Error() string {
	return "the server closed the stream for good: " + e.Reason
}

// Is makes errors.Is(err, ErrDisconnected) hold.
func (e *DisconnectError) Is(target error) bool { return target == ErrDisconnected }

// refusedError marks err as a refusal (errors.Is(…, ErrRefused)) and
// reads as err.
type refusedError struct{ err error }

func (e *refusedError) Error() string        { return e.err.Error() }
func (e *refusedError) Unwrap() error        { return e.err }
func (e *refusedError) Is(target error) bool { return target == ErrRefused }

func refused(err error) error { return &refusedError{err} }
