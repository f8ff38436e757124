// Package writer is the machinery the streaming transports (SSE and
// WebSocket) write with: a Pump runs a connection's writer goroutine only
// while the session has something to send, paced as the core says
// (server.Session.Pacing), and a Group owns the goroutines that outlive
// the request that started them (the writer and reader of a hijacked
// connection) so that a shutdown can wait for them. DefaultCoalesce is the
// transports' one coalescing default.
//
// It holds no transport's wire format: a transport hands the Pump its
// turn function, which drains the session and writes frames. It imports
// server (for the session) and nothing of the transports, which import it
// (it is internal to transports/); long polling needs neither, as its
// writer is the poll's own request.
package writer
