// Package writer is the machinery the streaming transports (SSE and
// WebSocket) write with: a Flusher writes every connection of a
// transport from a few shard loops (one per CPU) instead of a goroutine
// per connection, with writes that never wait — a socket that cannot take
// a write at once gets a goroutine of its own until it has (or is dropped
// as a slow consumer) — paced as the core says (server.Session.Pacing),
// with heartbeats from one timer per shard; and a Group owns the
// goroutines that outlive the request that started them (the loops, the
// slow writes, a hijacked connection's reader) so that a shutdown can
// wait for them. DefaultCoalesce is the transports' one coalescing
// default.
//
// It holds no transport's wire format: a transport hands the Flusher its
// Framer, which drains the session and frames what it had. It imports
// server (for the session) and nothing of the transports, which import it
// (it is internal to transports/); long polling needs neither, as its
// writer is the poll's own request.
package writer
