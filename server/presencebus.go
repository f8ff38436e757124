package server

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"sync"
	"time"

	"github.com/heraldrt/herald/store"
)

// presenceBus makes presence one across the nodes of a cluster, on the
// engine's bus (store.Bus). Each node tells the others what its member
// sessions do — connect, join, leave, disconnect, signal — and every node
// applies the others' to its own tracker as it applies its own, so each
// tracker holds every session of the cluster: a user with sessions on two
// nodes is one member, and the grace before a leave counts all of them.
// Each node announces the tracker's events to its own subscribers, so
// every subscriber hears each join and leave once.
//
// What is lost on the way (a node away from NATS for a moment) is
// repaired by a snapshot of each node's member sessions every
// presenceBeat; a node silent for presenceExpiry is taken for dead and its
// sessions leave (the grace then runs as for any leave). A session that
// moved to another node (a client resuming there with its session id) is
// not taken out by the old node's expiry.
//
// Owned by presenceWiring: started with it, stopped by its halt.
type presenceBus struct {
	p    *presenceWiring
	node string
	bus  store.Bus

	mu     sync.Mutex
	remote map[string]*remoteNode // by node id

	// sendMu orders what this node sends: mine is its member sessions as
	// its operations said them, which its snapshots repeat.
	sendMu sync.Mutex
	mine   map[string]*remoteSession
	snaps  uint64 // snapshots sent
	part   int    // sessions per snapshot message (snapshotPart)

	stopListen func()
	stop, done chan struct{}
}

// remoteNode is what this node knows of another's member sessions.
type remoteNode struct {
	heard    time.Time
	sessions map[string]*remoteSession
	// parts gathers the parts of the snapshot being received (number
	// snap); a snapshot that misses a part is dropped for the next.
	snap  uint64
	parts map[int][]snapSession
}

type remoteSession struct {
	user     string
	channels map[string]map[string]string // channel → the member's attrs
}

// presenceOp is one broadcast.
type presenceOp struct {
	Node     string            `json:"node"`
	Op       string            `json:"op"` // connect, join, leave, disconnect, state, snapshot
	Session  string            `json:"session,omitempty"`
	User     string            `json:"user,omitempty"`
	Channel  string            `json:"channel,omitempty"`
	Attrs    map[string]string `json:"attrs,omitempty"`
	State    json.RawMessage   `json:"state,omitempty"`
	TTL      time.Duration     `json:"ttl,omitempty"`
	Sessions []snapSession     `json:"sessions,omitempty"`
	// A snapshot too large for one message goes in parts: Snap numbers
	// the snapshot, Part (from 0) and Parts place this one.
	Snap  uint64 `json:"snap,omitempty"`
	Part  int    `json:"part,omitempty"`
	Parts int    `json:"parts,omitempty"`
}

// snapshotPart is how many sessions a snapshot message lists at most:
// about 60 bytes each, well under NATS's default 1 MB message.
const snapshotPart = 4000

type snapSession struct {
	ID       string                       `json:"id"`
	User     string                       `json:"user"`
	Channels map[string]map[string]string `json:"channels"`
}

const (
	presenceTopic  = "presence"
	presenceBeat   = 2 * time.Second
	presenceExpiry = 3 * presenceBeat
)

// startPresenceBus starts it when the engine has a bus; nil without.
func startPresenceBus(p *presenceWiring, engine store.Engine) (*presenceBus, error) {
	bus, ok := engine.(store.Bus)
	if !ok {
		return nil, nil
	}
	var id [8]byte
	_, _ = rand.Read(id[:])
	b := &presenceBus{p: p, node: hex.EncodeToString(id[:]), bus: bus, remote: map[string]*remoteNode{}, mine: map[string]*remoteSession{}, part: snapshotPart,
		stop: make(chan struct{}), done: make(chan struct{})}
	stop, err := bus.Listen(presenceTopic, b.heard)
	if err != nil {
		return nil, err
	}
	b.stopListen = stop
	go b.loop() // owned: stopped by halt
	return b, nil
}

