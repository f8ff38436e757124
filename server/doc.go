// Package server is Herald's channel core: identity and authorisation
// against the channel rules, the publish pipeline, the hub that fans
// messages out, sessions with their bounded queues and resumable
// subscriptions, cursors, presence wiring, limits, grants and
// moderation — and the life events it tells its observers.
//
// What it owns, by file: server.go (the Server, New, Shutdown, the commit
// feed's fan-out), transport.go (transports register by name),
// sessions.go (opening sessions, the registry), session.go and queue.go
// (a session and its queue), park.go (sessions that outlive their
// connection), pacing.go (when a writer writes), subscribe.go (catch-up
// and the hand-over to live), hub.go (channels and fan-out, and the lock
// order), publish.go, history.go, broadcast.go, authorize.go and rules.go
// (one decision point, one rule match per request), identity.go and
// keys.go, grants.go, moderation.go, limits.go, presence.go, observe.go
// (life events), metrics.go (its hot-path counters), cursor.go,
// envelope.go, errors.go and httpjson.go (the one JSON error answer).
// Features keep their state in types of their own (Grants, Moderation,
// the presence wiring, the limits, the registry): a new feature adds a
// file and a type, not methods on Server.
//
// What it may import: store (the store.Engine contract) and presence,
// internal packages with no Herald knowledge, and libraries. Nothing
// above it: the HTTP API (server/httpapi), the transports (transports/…)
// and whatever observes it import server, never the reverse; the core
// knows a transport only by the name it registered with (Transport).
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
//     a publisher or another reader, and neither does an observer: each has
//     a bounded queue, and what it cannot keep up with is dropped and
//     counted (observe.go).
//   - Every request path asks one function, authorize, for permission,
//     with the channel's rule matched once for the request.
//
// Concurrency: the engine's feed calls run the fan-out, one at a time; it
// only pushes onto queues, because the engine's commits may wait for it.
// Each session is drained by one writer at a time — a transport goroutine
// selecting on Ready, or a writer the transport starts on demand (Notify)
// — which also pages the session's catch-up out of the engine at the pace
// the client reads. The Server owns its goroutines: the presence clock,
// started by New, and one per observer, started by Observe; Shutdown
// stops them all (observers once they have handled their queues). The
// goroutines that serve connections are the transports'. The lock order
// is written at the top of hub.go.
package server
