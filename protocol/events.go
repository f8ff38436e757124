package protocol

// Event names (PROTOCOL.md, "Server events"). A message's event is the
// envelope's "event" and, on SSE, the event: line.
const (
	// DefaultEvent is the event of a message published without one. A
	// browser's EventSource delivers it to onmessage.
	DefaultEvent = "message"
	// ReservedPrefix starts the names of the server's own events;
	// publishers may not use it.
	ReservedPrefix = "herald."

	// EventConnected opens every SSE stream; its data is Connected.
	EventConnected = "herald.connected"
	// EventReset says a client's position is no longer covered (the
	// history was trimmed, the log's epoch changed, or the client is
	// ahead of the log); its data is ResetData. What is kept follows.
	EventReset = "herald.reset"
	// EventDisconnect is the server's notice that it ends the stream or
	// session; its data is DisconnectData.
	EventDisconnect = "herald.disconnect"
	// EventUnsubscribed tells a client that one of its subscriptions
	// ended (its access was revoked); its data is UnsubscribedData. The
	// stream goes on for its other channels.
	EventUnsubscribed = "herald.unsubscribed"

	// EventJoin and EventLeave announce a member's first session in a
	// channel and the end of its last one (rule join_leave: true); their
	// data is the Member.
	EventJoin  = "herald.join"
	EventLeave = "herald.leave"
	// EventState announces a member's short-lived state (signal) or its
	// expiry; its data is the Member with its state.
	EventState = "herald.state"
	// EventOnline and EventOffline announce a member's first session on
	// the server and the end of its last one (rule status: true); their
	// data is UserEventData.
	EventOnline  = "herald.online"
	EventOffline = "herald.offline"
)

// Reasons of a herald.reset (ResetData.Reason).
const (
	// ResetTrimmed: retention removed the client's position.
	ResetTrimmed = "trimmed"
	// ResetEpochChanged: the channel's log was lost or reset; offsets of
	// the old epoch mean nothing.
	ResetEpochChanged = "epoch_changed"
	// ResetUnknownPosition: the client is ahead of the log.
	ResetUnknownPosition = "unknown_position"
)

// Reasons of a herald.disconnect, a WebSocket disconnect push and the
// close reason a session ends with (DisconnectData.Reason). The first
// six come with reconnect: true: the client reconnects and resumes.
const (
	ReasonShutdown     = "shutdown"      // the server is stopping
	ReasonSlowConsumer = "slow_consumer" // the client did not read fast enough
	ReasonWriteError   = "write_error"   // writing to the client failed
	ReasonInternal     = "internal"      // the server found an inconsistency
	ReasonTokenExpired = "token_expired" // reconnect with a fresh token
	// ReasonUnavailable: the store could not be read for a moment (a
	// cluster's leader changing): reconnect and resume, after a backoff.
	ReasonUnavailable = "unavailable"

	ReasonRevoked      = "revoked"      // no channel left (grants revoked)
	ReasonDisconnected = "disconnected" // the backend disconnected the user
	ReasonBanned       = "banned"       // the backend banned the user
	// ReasonReplaced: a newer connection continued this session, or the
	// user opened more sessions than allowed and this was the oldest.
	ReasonReplaced = "replaced"
	// ReasonClientGone is the server's own record of a client that left;
	// no client is ever told it.
	ReasonClientGone = "client_gone"
)