// send broadcasts one of this node's operations. Nil-safe.
func (b *presenceBus) send(op presenceOp) {
	if b == nil {
		return
	}
	b.sendMu.Lock()
	defer b.sendMu.Unlock()
	switch op.Op {
	case "connect", "join":
		ms := b.mine[op.Session]
		if ms == nil {
			ms = &remoteSession{user: op.User, channels: map[string]map[string]string{}}
			b.mine[op.Session] = ms
		}
		if op.Op == "join" {
			ms.channels[op.Channel] = op.Attrs
		}
	case "leave":
		if ms := b.mine[op.Session]; ms != nil {
			delete(ms.channels, op.Channel)
		}
	case "disconnect":
		delete(b.mine, op.Session)
	}
	b.publishLocked(op)
}

// publishLocked broadcasts op; b.sendMu is held, so that operations and
// snapshots go out in the order this node's state changed.
func (b *presenceBus) publishLocked(op presenceOp) {
	op.Node = b.node
	data, _ := json.Marshal(op)
	if err := b.bus.Broadcast(presenceTopic, data); err != nil {
		b.p.srv.logger.Debug("presence: broadcast", "err", err)
	}
}

// loop sends this node's snapshot every presenceBeat and takes the
// nodes silent for presenceExpiry for dead.
func (b *presenceBus) loop() {
	defer close(b.done)
	tick := time.NewTicker(presenceBeat)
	defer tick.Stop()
	for {
		select {
		case <-b.stop:
			return
		case <-tick.C:
		}
		b.sendSnapshot()
		b.mu.Lock()
		var dead []string
		for id, n := range b.remote {
			if time.Since(n.heard) > presenceExpiry {
				dead = append(dead, id)
			}
		}
		b.mu.Unlock()
		for _, id := range dead {
			b.reconcile(id, nil, true)
		}
	}
}

// halt stops the loop and the listener. Nil-safe; called once.
func (b *presenceBus) halt() {
	if b == nil {
		return
	}
	close(b.stop)
	<-b.done
	b.stopListen()
}

// heard applies another node's operation.
func (b *presenceBus) heard(data []byte) {
	var op presenceOp
	if err := json.Unmarshal(data, &op); err != nil || op.Node == b.node || op.Node == "" {
		return
	}
	if op.Op == "snapshot" {
		if whole, ok := b.gather(op); ok {
			b.reconcile(op.Node, whole, false)
		}
		return
	}
	b.mu.Lock()
	n := b.nodeLocked(op.Node)
	rs := n.sessions[op.Session]
	switch op.Op {
	case "connect", "join":
		if rs == nil {
			rs = &remoteSession{user: op.User, channels: map[string]map[string]string{}}
			n.sessions[op.Session] = rs
		}
		if op.Op == "join" {
			rs.channels[op.Channel] = op.Attrs
		}
	case "leave":
		if rs != nil {
			delete(rs.channels, op.Channel)
		}
	case "disconnect":
		delete(n.sessions, op.Session)
	}
	b.mu.Unlock()
	b.apply(op)
}

// sendSnapshot sends this node's member sessions as its operations left
// them, in parts of b.part, with no operation between the parts.
func (b *presenceBus) sendSnapshot() {
	b.sendMu.Lock()
	defer b.sendMu.Unlock()
	sessions := make([]snapSession, 0, len(b.mine))
	for id, ms := range b.mine {
		chs := make(map[string]map[string]string, len(ms.channels))
		for ch, a := range ms.channels {
			chs[ch] = a
		}
		sessions = append(sessions, snapSession{ID: id, User: ms.user, Channels: chs})
	}
	b.snaps++
	parts := max(1, (len(sessions)+b.part-1)/b.part)
	for i := range parts {
		part := sessions[min(i*b.part, len(sessions)):min((i+1)*b.part, len(sessions))]
		b.publishLocked(presenceOp{Op: "snapshot", Sessions: part, Snap: b.snaps, Part: i, Parts: parts})
	}
}

