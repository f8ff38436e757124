package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// clusterRun is one run of the scale-out tests: publishers on every
// node, followers on the nodes the test chooses, and what the cluster
// acknowledged.
type clusterRun struct {
	c         *cluster
	channels  []string
	perPub    int // messages per publisher and channel
	mu        sync.Mutex
	acks      []acked
	fails     []string // non-200 answers seen while publishing
	followers []*follower
	acked     atomic.Int64
	// timeout bounds the run (default 3 minutes).
	timeout time.Duration
}

// follow opens d's client on node at (from now) and registers it.
func (r *clusterRun) follow(t *testing.T, d driver, at int) (*follower, conn) {
	t.Helper()
	f := &follower{d: d, bases: r.c.urls(), at: at, channels: r.channels, got: map[string][]envelope{}}
	c := mustOpen(t, d, f.bases[at], apiKey, r.channels, nil)
	r.followers = append(r.followers, f)
	return f, c
}

// run publishes from one publisher per node (each moving on to another
// node when its own fails) while every follower receives, calling
// during(n) after each acknowledgement (n acknowledged so far), and waits
// for all of them. Then it checks the cluster's promise.
func (r *clusterRun) run(t *testing.T, conns []conn, during func(n int64)) {
	t.Helper()
	timeout := r.timeout
	if timeout == 0 {
		timeout = 3 * time.Minute
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	total := len(r.c.nodes) * len(r.channels) * r.perPub
	var wg sync.WaitGroup
	errs := make(chan error, len(r.followers)+len(r.c.nodes))
	deadline := time.Now().Add(timeout - 30*time.Second)
	for i, f := range r.followers {
		wg.Go(func() {
			if err := f.follow(t, conns[i], total, deadline); err != nil {
				errs <- err
			}
		})
	}
	var pubs sync.WaitGroup
	for p := range r.c.nodes {
		pubs.Go(func() {
			at := p
			var fails []string
			defer func() {
				r.mu.Lock()
				r.fails = append(r.fails, fails...)
				r.mu.Unlock()
			}()
			for i := 1; i <= r.perPub; i++ {
				for _, ch := range r.channels {
					data := fmt.Sprintf(`{"p":%d,"i":%d}`, p, i)
					res, err := publishAnyNode(ctx, r.c.urls(), &at, ch, data, fmt.Sprintf("p%d-%s-%d", p, ch, i), &fails)
					if err != nil {
						errs <- fmt.Errorf("publisher %d: %s %d: %w", p, ch, i, err)
						return
					}
					r.mu.Lock()
					r.acks = append(r.acks, acked{channel: ch, offset: res.Offset, data: data})
					r.mu.Unlock()
					if during != nil {
						during(r.acked.Add(1))
					}
				}
			}
		})
	}
	pubs.Wait()
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if t.Failed() {
		t.FailNow()
	}
	r.check(t)
}

// check proves the promise from history and from every follower: each
// channel's offsets run 1..N with no gap, N is what was acknowledged on
// it, each acknowledged message is stored once at its acknowledged
// offset, and every follower received each channel's history exactly
// once, in that order, whichever nodes it went through.
func (r *clusterRun) check(t *testing.T) {
	t.Helper()
	live := r.c.urls()[0]
	for _, s := range r.c.nodes {
		select {
		case <-s.exited:
		default:
			live = s.url()
		}
	}
	for _, ch := range r.channels {
		_, hist := history(t, live, ch)
		want := len(r.c.nodes) * r.perPub
		seen := map[string]uint64{}
		for i, e := range hist {
			if e.Offset != uint64(i+1) {
				t.Fatalf("%s: message #%d has offset %d (a gap or a duplicate offset)", ch, i+1, e.Offset)
			}
			var compact bytes.Buffer
			_ = json.Compact(&compact, e.Data)
			if first, dup := seen[compact.String()]; dup {
				t.Fatalf("%s: %s stored twice, at %d and %d", ch, e.Data, first, e.Offset)
			}
			seen[compact.String()] = e.Offset
		}
		if len(hist) != want {
			t.Fatalf("%s holds %d messages, %d were acknowledged", ch, len(hist), want)
		}
		for _, a := range r.acks {
			if a.channel == ch && seen[a.data] != a.offset {
				t.Fatalf("%s: %s acknowledged at offset %d, stored at %d", ch, a.data, a.offset, seen[a.data])
			}
		}
		for fi, f := range r.followers {
			got := f.got[ch]
			if len(got) != len(hist) {
				have := map[uint64]int{}
				for _, e := range got {
					have[e.Offset]++
				}
				var missing, twice []uint64
				for _, e := range hist {
					switch have[e.Offset] {
					case 0:
						missing = append(missing, e.Offset)
					case 1:
					default:
						twice = append(twice, e.Offset)
					}
				}
				keys := map[string]int{}
				var strays []string
				for k, v := range f.got {
					keys[k] = len(v)
					if !slices.Contains(r.channels, k) {
						for _, e := range v[:min(5, len(v))] {
							j, _ := json.Marshal(e)
							strays = append(strays, string(j))
						}
					}
				}
				t.Fatalf("%s follower #%d (node %d, %d resumptions): %s: %d messages, history holds %d; missing offsets %v (first 10), more than once %v; received per channel %v; not of a subscribed channel: %v",
					f.d.name(), fi, f.at%len(f.bases)+1, f.resumes, ch, len(got), len(hist), missing[:min(10, len(missing))], twice[:min(10, len(twice))], keys, strays)
			}
			for i, e := range got {
				if e.Offset != hist[i].Offset || e.ID != hist[i].ID || e.Epoch != hist[0].Epoch {
					t.Fatalf("%s follower: %s message #%d is offset %d id %s, history has %d %s: %v",
						f.d.name(), ch, i+1, e.Offset, e.ID, hist[i].Offset, hist[i].ID, envOffsets(got))
				}
			}
		}
	}
	for _, fail := range r.fails {
		if !strings.Contains(fail, "publish: 503 ") || !strings.Contains(fail, `"code":503`) {
			t.Fatalf("a publish failed with %s: want a clear 503 while the cluster recovers", fail)
		}
	}
}

// Subscribers on every node over SSE, WebSocket and long polling, and a
// long-poll client that sends each poll to the next node, while a
// publisher on every node publishes to two channels: every subscriber
// gets each channel's messages in one order, offsets contiguous from 1,
// and every acknowledged publish is stored at its offset.
func TestClusterOneOrderOnEveryNode(t *testing.T) {
	c := startCluster(t)
	r := &clusterRun{c: c, channels: []string{"room_a", "room_b"}, perPub: 100}
	var conns []conn
	for node := range c.nodes {
		for _, d := range drivers {
			_, cn := r.follow(t, d, node)
			conns = append(conns, cn)
		}
	}
	alternating := pollDriver{nodes: c.urls()}
	_, cn := r.follow(t, alternating, 0)
	conns = append(conns, cn)
	r.run(t, conns, nil)
	if p := cn.(*pollConn); p.polls < 2*len(c.nodes) {
		t.Fatalf("the alternating poll client polled %d times: want every node polled more than once", p.polls)
	}
}

// SIGKILL of one Herald node under load: the clients it served resume
// on another node exactly once, in order; its publisher moves on to
// another node; every acknowledged publish is in history at its
// acknowledged offset.
func TestClusterHeraldNodeKilled(t *testing.T) {
	c := startCluster(t)
	r := &clusterRun{c: c, channels: []string{"orders"}, perPub: 200}
	var conns []conn
	for _, d := range drivers {
		_, cn := r.follow(t, d, 2)
		conns = append(conns, cn)
	}
	_, cn := r.follow(t, sseDriver{}, 0) // a client of a node that stays
	conns = append(conns, cn)
	r.run(t, conns, func(n int64) {
		if n == 150 { // seen by one publisher only
			c.nodes[2].kill()
		}
	})
	for _, f := range r.followers[:len(drivers)] {
		if f.resumes == 0 {
			t.Fatalf("the %s client of the killed node never resumed", f.d.name())
		}
	}
}

// SIGKILL of the NATS server that leads the stream, under load: publishes
// stall or fail with a clear 503 while JetStream elects another leader,
// none acknowledged is lost, the offsets stay contiguous, and every
// subscriber gets everything once, in order. The server comes back later
// and catches up.
func TestClusterNATSLeaderKilled(t *testing.T) {
	c := startCluster(t)
	r := &clusterRun{c: c, channels: []string{"ticks"}, perPub: 200}
	var conns []conn
	for node, d := range drivers {
		_, cn := r.follow(t, d, node)
		conns = append(conns, cn)
	}
	leader := c.streamLeader()
	var restartErr error
	r.run(t, conns, func(n int64) {
		switch n { // each n is seen by one publisher only
		case 150:
			leader.kill()
		case 400:
			restartErr = leader.start()
		}
	})
	if restartErr != nil {
		t.Fatal(restartErr)
	}
	t.Logf("answers other than 200 while the leader changed: %d", len(r.fails))
}

// Grants, disconnects and bans are the cluster's, not a node's: a grant
// made through one node lets the user subscribe on another; a disconnect
// through one node closes the user's streams on the others; a ban made
// through one node closes them and refuses the user there; lifting it
// through a third node lets them back everywhere.
func TestClusterSharesGrantsDisconnectsAndBans(t *testing.T) {
	const room = "vip_room"
	c := startCluster(t, "--config", writeConfig(t, `channels:
  - pattern: "vip_*"
    subscribe: [grant]
`))
	urls := c.urls()
	tok := permTokens(t, map[string][]string{"ann": {"--sub", "ann"}})["ann"]
	var refused *openError
	if _, err := (sseDriver{}).open(t, urls[1], tok, []string{room}, nil); !errors.As(err, &refused) || refused.code != 403 {
		t.Fatalf("ann on node 2 before any grant: %v, want a 403", err)
	}
	permGrant(t, urls[0], http.MethodPost, "ann", room, "subscribe")
	var sse conn
	deadline := time.Now().Add(20 * time.Second)
	for {
		var err error
		if sse, err = (sseDriver{}).open(t, urls[1], tok, []string{room}, nil); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("ann on node 2 after a grant through node 1: %v", err)
		}
		time.Sleep(20 * time.Millisecond) // the grant travels through NATS: polled
	}
	ws := mustOpen(t, wsDriver{}, urls[2], tok, []string{room}, nil)
	mustPublish(t, urls[0], room, `{"i":1}`)
	expectMessage(t, sse, room, 1)
	expectMessage(t, ws, room, 1)

	// A disconnect through node 1 reaches the streams on nodes 2 and 3;
	// the user may come back at once.
	if code, raw := apiCall(t, http.MethodPost, urls[0]+"/api/disconnect", apiKey, map[string]any{"user": "ann"}, nil); code != 200 {
		t.Fatalf("POST /api/disconnect on node 1: %d %s", code, raw)
	}
	for name, cn := range map[string]conn{"SSE on node 2": sse, "WebSocket on node 3": ws} {
		if _, err := cn.recv(20 * time.Second); !errors.Is(err, errEnded) {
			t.Fatalf("ann's %s after a disconnect through node 1: %v, want it closed", name, err)
		}
	}
	sse = mustOpen(t, sseDriver{}, urls[1], tok, []string{room}, nil)
	ws = mustOpen(t, wsDriver{}, urls[2], tok, []string{room}, nil)
	mustPublish(t, urls[1], room, `{"i":2}`)
	expectMessage(t, sse, room, 2)
	expectMessage(t, ws, room, 2)

	if code, raw := apiCall(t, http.MethodPost, urls[0]+"/api/ban", apiKey, map[string]any{"user": "ann", "duration": "1h"}, nil); code != 200 {
		t.Fatalf("POST /api/ban on node 1: %d %s", code, raw)
	}
	for name, cn := range map[string]conn{"SSE on node 2": sse, "WebSocket on node 3": ws} {
		if _, err := cn.recv(20 * time.Second); !errors.Is(err, errEnded) {
			t.Fatalf("ann's %s after a ban through node 1: %v, want it closed", name, err)
		}
	}
	checkRefusedAsBanned(t, urls[1], tok, "ann", room)
	if code, raw := apiCall(t, http.MethodDelete, urls[2]+"/api/ban", apiKey, map[string]any{"user": "ann"}, nil); code != 200 {
		t.Fatalf("DELETE /api/ban on node 3: %d %s", code, raw)
	}
	deadline = time.Now().Add(20 * time.Second)
	for {
		_, err := (pollDriver{}).open(t, urls[0], tok, []string{room}, nil)
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("ann on node 1 after the ban was lifted through node 3: %v", err)
		}
		time.Sleep(20 * time.Millisecond) // the lift travels through NATS: polled
	}
}

