package server

import (
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/heraldrt/herald/protocol"
	"github.com/heraldrt/herald/store"
)

// Sentinel errors. Every *Error wraps one of them, so callers test the
// category with errors.Is and read the details with errors.As.
var (
	ErrInvalid      = errors.New("invalid request")      // 400
	ErrUnauthorized = errors.New("unauthorized")         // 401
	ErrForbidden    = errors.New("forbidden")            // 403
	ErrNotFound     = errors.New("not found")            // 404
	ErrTooLarge     = errors.New("too large")            // 413
	ErrRateLimited  = errors.New("rate limited")         // 429
	ErrUnavailable  = errors.New("unavailable")          // 503
	ErrStorageFull  = errors.New("storage full")         // 507
	ErrInternal     = errors.New("internal error")       // 500
	ErrClosed       = errors.New("session closed")       // session is gone
	ErrShuttingDown = errors.New("server shutting down") // 503
)

// ErrMethodNotAllowed is the sentinel of a 405: the path exists, for
// other methods.
var ErrMethodNotAllowed = errors.New("method not allowed")

// Error is the one error type that reaches the wire. Code equals the HTTP
// status; the WebSocket transport sends it as the reply's error code.
type Error struct {
	Code    int
	Message string
	// Channel names the channel the error is about, when there is one.
	Channel string
	// RetryAfter is set on 429 and 503 errors.
	RetryAfter time.Duration
	kind       error
}

var _ error = (*Error)(nil)

func (e *Error) Error() string { return e.Message }

// Unwrap returns the sentinel of e's category.
func (e *Error) Unwrap() error { return e.kind }

func newError(code int, kind error, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...), kind: kind}
}

func invalidf(format string, args ...any) *Error {
	return newError(http.StatusBadRequest, ErrInvalid, format, args...)
}

// Invalidf returns a 400 *Error: for transports that refuse their own
// parameters with the same errors as the core.
func Invalidf(format string, args ...any) *Error { return invalidf(format, args...) }

// Errorf returns an *Error with the HTTP status code, wrapping the
// sentinel of that status: for the HTTP API and the transports, which
// refuse what is theirs to refuse (a route, a method, credentials) with
// the same errors as the core.
func Errorf(code int, format string, args ...any) *Error {
	kind := ErrInternal
	switch code {
	case http.StatusBadRequest:
		kind = ErrInvalid
	case http.StatusUnauthorized:
		kind = ErrUnauthorized
	case http.StatusForbidden:
		kind = ErrForbidden
	case http.StatusNotFound:
		kind = ErrNotFound
	case http.StatusMethodNotAllowed:
		kind = ErrMethodNotAllowed
	case http.StatusRequestEntityTooLarge:
		kind = ErrTooLarge
	case http.StatusTooManyRequests:
		kind = ErrRateLimited
	case http.StatusServiceUnavailable:
		kind = ErrUnavailable
	}
	return newError(code, kind, format, args...)
}

func unauthorizedf(format string, args ...any) *Error {
	return newError(http.StatusUnauthorized, ErrUnauthorized, format, args...)
}

func forbiddenf(channel, format string, args ...any) *Error {
	e := newError(http.StatusForbidden, ErrForbidden, format, args...)
	e.Channel = channel
	return e
}

func tooLargef(format string, args ...any) *Error {
	return newError(http.StatusRequestEntityTooLarge, ErrTooLarge, format, args...)
}

// AsError converts any error into an *Error for the wire. Errors that are
// not already *Error become a 500 whose message hides the internals (the
// caller logs the original), except shutdown and an engine that cannot
// reach its storage (store.ErrUnavailable), which are 503s.
func AsError(err error) *Error {
	var e *Error
	if errors.As(err, &e) {
		return e
	}
	if errors.Is(err, ErrShuttingDown) || errors.Is(err, ErrClosed) {
		e := newError(http.StatusServiceUnavailable, ErrUnavailable, "server shutting down")
		e.RetryAfter = time.Second
		return e
	}
	if errors.Is(err, store.ErrStorageFull) {
		// The store's message says how much is free and what to do.
		e := newError(http.StatusInsufficientStorage, ErrStorageFull, "%s", strings.TrimPrefix(err.Error(), "store: "))
		e.RetryAfter = 5 * time.Second
		return e
	}
	if errors.Is(err, store.ErrUnavailable) {
		e := newError(http.StatusServiceUnavailable, ErrUnavailable, "storage unavailable for now; try again")
		e.RetryAfter = time.Second
		return e
	}
	return newError(http.StatusInternalServerError, ErrInternal, "internal error")
}

