package server

import (
	"context"
	"sort"
	"sync"
)

// Transport is a transport's registration with the core. A transport
// (SSE, WebSocket, long polling, whatever comes next) registers once, by
// name, and opens its sessions through its Transport. The name labels
// those sessions in logs, metrics and life events, so the core keeps no
// list of transports of its own; and the Transport holds the transport's
// slot in every message's frame cache (Frame).
type Transport struct {
	srv  *Server
	name string
	slot int // the frame cache slot; -1 when every slot was taken
}

// frameSlots is how many transports can cache an encoding of each
// message (Transport.Frame). Each slot costs a pointer per message.
const frameSlots = 4

// transportSet is the Server's registered transports.
type transportSet struct {
	mu   sync.Mutex // guards list
	list []*Transport
}

// Transport registers a transport under name, a short label such as
// "sse", "ws" or "poll", and returns its handle. Registering a name again
// returns the same handle. The first transports registered (four) get a
// frame cache slot each; later ones build their frames every time.
func (s *Server) Transport(name string) *Transport {
	ts := &s.transports
	ts.mu.Lock()
	defer ts.mu.Unlock()
	for _, t := range ts.list {
		if t.name == name {
			return t
		}
	}
	t := &Transport{srv: s, name: name, slot: -1}
	if len(ts.list) < frameSlots {
		t.slot = len(ts.list)
	}
	ts.list = append(ts.list, t)
	return t
}

// Transports returns the names of the registered transports, sorted.
func (s *Server) Transports() []string {
	ts := &s.transports
	ts.mu.Lock()
	names := make([]string, len(ts.list))
	for i, t := range ts.list {
		names[i] = t.name
	}
	ts.mu.Unlock()
	sort.Strings(names)
	return names
}

// Name returns the name the transport registered with.
func (t *Transport) Name() string { return t.name }

// Open authorises every channel, then creates a session subscribed to all
// of them, whose stored messages carry the stream's cursor (SSE, poll).
// Nothing is created when any channel is bad or denied.
func (t *Transport) Open(ctx context.Context, id Identity, req OpenRequest) (*Session, OpenInfo, error) {
	return t.srv.open(ctx, t, id, req, sessionOptions{fixed: true})
}

// NewSession creates an empty session for a transport that subscribes
// channel by channel (WebSocket); remoteAddr is the client's address.
//
// resume is the session the client continues (the id it was given before
// and passes back), "" for a new one. The session takes that id when the
// id is the caller's own — its exclusions then follow it — and a session
// of that id still open (the client's previous connection, not yet seen to
// be gone) is closed as replaced. An id that is not the caller's is
// ignored: the session gets a new one, as if none had been given.
func (t *Transport) NewSession(id Identity, remoteAddr, resume string) (*Session, error) {
	if t.srv.shuttingDown.Load() {
		return nil, ErrShuttingDown
	}
	return t.srv.newSession(t, id, sessionOptions{want: resume, remoteAddr: remoteAddr})
}

// Frame returns m's encoding by this transport, building it with build on
// first use and caching it in the message, so that a message fanned out
// to a thousand sessions is encoded once, not a thousand times. build
// must give the same bytes for the same message every time; concurrent
// first uses may both build, and one result wins. Never modify the result.
func (t *Transport) Frame(m *Message, build func(*Message) []byte) []byte {
	if t.slot < 0 {
		return build(m)
	}
	slot := &m.frames[t.slot]
	if f := slot.Load(); f != nil {
		return *f
	}
	f := build(m)
	slot.Store(&f)
	return f
}
