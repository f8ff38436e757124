// Package server is Herald's channel core: identity and authorisation, the
// publish pipeline, the hub that fans messages out, sessions with their
// bounded queues and resumable subscriptions, cursors, and the HTTP API.
// Transports (SSE, WebSocket, long polling) are thin adapters on top of it:
// they parse and write frames and ask the core for everything else.
//
// Invariants:
//
//   - Acknowledged means durable: Publish returns once the store has the
//     message (group commit).
//   - Per channel, every session sees stored messages in offset order, with
//     no gap and no duplicate, across the replay-to-live hand-over and across
//     reconnects (the client's position, or cursor, says where to resume).
//     The store's commit feed (Server.Committed) is the only source of live
//     stored messages, and it is ordered; a subscription registers before it
//     reads the head, so the store read and the live feed overlap and never
//     leave a hole; the overlap is dropped by offset.
//   - Fan-out never blocks: a session whose queue is full is closed as a
//     slow consumer and resumes from its position. A slow reader never slows
//     a publisher or another reader.
//   - Every request path asks one function, authorize, for permission.
//
// Concurrency: the store's committer goroutine runs the fan-out (it only
// pushes onto queues). Each session is drained by one writer at a time —
// a transport goroutine selecting on Ready, or a Pump writer started on
// demand (Notify) — which also pages the session's catch-up out of the
// store at the pace the client reads. The Server owns one goroutine, the
// presence clock, started by New and stopped by Shutdown; Group owns the
// goroutines transports start for hijacked connections. The lock order is
// written at the top of hub.go.
package server
