// Package watch tells a transport what a connection's client sent, or
// that it left, without a goroutine parked per idle connection: on Linux
// one epoll set per Watcher, waited on by a single goroutine (itself
// parked in Go's poller), notices a readable socket, reads what is there
// into the Watcher's one buffer and hands it to the connection's OnRead.
// An idle connection then costs no goroutine, no stack and no read
// buffer — what an idle SSE stream or WebSocket holds is its session and
// its socket.
//
// Elsewhere, with -tags noepoll, and for a connection without a socket
// descriptor (TLS, a pipe), a goroutine per connection reads instead,
// behind the same API; both are tested.
//
// It imports transports/internal/writer (the Group that owns its
// goroutines) and nothing of the transports, which import it.
package watch
