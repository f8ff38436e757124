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
// A poll that has to wait holds no goroutine and no buffer while it does
// (park.go): its connection is taken over from net/http, watched for the
// client leaving by the handler's watch.Watcher, answered by a goroutine
// started when the session has something, and handed back to net/http for
// the client's next request. A waiting poll costs its session, a timer and
// its socket.
//
// It imports server (the core) and transports/internal/watch and
// transports/internal/writer (the watcher and the goroutine group the
// streaming transports use too), never the HTTP API or another transport.
package longpoll
