package protocol

import "encoding/json"

// WebSocket ops, the "op" of a client frame (PROTOCOL.md, "Client →
// server").
const (
	OpAuth        = "auth" // first frame only, when the upgrade carried no credentials
	OpSubscribe   = "subscribe"
	OpUnsubscribe = "unsubscribe"
	OpPublish     = "publish"
	OpHistory     = "history"
	OpRefresh     = "refresh"
	OpPresence    = "presence"
	OpSignal      = "signal"
	OpPing        = "ping"
)

// WebSocket push types, the "type" of a server frame that is not a reply
// (PROTOCOL.md, "Server → client pushes").
const (
	PushMessage      = "message"      // Message: one envelope
	PushBatch        = "batch"        // Messages: several envelopes, in order
	PushReset        = "reset"        // Message: a herald.reset envelope
	PushPresence     = "presence"     // Message: a herald.join/leave/state/online/offline envelope
	PushSkip         = "skip"         // Channel, Offset, Epoch: a message excluded for this connection
	PushUnsubscribed = "unsubscribed" // Channel, Reason
	PushConnected    = "connected"    // Session, User, UserChannel
	PushDisconnect   = "disconnect"   // Code, Reason, Reconnect
)

// WebSocket close codes (PROTOCOL.md, "Close codes"). 4000–4999 are
// Herald's own.
const (
	// CloseNormal: the peer is done.
	CloseNormal = 1000
	// CloseProtocolError: the peer broke the protocol (a client closes
	// with it on an inconsistent stream).
	CloseProtocolError = 1002
	// CloseUnsupportedData: the client sent a binary frame. Fix the client.
	CloseUnsupportedData = 1003
	// CloseAbnormal is never sent: it stands for a connection that ended
	// without a close frame.
	CloseAbnormal = 1006
	// CloseMessageTooBig: a frame over ws.max_frame_bytes. Fix the client.
	CloseMessageTooBig = 1009
	// CloseInternalError: reconnect and resume.
	CloseInternalError = 1011
	// CloseServiceRestart: the server is shutting down; reconnect and resume.
	CloseServiceRestart = 1012
	// CloseTryAgainLater: the store could not be read for a moment;
	// reconnect after a backoff and resume.
	CloseTryAgainLater = 1013
	// CloseUnauthorized: no, bad or expired credentials at connect.
	// Reconnect only with valid credentials.
	CloseUnauthorized = 4001
	// ClosePolicy: a limit was exceeded, or the user was disconnected,
	// banned or replaced (the disconnect push says which); at connect, a
	// banned identity. Not now: later, or not at all.
	ClosePolicy = 4008
	// CloseSlowConsumer: the client did not read fast enough; reconnect
	// and resume.
	CloseSlowConsumer = 4009
	// CloseTokenExpired: the token expired without a refresh; reconnect
	// with a fresh one.
	CloseTokenExpired = 4010
)

// CloseName names a close code for a message ("slow consumer"), "" for
// a code PROTOCOL.md does not list.
func CloseName(code int) string {
	switch code {
	case CloseNormal:
		return "normal closure"
	case 1001:
		return "going away"
	case CloseProtocolError:
		return "protocol error"
	case CloseUnsupportedData:
		return "binary frame refused"
	case CloseAbnormal:
		return "abnormal closure"
	case CloseMessageTooBig:
		return "frame too big"
	case CloseInternalError:
		return "internal error"
	case CloseServiceRestart:
		return "server restarting"
	case CloseUnauthorized:
		return "unauthorized"
	case ClosePolicy:
		return "policy: a limit was exceeded"
	case CloseSlowConsumer:
		return "slow consumer"
	case CloseTokenExpired:
		return "token expired"
	}
	return ""
}

// Request is a client → server frame: an op with its fields. Fields an
// op does not use must be absent (the server decodes strictly).
type Request struct {
	// ID is chosen by the client and echoed in the reply.
	ID uint64 `json:"id"`
	Op string `json:"op"`
	// Token: auth, refresh.
	Token string `json:"token,omitempty"`
	// Session: auth, the session to continue.
	Session string `json:"session,omitempty"`
	Channel string `json:"channel,omitempty"`
	// Since is the last offset held (subscribe) or the exclusive start of
	// a history page; Epoch the epoch it belongs to.
	Since *uint64 `json:"since,omitempty"`
	Epoch string  `json:"epoch,omitempty"`
	// Limit: history, 1 to 1000.
	Limit *uint64 `json:"limit,omitempty"`
	// Event, Data, IdempotencyKey, ExcludeSelf, Ephemeral: publish.
	Event          string          `json:"event,omitempty"`
	Data           json.RawMessage `json:"data,omitempty"`
	IdempotencyKey string          `json:"idempotency_key,omitempty"`
	// ExcludeSelf keeps the message from this connection's session; a
	// skip push takes its place.
	ExcludeSelf bool `json:"exclude_self,omitempty"`
	Ephemeral   bool `json:"ephemeral,omitempty"`
	// Stats: presence, counts only.
	Stats bool `json:"stats,omitempty"`
	// State, TTL: signal (TTL in seconds).
	State json.RawMessage `json:"state,omitempty"`
	TTL   *float64        `json:"ttl,omitempty"`
}

