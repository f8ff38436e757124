package protocol

import "encoding/json"

// Envelope is a message as every transport and the API carry it
// (PROTOCOL.md, "Envelope"), for decoding. The server writes envelopes
// as pre-encoded bytes; a client that needs the exact bytes keeps them
// (json.RawMessage) and decodes this beside them.
type Envelope struct {
	Channel string `json:"channel"`
	// Offset is the message's place in the channel's log, from 1; 0 (absent)
	// for ephemeral messages and server events, which are not stored.
	Offset uint64 `json:"offset,omitempty"`
	// Epoch names one lifetime of the channel's log.
	Epoch string `json:"epoch,omitempty"`
	// ID is "m_" and a ULID; absent on some server events.
	ID    string          `json:"id,omitempty"`
	Event string          `json:"event"`
	Data  json.RawMessage `json:"data"`
	// Time is when the message was published: RFC 3339, UTC, milliseconds.
	Time string `json:"time,omitempty"`
	// From is present when a user (not the API key) published.
	From *Sender `json:"from,omitempty"`
}

// Sender is an envelope's "from": the publishing user and session.
type Sender struct {
	User    string `json:"user,omitempty"`
	Session string `json:"session,omitempty"`
}

// SubscribeResult is where a channel stands as a subscription starts:
// an element of herald.connected's channels, and the WebSocket subscribe
// reply's fields.
type SubscribeResult struct {
	Channel string `json:"channel"`
	Epoch   string `json:"epoch"`
	// Head is the channel's newest offset when the subscription started
	// (0 when empty). On the wire it is "offset".
	Head uint64 `json:"offset"`
}

// Connected is the data of herald.connected, the first event of an SSE
// stream (PROTOCOL.md, "Server events"): the session, the user's system
// channel (absent when anonymous or the API key) and each channel's
// epoch and head at connect.
type Connected struct {
	Session     string            `json:"session"`
	UserChannel string            `json:"user_channel,omitempty"`
	Channels    []SubscribeResult `json:"channels"`
}

// ResetData is the data of herald.reset: why the position is no longer
// covered (ResetTrimmed, ResetEpochChanged, ResetUnknownPosition), the
// channel's epoch, the offset what follows resumes after, and the head.
type ResetData struct {
	Reason      string `json:"reason"`
	Epoch       string `json:"epoch"`
	ResumeAfter uint64 `json:"resume_after"`
	Head        uint64 `json:"head"`
}

// DisconnectData is the data of herald.disconnect (SSE, and the last
// element of a poll answer's messages): why the server ends the session
// (a Reason… constant) and whether the client should reconnect and
// resume.
type DisconnectData struct {
	Reason    string `json:"reason"`
	Reconnect bool   `json:"reconnect"`
}

// UnsubscribedData is the data of herald.unsubscribed.
type UnsubscribedData struct {
	Reason string `json:"reason"`
}

// UserEventData is the data of herald.online and herald.offline.
type UserEventData struct {
	User string `json:"user"`
	At   string `json:"at"`
}

// PollAnswer is the answer of GET and POST /poll (PROTOCOL.md, "Long
// polling"): envelopes in order per channel (with herald.reset,
// herald.unsubscribed and, last, herald.disconnect notices among them),
// the cursor to send back, and the session.
type PollAnswer struct {
	Messages []json.RawMessage `json:"messages"`
	Cursor   string            `json:"cursor"`
	Session  string            `json:"session"`
	// Positions, when the poll asked for them (positions=1), is where the
	// session stands on each channel after this answer: what the cursor
	// holds, for a client that keeps per-channel positions (to resume on
	// another transport, or a channel that had no message yet).
	Positions []Position `json:"positions,omitempty"`
}

// Position is where a client stands on a channel: the epoch and the last
// offset it holds (0: none, in that epoch).
type Position struct {
	Channel string `json:"channel"`
	Epoch   string `json:"epoch"`
	Offset  uint64 `json:"offset"`
}

// PollRequest is the JSON body of POST /poll, for many channels; GET
// /poll takes the same fields in its query (channel, cursor, session,
// timeout, since, epoch).
type PollRequest struct {
	Channels []string `json:"channels"`
	Cursor   string   `json:"cursor,omitempty"`
	Session  string   `json:"session,omitempty"`
	// Timeout is how long the server may hold the poll, in whole
	// seconds; absent for the server's default.
	Timeout *int `json:"timeout,omitempty"`
	// Since and Epoch are per-channel positions, one per channel in
	// order ("" = from the head), for a client without a cursor.
	Since []string `json:"since,omitempty"`
	Epoch []string `json:"epoch,omitempty"`
	// Positions asks for the answer's positions (PollAnswer.Positions).
	Positions bool `json:"positions,omitempty"`
}