// gather collects a snapshot's parts; ok once op completes it.
func (b *presenceBus) gather(op presenceOp) (whole []snapSession, ok bool) {
	if op.Parts <= 1 {
		return op.Sessions, true
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	n := b.nodeLocked(op.Node)
	if n.snap != op.Snap || n.parts == nil {
		n.snap, n.parts = op.Snap, map[int][]snapSession{}
	}
	n.parts[op.Part] = op.Sessions
	if len(n.parts) < op.Parts {
		return nil, false
	}
	for i := range op.Parts {
		whole = append(whole, n.parts[i]...)
	}
	n.parts = nil
	return whole, true
}

func (b *presenceBus) nodeLocked(id string) *remoteNode {
	n := b.remote[id]
	if n == nil {
		n = &remoteNode{sessions: map[string]*remoteSession{}}
		b.remote[id] = n
	}
	n.heard = time.Now()
	return n
}

// apply feeds one remote operation to the tracker, as the local ones are
// fed (presenceWiring.join, leave…), and announces what it says. A
// session open on this node is this node's to report.
func (b *presenceBus) apply(op presenceOp) {
	p, now := b.p, b.p.srv.now()
	if op.Op != "state" && p.srv.sessions.get(op.Session) != nil {
		return
	}
	switch op.Op {
	case "connect":
		p.announce(p.tracker.Connect(now, op.User, op.Session), nil, nil)
	case "join":
		p.announce(p.tracker.Join(now, op.Channel, op.User, op.Session, op.Attrs), nil, nil)
	case "leave":
		if !b.heldElsewhere(op.Session, op.Channel, op.Node) {
			p.tracker.Leave(now, op.Channel, op.User, op.Session)
			p.kickClock()
		}
	case "disconnect":
		if !b.heldElsewhere(op.Session, "", op.Node) {
			p.tracker.Disconnect(now, op.User, op.Session)
			p.kickClock()
		}
	case "state":
		if evs, err := p.tracker.SetState(now, op.Channel, op.User, op.State, op.TTL); err == nil {
			p.announce(evs, nil, nil)
			p.kickClock()
		}
	}
}

// heldElsewhere reports whether a node other than except still reports
// the session (it moved there), in channel when one is named.
func (b *presenceBus) heldElsewhere(session, channel, except string) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	for id, n := range b.remote {
		if rs := n.sessions[session]; id != except && rs != nil && (channel == "" || hasKey(rs.channels, channel)) {
			return true
		}
	}
	return false
}

// reconcile makes what this node holds of node's sessions what its
// snapshot says (dead: none, and the node is forgotten), applying the
// difference as operations.
func (b *presenceBus) reconcile(node string, snap []snapSession, dead bool) {
	b.mu.Lock()
	var n *remoteNode
	if dead {
		n = b.remote[node]
		delete(b.remote, node)
		if n == nil {
			b.mu.Unlock()
			return
		}
	} else {
		n = b.nodeLocked(node)
	}
	want := make(map[string]snapSession, len(snap))
	for _, s := range snap {
		want[s.ID] = s
	}
	var ops []presenceOp
	for id, rs := range n.sessions {
		w, still := want[id]
		for ch := range rs.channels {
			if _, in := w.Channels[ch]; !still || !in {
				ops = append(ops, presenceOp{Node: node, Op: "leave", Session: id, User: rs.user, Channel: ch})
			}
		}
		if !still {
			ops = append(ops, presenceOp{Node: node, Op: "disconnect", Session: id, User: rs.user})
		}
	}
	for id, w := range want {
		rs := n.sessions[id]
		if rs == nil {
			ops = append(ops, presenceOp{Node: node, Op: "connect", Session: id, User: w.User})
		}
		for ch, attrs := range w.Channels {
			if rs == nil || !hasKey(rs.channels, ch) {
				ops = append(ops, presenceOp{Node: node, Op: "join", Session: id, User: w.User, Channel: ch, Attrs: attrs})
			}
		}
	}
	if !dead {
		n.sessions = make(map[string]*remoteSession, len(want))
		for id, w := range want {
			chs := make(map[string]map[string]string, len(w.Channels))
			for ch, a := range w.Channels {
				chs[ch] = a
			}
			n.sessions[id] = &remoteSession{user: w.User, channels: chs}
		}
	}
	b.mu.Unlock()
	for _, op := range ops {
		b.apply(op)
	}
}

func hasKey(m map[string]map[string]string, k string) bool {
	_, ok := m[k]
	return ok
}