// Presence is the cluster's: a member on any node is announced to the
// subscribers of every node and listed by every node; a user with
// sessions on two nodes is one member; when a node dies its members
// leave (once the others stop hearing from it, then the grace), except
// those still connected to another node.
func TestClusterPresenceIsOne(t *testing.T) {
	const room = "chat_room_1"
	c := startCluster(t, "--config", writeConfig(t, presenceYAML))
	urls := c.urls()
	toks := permTokens(t, map[string][]string{
		"ann": {"--sub", "ann"}, "bob": {"--sub", "bob"}, "cy": {"--sub", "cy"},
	})
	ann := openAs(t, sseDriver{}, urls[0], toks["ann"], room)
	// heard waits for ann's next presence event named event, returning
	// the user it names and the leaves met on the way.
	heard := func(event string) (user string, leaves []string) {
		t.Helper()
		for {
			e := nextPresence(t, "ann", ann, 30*time.Second)
			var d struct {
				User string `json:"user"`
			}
			_ = json.Unmarshal(e.Data, &d)
			if e.Event == event {
				return d.User, leaves
			}
			if e.Event == "herald.leave" {
				leaves = append(leaves, d.User)
			}
		}
	}
	openAs(t, wsDriver{}, urls[1], toks["bob"], room)
	if u, _ := heard("herald.join"); u != "bob" {
		t.Fatalf("ann on node 1 heard %s join, want bob (on node 2)", u)
	}
	openAs(t, pollDriver{}, urls[1], toks["cy"], room)
	if u, _ := heard("herald.join"); u != "cy" {
		t.Fatalf("ann on node 1 heard %s join, want cy (on node 2)", u)
	}
	openAs(t, sseDriver{}, urls[2], toks["bob"], room) // bob on node 3 too: one member
	waitPresence(t, urls[2], apiKey, room, map[string]int{"ann": 1, "bob": 2, "cy": 1})
	waitPresence(t, urls[0], apiKey, room, map[string]int{"ann": 1, "bob": 2, "cy": 1})

	c.nodes[1].kill()
	if u, leaves := heard("herald.leave"); u != "cy" || len(leaves) > 0 {
		t.Fatalf("after node 2 died ann heard %s leave (and %v before), want cy only: bob is still on node 3", u, leaves)
	}
	waitPresence(t, urls[0], apiKey, room, map[string]int{"ann": 1, "bob": 1})
}
