// Package sse serves Herald's channels as Server-Sent Events
// (GET /sse?channel=A&channel=B), the transport a browser's EventSource
// speaks.
//
// It is a thin adapter: it authenticates and opens a session through the
// core, then loops, writing whatever the session's queue yields as SSE
// events and a comment line every heartbeat. Every stored message's id: is
// the stream's resume cursor after it, so a browser's automatic reconnect
// (Last-Event-ID) resumes every channel with no gap and no duplicate.
//
// One goroutine — the request's — owns the ResponseWriter: it is the only
// writer, and it returns (closing the session) when the client goes, a
// write fails or times out, or the core closes the session (slow
// consumer, shutdown), in which case it first writes a herald.disconnect
// event telling the client whether to reconnect.
package sse
