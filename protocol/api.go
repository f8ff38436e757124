package protocol

import "encoding/json"

// ErrorBody is every error answer of the server API and of a refused
// stream or poll, with the matching HTTP status (PROTOCOL.md, "Errors"):
// {"error":{"code","message","channel"?,"retry_after"?}}. A WebSocket
// error reply carries the same ErrorDetail.
type ErrorBody struct {
	Error ErrorDetail `json:"error"`
}

// ErrorDetail says what went wrong: Code is the HTTP status of the same
// error on the API (400, 401, 403, 404, 405, 413, 429, 500, 503), Message
// names the problem, Channel the channel it is about (when there is one)
// and RetryAfter, in whole seconds, when to try again (429, 503).
type ErrorDetail struct {
	Code       int    `json:"code"`
	Message    string `json:"message"`
	Channel    string `json:"channel,omitempty"`
	RetryAfter int    `json:"retry_after,omitempty"`
}

// PublishRequest is the body of POST /api/publish (README, "Server
// API"), and the core's publish operation's input. Over a WebSocket the
// publish op carries Channel, Event, Data, IdempotencyKey and Ephemeral,
// and exclude_self in place of Session and ExcludeSender.
type PublishRequest struct {
	Channel string `json:"channel"`
	// Event is the message's event name; "" is DefaultEvent.
	Event string          `json:"event,omitempty"`
	Data  json.RawMessage `json:"data"`
	// IdempotencyKey makes a retried publish safe: a repeat within the
	// server's window returns the first result and stores nothing.
	IdempotencyKey string `json:"idempotency_key,omitempty"`
	// ExcludeSession is a session that must not receive the message: it
	// is passed over, live and on every replay to that session, on any
	// transport and across its reconnects. It must be one of the caller's
	// own sessions (the API key may name any).
	ExcludeSession string `json:"exclude_session,omitempty"`
	// Ephemeral messages are delivered live only: never stored, no offset.
	Ephemeral bool `json:"ephemeral,omitempty"`
	// Session is the publishing session: set by a transport for its own
	// session, or given by an API caller, which must name one of its own
	// sessions. It shows in the envelope's "from".
	Session string `json:"session,omitempty"`
	// ExcludeSender keeps the message from the publishing session
	// (Session), as exclude_self does on a WebSocket: the sender's other
	// sessions (other tabs, other devices) still get it.
	ExcludeSender bool `json:"exclude_sender,omitempty"`
}

// PublishResult acknowledges a publish: for a stored message, only once
// it is durable. Duplicate marks the first result returned again for a
// repeated idempotency key; Ephemeral a message that was not stored (no
// offset, no epoch).
type PublishResult struct {
	Channel   string `json:"channel"`
	Offset    uint64 `json:"offset,omitempty"`
	Epoch     string `json:"epoch,omitempty"`
	ID        string `json:"id"`
	Duplicate bool   `json:"duplicate,omitempty"`
	Ephemeral bool   `json:"ephemeral,omitempty"`
}

// BatchPublishRequest is the body of POST /api/publish that publishes
// many messages at once (README, "Server API"): each message has the
// fields of a PublishRequest, to any channel.
type BatchPublishRequest struct {
	Messages []PublishRequest `json:"messages"`
}

// BatchPublishResponse answers a BatchPublishRequest once every stored
// message is durable: one result per message, in order, and how many of
// them failed (a refused message does not stop the others).
type BatchPublishResponse struct {
	Results []BatchPublishResult `json:"results"`
	Failed  int                  `json:"failed"`
}

// BatchPublishResult is one message's answer in a batch: the fields of a
// PublishResult, or Error (with Channel) when it was refused or not
// stored.
type BatchPublishResult struct {
	Channel   string       `json:"channel"`
	Offset    uint64       `json:"offset,omitempty"`
	Epoch     string       `json:"epoch,omitempty"`
	ID        string       `json:"id,omitempty"`
	Duplicate bool         `json:"duplicate,omitempty"`
	Ephemeral bool         `json:"ephemeral,omitempty"`
	Error     *ErrorDetail `json:"error,omitempty"`
}

// HistoryPage is the answer of GET /api/history and of the WebSocket
// history op: stored messages after since, ascending.
type HistoryPage struct {
	Channel  string            `json:"channel"`
	Epoch    string            `json:"epoch"`
	Head     uint64            `json:"head"`
	Messages []json.RawMessage `json:"messages"`
	// Next is the since of the following page.
	Next uint64 `json:"next"`
	// Reset is true when since (≥ 1) is older than what is kept: messages
	// then start at the oldest kept one. Since 0 is never a reset.
	Reset bool `json:"reset"`
}

// Member is a channel member as GET /api/presence and the presence
// events show it. State is present on herald.state (null when cleared)
// and in presence answers.
type Member struct {
	User     string            `json:"user"`
	Attrs    map[string]string `json:"attrs,omitempty"`
	JoinedAt string            `json:"joined_at,omitempty"`
	Sessions int               `json:"sessions,omitempty"`
	State    json.RawMessage   `json:"state,omitempty"`
}

// Presence answers GET /api/presence and the presence op: the members
// (absent with stats=true), and how many members and sessions there are.
type Presence struct {
	Channel  string   `json:"channel"`
	Members  []Member `json:"members,omitempty"`
	Count    int      `json:"count"`
	Sessions int      `json:"sessions"`
}

// SignalRequest is the body of POST /api/signal (and the signal op's
// fields): set one's short-lived state in a presence channel, or clear
// it with a null or absent State.
type SignalRequest struct {
	Channel string          `json:"channel"`
	State   json.RawMessage `json:"state"`
	// TTL is the state's time to live, in seconds. Default 3.
	TTL *float64 `json:"ttl,omitempty"`
}

// Grant is dynamic access for one user to a channel (an exact name, or a
// prefix ending in *), as POST, DELETE and GET /api/grants read and
// write it. Actions are subscribe, publish, history and presence; none
// in a request means all four.
type Grant struct {
	User    string   `json:"user"`
	Channel string   `json:"channel"`
	Actions []string `json:"actions"`
}
