// Package server is Herald's channel core: identity and authorisation, the
// publish pipeline, the hub that fans messages out, sessions with their
// bounded queues and resumable subscriptions, cursors, and the HTTP API.
// Transports (SSE, WebSocket, long polling) are thin adapters on top of it:
// they parse and write frames and ask the core for everything else.
//
// The core runs on a store.Engine (New takes one) and relies on its
// contract alone, stated on that interface and checked by store/storetest:
// contiguous offsets per channel and epoch, Append answered once durable,
// Read bounded by the head it reports, and a commit feed that reports each
// stored record once, one call at a time, per channel in ascending
// contiguous offsets, each record only once Head and Read see it.
//
// Invariants:
//
//   - Acknowledged means durable: Publish returns once the engine's Append
//     has, and an Append answers only once its record is durable.
//   - Per channel, every session sees stored messages in offset order, with
//     no gap and no duplicate, across the replay-to-live hand-over and across
//     reconnects (the client's position, or cursor, says where to resume).
//     The engine's commit feed is the only source of live stored messages,
//     and it is ordered; a subscription registers for it before it reads the
//     head, and the feed reports a record only once Head sees it, so the log
//     read and the live feed overlap and never leave a hole; the overlap is
//     dropped by offset. Each live subscription checks that what it gets
//     follows what it has, and fails its session on a gap rather than
//     skipping it (hub.go).
//   - Fan-out never blocks: a session whose queue is full is closed as a
//     slow consumer and resumes from its position. A slow reader never slows
//     a publisher or another reader.
//   - Every request path asks one function, authorize, for permission.
//
// Concurrency: the engine's feed calls run the fan-out, one at a time; it
// only pushes onto queues, because the engine's commits may wait for it.
// Each session is drained by one writer at a time — a transport goroutine
// selecting on Ready, or a Pump writer started on demand (Notify) — which
// also pages the session's catch-up out of the engine at the pace the
// client reads. The Server owns one goroutine, the
// presence clock, started by New and stopped by Shutdown; Group owns the
// goroutines transports start for hijacked connections. The lock order is
// written at the top of hub.go.
package server
