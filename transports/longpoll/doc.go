// Package longpoll serves Herald's channels as HTTP long polling
// (GET or POST /poll), for mobile clients and clients behind proxies that
// block WebSocket upgrades or buffer streams.
//
// Each poll answers at once when anything is newer than its cursor, else
// waits up to its timeout and answers with an empty list. The core keeps
// the poll's session between polls (queued, bounded), so the handler is a
// thin adapter: parse, ask the core for the session, wait on it, write the
// JSON answer, release it.
//
// A waiting poll costs its request's goroutine, one timer and its
// session: no goroutine or timer per channel.
package longpoll
