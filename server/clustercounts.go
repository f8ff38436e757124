package server

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"log/slog"
	"sync"
	"time"

	"github.com/heraldrt/herald/store"
)

// clusterCounts counts each user's sessions on the other nodes of a
// cluster, for limits.max_connections_per_user: every node broadcasts its
// own counts on the engine's bus (store.Bus) every countInterval, and a
// node's counts are forgotten countExpiry after its last broadcast (it
// stopped, or died).
//
// How exact: a node's own sessions are counted at once; the others' are
// at most countInterval old (plus the bus's delay), so connections opened
// on several nodes within that second can pass the limit by as many as
// arrived meanwhile, and a session closed elsewhere frees its place within
// the second.
//
// The Server owns the broadcasting goroutine (started by New, stopped by
// Shutdown) and the engine owns the listener's.
type clusterCounts struct {
	node   string // this node's id, random per start
	bus    store.Bus
	local  func() map[string]int
	logger *slog.Logger

	mu    sync.Mutex
	nodes map[string]nodeCounts // the other nodes', by node id

	stopListen func()
	stop, done chan struct{}
	once       sync.Once
}

type nodeCounts struct {
	users map[string]int
	at    time.Time // when they came (this node's clock)
}

// countsMessage is one node's broadcast.
type countsMessage struct {
	Node  string         `json:"node"`
	Users map[string]int `json:"users"`
}

const (
	countTopic    = "session_counts"
	countInterval = time.Second
	countExpiry   = 3 * time.Second
)

// startClusterCounts starts counting when engine has a bus; nil without.
func startClusterCounts(engine store.Engine, local func() map[string]int, logger *slog.Logger) (*clusterCounts, error) {
	bus, ok := engine.(store.Bus)
	if !ok {
		return nil, nil
	}
	var id [8]byte
	_, _ = rand.Read(id[:])
	c := &clusterCounts{node: hex.EncodeToString(id[:]), bus: bus, local: local, logger: logger,
		nodes: map[string]nodeCounts{}, stop: make(chan struct{}), done: make(chan struct{})}
	stop, err := bus.Listen(countTopic, c.heard)
	if err != nil {
		return nil, err
	}
	c.stopListen = stop
	go c.loop() // owned: stopped by halt
	return c, nil
}

// heard records another node's counts.
func (c *clusterCounts) heard(data []byte) {
	var m countsMessage
	if err := json.Unmarshal(data, &m); err != nil || m.Node == c.node {
		return
	}
	c.mu.Lock()
	c.nodes[m.Node] = nodeCounts{users: m.Users, at: time.Now()}
	c.mu.Unlock()
}

// loop broadcasts this node's counts every countInterval.
func (c *clusterCounts) loop() {
	defer close(c.done)
	tick := time.NewTicker(countInterval)
	defer tick.Stop()
	for {
		select {
		case <-c.stop:
			return
		case <-tick.C:
		}
		b, _ := json.Marshal(countsMessage{Node: c.node, Users: c.local()})
		if err := c.bus.Broadcast(countTopic, b); err != nil {
			c.logger.Debug("session counts: broadcast", "err", err)
		}
	}
}

// remote returns how many sessions user holds on the other nodes, as
// last heard.
func (c *clusterCounts) remote(user string) int {
	if c == nil {
		return 0
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for id, nc := range c.nodes {
		if time.Since(nc.at) > countExpiry {
			delete(c.nodes, id)
			continue
		}
		n += nc.users[user]
	}
	return n
}

// halt stops broadcasting and listening. Idempotent; nil-safe.
func (c *clusterCounts) halt() {
	if c == nil {
		return
	}
	c.once.Do(func() {
		close(c.stop)
		<-c.done
		c.stopListen()
	})
}
