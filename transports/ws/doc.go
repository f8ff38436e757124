// Package ws serves Herald's channels over WebSocket (GET /ws): JSON text
// frames carrying ops from the client (subscribe, unsubscribe, publish,
// history, refresh, ping) and replies and pushes from the server, as
// transports/PROTOCOL.md specifies.
//
// It is a thin adapter on github.com/gorilla/websocket: it parses frames
// and writes frames, and asks the core (server.Server) for everything
// else — identity, permissions, the store, flow control.
//
// Concurrency: each connection has exactly two goroutines, both started
// and awaited by ServeHTTP. The reader owns reads and turns each op into
// a core call; its replies go onto the session's queue, so the writer —
// the only goroutine that writes data frames — sends them in order with
// the session's messages. The writer also sends pings and, when the core
// closes the session (shutdown, slow consumer, token expiry), a disconnect
// push and the close frame. A reader that stops answering is dropped when
// its read deadline (ping interval + pong timeout) passes; a writer that
// cannot write within the write timeout is dropped too. Either way the
// session is closed and its subscriptions freed; the client resumes from
// its offsets.
//
// It imports server (the core) and transports/internal/writer (the
// on-demand writer it shares with SSE), never the HTTP API or another
// transport.
package ws
