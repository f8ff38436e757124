// Package protocol is Herald's wire vocabulary, in one place: the names
// and JSON shapes that cross the network between the server and its
// clients, shared by the transports, the core, the Go client
// (package client) and the load generator (internal/bench). The prose
// that goes with them — what each event means, when it comes, which
// guarantees hold — is transports/PROTOCOL.md; every comment here points
// at its section.
//
// What is here: the server's event names and the default event
// (events.go); the data of herald.connected, herald.reset,
// herald.disconnect and herald.unsubscribed and the message envelope,
// for decoding (stream.go); the WebSocket ops, push types, close codes
// and frames (websocket.go); the long-poll answer and POST body, the
// error body and the server API's request and answer shapes (api.go).
//
// Rules:
//
//   - protocol imports nothing of Herald and nothing outside the standard
//     library: it is a leaf every other package may import.
//   - A shape exists once. Where a wire shape is also a core operation's
//     input or result (PublishRequest, PublishResult, HistoryPage,
//     SubscribeResult, Connected, Presence, SignalRequest, Grant), its
//     home is here and the core names it by a type alias
//     (server.PublishRequest = protocol.PublishRequest), so its operations
//     read naturally and no field list is written twice. What the core
//     needs beyond the wire (the caller's identity, a context, internal
//     flags) is a separate argument or a field of its own type, never a
//     field added here.
//   - Adding a field here changes the wire: PROTOCOL.md and the README
//     change with it.
//   - The core encodes message envelopes once, as bytes, and fans those
//     bytes out; Envelope is for decoding them (clients, tests), never
//     for the server's hot path.
//
// Everything here is plain data and constants: safe for concurrent use
// by construction.
package protocol
