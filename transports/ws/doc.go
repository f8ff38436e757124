// Package ws serves Herald's channels over WebSocket (GET /ws): JSON text
// frames carrying ops from the client (subscribe, unsubscribe, publish,
// history, refresh, ping) and replies and pushes from the server, as
// transports/PROTOCOL.md specifies.
//
// It is a thin adapter: github.com/gorilla/websocket does the handshake
// and reads frames; the transport parses ops, encodes its own frames
// (writer.go), and asks the core (server.Server) for everything else —
// identity, permissions, the store, flow control.
//
// Concurrency: each connection has a reader goroutine, owned by the
// Handler, which owns reads and turns each op into a core call; its
// replies go onto the session's queue, so the handler's writer.Flusher —
// the only writer of the connection — sends them in order with the
// session's messages. The reader hands the flusher the control frames it
// must answer (pongs, the close handshake). The flusher also sends pings
// and, when the core closes the session (shutdown, slow consumer, token
// expiry), a disconnect push and the close frame. A reader that stops answering is dropped when
// its read deadline (ping interval + pong timeout) passes; a writer that
// cannot write within the write timeout is dropped too. Either way the
// session is closed and its subscriptions freed; the client resumes from
// its offsets.
//
// It imports server (the core) and transports/internal/writer (the
// flusher it shares with SSE), never the HTTP API or another
// transport.
package ws
