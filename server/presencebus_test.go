package server

import (
	"encoding/json"
	"log/slog"
	"testing"
	"time"

	"github.com/heraldrt/herald/store"
)

// presenceNode is one node of a test cluster on bus.
func presenceNode(t *testing.T, bus *memBus) *Server {
	t.Helper()
	st, err := store.Open(store.Options{InMemory: true})
	if err != nil {
		t.Fatal(err)
	}
	srv, err := New(Config{APIKey: testAPIKey, JWTSecret: testSecret, Logger: slog.New(slog.NewTextHandler(t.Output(), nil)),
		Rules:    []RuleConfig{{Pattern: "room", Subscribe: []string{"authenticated"}, Presence: true, JoinLeave: true}},
		Presence: PresenceConfig{Grace: 100 * time.Millisecond}}, busEngine{st, bus})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Shutdown(); _ = st.Close() })
	return srv
}

// hasPresence reports whether items hold the presence event of user.
func hasPresence(items []Item, event, user string) bool {
	for _, it := range items {
		if it.Kind != KindPresence {
			continue
		}
		var env struct {
			Event string `json:"event"`
			Data  struct {
				User string `json:"user"`
			} `json:"data"`
		}
		if json.Unmarshal(it.Msg.Raw, &env) == nil && env.Event == event && env.Data.User == user {
			return true
		}
	}
	return false
}

// Presence is one across nodes: a member on B is announced to a
// subscriber on A and listed by A; a user with sessions on both nodes is
// one member; a node that goes silent has its members leave.
func TestPresenceAcrossNodes(t *testing.T) {
	t.Parallel()
	bus := &memBus{listeners: map[string][]chan []byte{}}
	a, b := presenceNode(t, bus), presenceNode(t, bus)
	ann := openAs(t, a, userWith("ann"), "room")
	c := collect(t, ann)
	bob := openAs(t, b, userWith("bob"), "room")
	defer bob.Close(ReasonClientGone)
	c.waitFor(t, "bob's join from node B", func(it []Item) bool { return hasPresence(it, "herald.join", "bob") })
	info, err := a.Presence(system, "room", false)
	if err != nil || info.Count != 2 {
		t.Fatalf("A's presence of room: %+v %v, want ann and bob", info, err)
	}
	// Bob on A too: still one member, with two sessions.
	bob2 := openAs(t, a, userWith("bob"), "room")
	if info, _ := b.Presence(system, "room", false); info.Count != 2 {
		t.Fatalf("B's presence after bob's second session: %+v", info)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		info, _ := b.Presence(system, "room", false)
		var sessions int
		for _, m := range info.Members {
			if m.User == "bob" {
				sessions = m.Sessions
			}
		}
		if sessions == 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("B does not see bob's session on A: %+v", info)
		}
		time.Sleep(20 * time.Millisecond) // the bus is asynchronous: polled
	}
	bob2.Close(ReasonClientGone)
	// Node B goes silent (its process died): past the expiry its members
	// leave everywhere, after the grace.
	b.presence.bus.halt()
	b.presence.bus = nil
	c.waitFor(t, "bob's leave once B is silent", func(it []Item) bool { return hasPresence(it, "herald.leave", "bob") })
	if info, _ := a.Presence(system, "room", false); info.Count != 1 {
		t.Fatalf("A's presence once B is gone: %+v, want ann alone", info)
	}
}

// A snapshot in parts is applied once all its parts are in; a later
// snapshot without a session takes it out (a lost leave repaired).
func TestPresenceSnapshotInParts(t *testing.T) {
	t.Parallel()
	srv := presenceNode(t, &memBus{listeners: map[string][]chan []byte{}})
	b := srv.presence.bus
	snap := func(n uint64, part, parts int, users ...string) {
		var ss []snapSession
		for _, u := range users {
			ss = append(ss, snapSession{ID: "s_" + u, User: u, Channels: map[string]map[string]string{"room": {}}})
		}
		data, _ := json.Marshal(presenceOp{Node: "other", Op: "snapshot", Sessions: ss, Snap: n, Part: part, Parts: parts})
		b.heard(data)
	}
	count := func() int {
		info, err := srv.Presence(system, "room", true)
		if err != nil {
			t.Fatal(err)
		}
		return info.Count
	}
	snap(1, 0, 2, "ann", "bob")
	if n := count(); n != 0 {
		t.Fatalf("%d members after the first of two parts, want none yet", n)
	}
	snap(1, 1, 2, "cy")
	if n := count(); n != 3 {
		t.Fatalf("%d members after both parts, want 3", n)
	}
	snap(2, 0, 1, "ann", "cy") // bob's leave was lost: the snapshot says it
	deadline := time.Now().Add(10 * time.Second)
	for count() != 2 {
		if time.Now().After(deadline) {
			t.Fatalf("%d members, want bob gone after the grace", count())
		}
		time.Sleep(20 * time.Millisecond) // the grace runs on the presence clock: polled
	}
}