// Reason says why a session ended. Metrics count closes by its String.
type Reason int

const (
	// ReasonClientGone: the client closed the connection or stopped polling.
	ReasonClientGone Reason = iota
	// ReasonShutdown: the server is stopping; the client should reconnect.
	ReasonShutdown
	// ReasonSlowConsumer: the session's send queue overflowed; the client
	// should reconnect and resume from its position.
	ReasonSlowConsumer
	// ReasonWriteError: writing to the client failed or timed out.
	ReasonWriteError
	// ReasonRevoked: the server took the session's access away.
	ReasonRevoked
	// ReasonInternal: the core found an inconsistency it will not paper over;
	// the client should reconnect and resume.
	ReasonInternal
	// ReasonTokenExpired: the session's token expired; the client should
	// reconnect with a fresh one.
	ReasonTokenExpired
	// ReasonKicked: the backend disconnected the user (POST /api/disconnect).
	ReasonKicked
	// ReasonBanned: the backend banned the user (POST /api/ban).
	ReasonBanned
	// ReasonReplaced: a newer connection took the session's place — the
	// client continued the session elsewhere (it reconnected before this
	// connection was seen to be gone), or the user opened a session past
	// limits.max_connections_per_user with close_oldest and this was the
	// oldest.
	ReasonReplaced
	// ReasonUnavailable: the engine could not be read for a moment
	// (store.ErrUnavailable: a cluster's leader changing); the client
	// should reconnect after a backoff and resume.
	ReasonUnavailable
)

var reasonNames = [...]string{
	ReasonClientGone:   protocol.ReasonClientGone,
	ReasonShutdown:     protocol.ReasonShutdown,
	ReasonSlowConsumer: protocol.ReasonSlowConsumer,
	ReasonWriteError:   protocol.ReasonWriteError,
	ReasonRevoked:      protocol.ReasonRevoked,
	ReasonInternal:     protocol.ReasonInternal,
	ReasonTokenExpired: protocol.ReasonTokenExpired,
	ReasonKicked:       protocol.ReasonDisconnected,
	ReasonBanned:       protocol.ReasonBanned,
	ReasonReplaced:     protocol.ReasonReplaced,
	ReasonUnavailable:  protocol.ReasonUnavailable,
}

func (r Reason) String() string {
	if r >= 0 && int(r) < len(reasonNames) {
		return reasonNames[r]
	}
	return fmt.Sprintf("reason(%d)", int(r))
}

// WriteFailed returns the reason for a failed write to a client: a write
// that timed out means the client does not read fast enough (a slow
// consumer, who resumes from its position); any other failure means the
// connection broke.
func WriteFailed(err error) Reason {
	var ne interface{ Timeout() bool }
	if errors.As(err, &ne) && ne.Timeout() {
		return ReasonSlowConsumer
	}
	return ReasonWriteError
}

// Reconnect reports whether a client closed for this reason should
// reconnect and resume from its position.
func (r Reason) Reconnect() bool {
	switch r {
	case ReasonShutdown, ReasonSlowConsumer, ReasonWriteError, ReasonInternal, ReasonTokenExpired, ReasonUnavailable:
		return true
	}
	return false
}

// DisconnectData is the data of the herald.disconnect notice a client gets
// when the server ends its session for reason: {"reason","reconnect"},
// the same on every transport.
func DisconnectData(reason Reason) []byte {
	b := make([]byte, 0, 48)
	b = append(b, `{"reason":"`...)
	b = append(b, reason.String()...)
	b = append(b, `","reconnect":`...)
	b = strconv.AppendBool(b, reason.Reconnect())
	return append(b, '}')
}

// Told reports whether a client is told why its session ended: not when
// it left itself, or when it cannot be written to.
func (r Reason) Told() bool { return r != ReasonClientGone && r != ReasonWriteError }
