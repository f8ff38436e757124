// Package sse serves Herald's channels as Server-Sent Events
// (GET /sse?channel=A&channel=B), the transport a browser's EventSource
// speaks.
//
// It is a thin adapter: it authenticates and opens a session through the
// core, then writes whatever the session's queue yields as SSE events and
// a comment line every heartbeat. Every stored message's id: is the
// stream's resume cursor after it, so a browser's automatic reconnect
// (Last-Event-ID) resumes every channel with no gap and no duplicate.
//
// The stream takes its connection over from net/http, and no goroutine
// waits on it while it idles: the handler's writer.Flusher takes a turn
// on the stream when its session has something to send or a heartbeat is
// due, and its watch.Watcher notices at once when the client goes. The
// stream ends (closing the session) when the client goes, a write fails
// or times out, or the core closes the session (slow consumer, shutdown),
// in which case the last turn first writes a herald.disconnect event
// telling the client whether to reconnect.
//
// It imports server (the core) and transports/internal/writer and
// transports/internal/watch (the flusher and the watcher it shares with
// WebSocket), never the HTTP API or another transport.
package sse
