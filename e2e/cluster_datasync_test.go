//go:build unix

package e2e

import (
	"context"
	"encoding/json"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/heraldrt/herald/internal/pgtest"
)

// Data sync on a cluster: every node has the same sync: section, one
// node at a time streams from the replication slot (the others say
// standby), and when that node is SIGKILLed mid-stream another takes the
// slot over: each row's channel ends with exactly the versions the
// database committed, each once, in order.
func TestClusterDataSyncOneNodeStreams(t *testing.T) {
	const rows, updates, writers = 50, 3000, 2
	pg := pgtest.Start(t)
	c := startCluster(t, "--config", writeConfig(t, countersSync(t, pg, rows)))
	first := streamingNode(t, c.nodes)

	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	var done atomic.Int64
	var wg sync.WaitGroup
	wg.Go(func() { writeCounters(ctx, pg, rows, updates, writers, &done) })
	for done.Load() < updates/3 && ctx.Err() == nil {
		time.Sleep(10 * time.Millisecond) // waiting on the writers' progress
	}
	c.nodes[first].kill()
	var alive []*server
	for i, s := range c.nodes {
		if i != first {
			alive = append(alive, s)
		}
	}
	next := streamingNode(t, alive)
	wg.Wait()
	if ctx.Err() != nil {
		t.Fatalf("the writers made %d of %d updates in time", done.Load(), updates)
	}
	checkCounters(t, alive[1-next].url(), pg, rows, updates)
	t.Logf("node %d streamed, then a survivor", first+1)
}

// streamingNode waits until exactly one of nodes says its sync source
// streams, the others standing by, and returns its index.
func streamingNode(t *testing.T, nodes []*server) int {
	t.Helper()
	deadline := time.Now().Add(45 * time.Second)
	for {
		var states []string
		on := -1
		for i, s := range nodes {
			var st struct {
				Postgres struct {
					State string `json:"state"`
				} `json:"postgres"`
			}
			_, raw := apiCall(t, "GET", s.url()+"/api/sync", apiKey, nil, nil)
			_ = json.Unmarshal(raw, &st)
			states = append(states, st.Postgres.State)
			if st.Postgres.State == "streaming" {
				on = i
			}
		}
		streaming, standby := 0, 0
		for _, s := range states {
			switch s {
			case "streaming":
				streaming++
			case "standby":
				standby++
			}
		}
		if streaming == 1 && standby == len(nodes)-1 {
			return on
		}
		if time.Now().After(deadline) {
			t.Fatalf("sync states of the nodes: %v, want one streaming and the others standby", states)
		}
		time.Sleep(50 * time.Millisecond) // polled: the lease is taken on the nodes' own schedule
	}
}