// Reply starts every answer to an op: the op's id and whether it
// succeeded, with the error when not. The op's own fields follow (the
// …Reply types embed it).
type Reply struct {
	ID    uint64       `json:"id"`
	OK    bool         `json:"ok"`
	Error *ErrorDetail `json:"error,omitempty"`
}

// SubscribeReply answers subscribe: where the channel stands.
type SubscribeReply struct {
	Reply
	SubscribeResult
}

// PublishReply answers publish once the message is stored (ephemeral:
// at once, with MessageID and Ephemeral only).
type PublishReply struct {
	Reply
	Channel   string `json:"channel"`
	Offset    uint64 `json:"offset,omitempty"`
	Epoch     string `json:"epoch,omitempty"`
	MessageID string `json:"message_id"`
	Duplicate bool   `json:"duplicate,omitempty"`
	Ephemeral bool   `json:"ephemeral,omitempty"`
}

// HistoryReply answers history.
type HistoryReply struct {
	Reply
	HistoryPage
}

// PresenceReply answers presence.
type PresenceReply struct {
	Reply
	Presence
}

// AuthReply answers auth.
type AuthReply struct {
	Reply
	Session string `json:"session"`
	User    string `json:"user,omitempty"`
}

// RefreshReply answers refresh: when the new token expires (RFC 3339;
// absent for a token without exp).
type RefreshReply struct {
	Reply
	Expires string `json:"expires,omitempty"`
}

// ConnectedPush says the identity is known: the session (what
// exclude_session names and what a reconnect passes back as
// ?session=), the user and the user's system channel.
type ConnectedPush struct {
	Type        string `json:"type"`
	Session     string `json:"session"`
	User        string `json:"user,omitempty"`
	UserChannel string `json:"user_channel,omitempty"`
}

// DisconnectPush comes before the server closes a connection: the close
// code, the reason (a Reason… constant) and whether to reconnect.
type DisconnectPush struct {
	Type      string `json:"type"`
	Code      int    `json:"code"`
	Reason    string `json:"reason"`
	Reconnect bool   `json:"reconnect"`
}

// SkipPush stands for a message this connection excluded itself from
// (exclude_self): not sent, but its offset counts as handled.
type SkipPush struct {
	Type    string `json:"type"`
	Channel string `json:"channel"`
	Offset  uint64 `json:"offset"`
	Epoch   string `json:"epoch"`
}

// UnsubscribedPush says a subscription ended on the server's side.
type UnsubscribedPush struct {
	Type    string `json:"type"`
	Channel string `json:"channel"`
	Reason  string `json:"reason"`
}

// Frame is any server → client frame, for decoding: a reply (OK is set)
// or a push (Type is set). Its fields are the union of the pushes' and
// of the subscribe, publish and auth replies'; the history, presence and
// refresh replies decode into their own types.
type Frame struct {
	ID    uint64       `json:"id"`
	OK    *bool        `json:"ok"`
	Error *ErrorDetail `json:"error"`

	Type     string            `json:"type"`
	Message  json.RawMessage   `json:"message"`  // message, reset, presence
	Messages []json.RawMessage `json:"messages"` // batch

	Channel     string `json:"channel"`
	Epoch       string `json:"epoch"`
	Offset      uint64 `json:"offset"`
	MessageID   string `json:"message_id"`
	Duplicate   bool   `json:"duplicate"`
	Ephemeral   bool   `json:"ephemeral"`
	Session     string `json:"session"`
	User        string `json:"user"`
	UserChannel string `json:"user_channel"`
	Code        int    `json:"code"`
	Reason      string `json:"reason"`
	Reconnect   bool   `json:"reconnect"`
}

// Frame prefixes the server writes around envelopes it never re-encodes:
// a message, reset or presence push is the prefix, the envelope and "}";
// a batch is BatchPrefix, envelopes joined by ",", and "]}".
const (
	MessagePrefix  = `{"type":"` + PushMessage + `","message":`
	ResetPrefix    = `{"type":"` + PushReset + `","message":`
	PresencePrefix = `{"type":"` + PushPresence + `","message":`
	BatchPrefix    = `{"type":"` + PushBatch + `","messages":[`
)
