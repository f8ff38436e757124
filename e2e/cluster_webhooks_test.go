package e2e

import (
	"context"
	"fmt"
	"testing"
	"time"
)

// Webhooks on a cluster are the cluster's, not each node's: messages
// published through all three nodes reach an ordered batched endpoint
// and a parallel one once each, in order where ordered, from the one
// node that delivers. That node is then SIGKILLed while the receiver
// holds its requests: another node takes the deliveries over within the
// lease, and every message is delivered; one sent again (its answer was
// lost with the node) comes with the same event id.
func TestClusterWebhooksOncePerCluster(t *testing.T) {
	const n, channel = 300, "orders_eu"
	rcv := startReceiver(t, receiverMode{Delay: 20 * time.Millisecond})
	c := startCluster(t, "--config", writeConfig(t, orderedAndParallel(rcv)))
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	publishThrough := func(nodes []*server, from, to int) {
		for i := from; i <= to; i++ {
			base := nodes[i%len(nodes)].url()
			if res, code, err := publish(ctx, base, channel, fmt.Sprintf(`{"i":%d}`, i), ""); err != nil || code != 200 || res.Offset != uint64(i) {
				t.Fatalf("publish %d through %s: %d %+v %v", i, base, code, res, err)
			}
		}
	}

	// 1. Once per cluster, from one node.
	publishThrough(c.nodes, 1, n/2)
	ids := messageIDs(t, c.nodes[0].url(), channel, n/2)
	recs := rcv.waitFor(time.Minute, "every message on both endpoints", allDelivered(channel, n/2, "/ordered", "/parallel"))
	if d := checkDelivered(t, recs, "/ordered", channel, n/2, ids, true); d != 0 {
		t.Fatalf("ordered endpoint: %d events delivered more than once by a healthy cluster", d)
	}
	if d := checkDelivered(t, recs, "/parallel", channel, n/2, ids, false); d != 0 {
		t.Fatalf("parallel endpoint: %d events delivered more than once by a healthy cluster", d)
	}
	leader := deliveringNode(t, c.nodes)

	// 2. The delivering node dies mid-delivery.
	rcv.holdRequests(func() { publishThrough(c.nodes, n/2+1, n) })
	c.nodes[leader].kill()
	rcv.setMode(map[string]any{"delay_ms": 20})
	var alive []*server
	for i, s := range c.nodes {
		if i != leader {
			alive = append(alive, s)
		}
	}
	ids = messageIDs(t, alive[0].url(), channel, n)
	recs = rcv.waitFor(90*time.Second, "every message on both endpoints after the kill", allDelivered(channel, n, "/ordered", "/parallel"))
	dupsOrdered := checkDelivered(t, recs, "/ordered", channel, n, ids, true)
	dupsParallel := checkDelivered(t, recs, "/parallel", channel, n, ids, false)
	if cut := countStatus(recs, "/ordered", 0) + countStatus(recs, "/parallel", 0); cut == 0 {
		t.Fatal("no request was cut by the kill")
	}
	next := deliveringNode(t, alive)
	for _, name := range []string{"ordered", "parallel"} {
		st := waitWebhook(t, alive[next].url(), name, "an empty outbox", 30*time.Second, func(st webhookStatus) bool { return st.Depth == 0 })
		if st.Dead != 0 {
			t.Fatalf("endpoint %s after the kill: %+v", name, st)
		}
	}
	t.Logf("node %d delivered, then a survivor; events accepted twice after the kill: ordered %d, parallel %d", leader+1, dupsOrdered, dupsParallel)
}

// deliveringNode waits until exactly one of nodes says it delivers the
// webhooks, and returns its index.
func deliveringNode(t *testing.T, nodes []*server) int {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		var on []int
		for i, s := range nodes {
			if webhooks(t, s.url())["ordered"].Delivering {
				on = append(on, i)
			}
		}
		if len(on) == 1 {
			return on[0]
		}
		if time.Now().After(deadline) {
			t.Fatalf("nodes delivering the webhooks: %v, want exactly one", on)
		}
		time.Sleep(50 * time.Millisecond) // polled: the lease is taken on the nodes' own schedule
	}
}
