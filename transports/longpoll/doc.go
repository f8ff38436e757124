// Package longpoll serves Herald's channels as HTTP long polling
// (GET or POST /poll), for mobile clients and clients behind proxies that
// block WebSocket upgrades or buffer streams.
//
// Each poll answers at once when anything is newer than its cursor, else
// waits up to its timeout and answers with an empty list. The core keeps
// the poll's session between polls (queued, bounded): a detachable session
// the handler attaches to (server.Transport.Attach) and parks after
// answering (server.Session.Park). So the handler is a thin adapter:
// parse, attach, wait on the session as its pacing says (a channel's batch
// rule), write the JSON answer, park.
//
// A waiting poll costs its request's goroutine, one timer and its
// session: no goroutine or timer per channel.
//
// It imports server (the core) only, never the HTTP API or another
// transport.
package longpoll
