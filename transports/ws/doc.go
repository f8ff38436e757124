// Package ws serves Herald's channels over WebSocket (GET /ws): JSON text
// frames carrying ops from the client (subscribe, unsubscribe, publish,
// history, refresh, ping) and replies and pushes from the server, as
// transports/PROTOCOL.md specifies.
//
// It is a thin adapter: github.com/gorilla/websocket does the handshake
// (origin check, compression negotiation); the transport reads and
// writes the frames itself (frames.go, writer.go), parses ops, and asks
// the core (server.Server) for everything else — identity, permissions,
// the store, flow control.
//
// Concurrency: no goroutine waits on an idle connection. The handler's
// watch.Watcher hands the connection's reader what the client sends; the
// reader parses frames, answers pings and the closing handshake, and
// queues each op for a goroutine that serves the connection's ops in
// order and runs only while there are some (past 256 waiting ops the
// connection is not read until they are served). Replies go onto the
// session's queue, so the handler's writer.Flusher — the connection's one
// writer — sends them in order with the session's messages; it also sends
// pings and, when the core closes the session (shutdown, slow consumer,
// token expiry), a disconnect push and the close frame. A client heard
// from neither by a frame nor by a pong for the ping interval plus the
// pong timeout is dropped; a client that cannot take a write within the
// write timeout is dropped too. Either way the session is closed and its
// subscriptions freed; the client resumes from its offsets.
//
// It imports server (the core) and transports/internal/writer and
// transports/internal/watch (the flusher and the watcher it shares with
// SSE), never the HTTP API or another transport.
package ws
