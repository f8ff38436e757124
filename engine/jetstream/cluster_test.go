package jetstream

import (
	"context"
	"fmt"
	"net"
	"net/url"
	"sync"
	"testing"
	"time"

	natsserver "github.com/nats-io/nats-server/v2/server"

	"github.com/heraldrt/herald/internal/natstest"
	"github.com/heraldrt/herald/store"
)

// freePort returns a loopback port nothing listens on.
func freePort(t testing.TB) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// startCluster runs n embedded NATS servers with JetStream as one
// cluster on loopback, stopped when the test ends.
func startCluster(t testing.TB, n int) []*natsserver.Server {
	t.Helper()
	ports := make([]int, n)
	var routes []*url.URL
	for i := range ports {
		ports[i] = freePort(t)
		routes = append(routes, &url.URL{Scheme: "nats", Host: fmt.Sprintf("127.0.0.1:%d", ports[i])})
	}
	servers := make([]*natsserver.Server, n)
	for i := range servers {
		opts := &natsserver.Options{
			ServerName: fmt.Sprintf("n%d", i+1), Host: "127.0.0.1", Port: -1, JetStream: true, StoreDir: t.TempDir(),
			NoLog: true, NoSigs: true, Routes: routes,
			Cluster: natsserver.ClusterOpts{Name: "herald-test", Host: "127.0.0.1", Port: ports[i]},
		}
		ns, err := natsserver.NewServer(opts)
		if err != nil {
			t.Fatal(err)
		}
		go ns.Start() // stopped by Shutdown
		servers[i] = ns
		t.Cleanup(func() { ns.Shutdown(); ns.WaitForShutdown() })
	}
	for _, ns := range servers {
		if !ns.ReadyForConnections(30 * time.Second) {
			t.Fatal("an embedded NATS server did not start")
		}
	}
	return servers
}

// openOn opens an engine on server ns with replicas 3, retrying while the
// cluster elects its JetStream leader.
func openOn(t testing.TB, ns *natsserver.Server) *Engine {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		e, err := Open(ctx, Options{URLs: ns.ClientURL(), Replicas: 3})
		cancel()
		if err == nil {
			t.Cleanup(func() { _ = e.Close() })
			return e
		}
		if time.Now().After(deadline) {
			t.Fatalf("open on %s: %v", ns.Name(), err)
		}
		time.Sleep(200 * time.Millisecond) // the cluster is electing its leader; nothing to await from here
	}
}

// TestThreeNodesAppendToOneChannel: three engines, each on its own node
// of a three-node JetStream cluster (replicas 3), append to one channel at
// once. The offsets are 1..N, each once, each acknowledged offset holds
// the record acknowledged for it, and every node's feed reports the
// channel in that one order.
func TestThreeNodesAppendToOneChannel(t *testing.T) {
	t.Parallel()
	servers := startCluster(t, 3)
	engines := make([]*Engine, len(servers))
	for i, ns := range servers {
		engines[i] = openOn(t, ns)
	}
	type fed struct {
		mu   sync.Mutex
		offs []uint64
		ids  []string
	}
	feeds := make([]*fed, len(engines))
	for i, e := range engines {
		f := &fed{}
		feeds[i] = f
		if err := e.Feed(func(b []store.Committed) {
			f.mu.Lock()
			defer f.mu.Unlock()
			for _, c := range b {
				if c.Channel == "shared" {
					f.offs = append(f.offs, c.Offset)
					f.ids = append(f.ids, c.Record.ID)
				}
			}
		}); err != nil {
			t.Fatal(err)
		}
	}
	const each = 60
	acked := make(map[uint64]string)
	var mu sync.Mutex
	var wg sync.WaitGroup
	for i, e := range engines {
		for w := range 2 { // two writers per node
			wg.Go(func() {
				for j := range each {
					id := fmt.Sprintf("n%d-w%d-%d", i, w, j)
					a, err := e.Append(context.Background(), "shared", store.Record{ID: id, Payload: []byte(id)})
					if err != nil {
						t.Errorf("append %s: %v", id, err)
						return
					}
					mu.Lock()
					if prev, dup := acked[a.Offset]; dup {
						t.Errorf("offset %d acknowledged to %s and %s", a.Offset, prev, id)
					}
					acked[a.Offset] = id
					mu.Unlock()
				}
			})
		}
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	n := uint64(len(engines) * 2 * each)
	for off := uint64(1); off <= n; off++ {
		if _, ok := acked[off]; !ok {
			t.Fatalf("offset %d was never acknowledged: offsets are not contiguous", off)
		}
	}
	// What is stored is what was acknowledged, from any node.
	for i, e := range engines {
		page, err := e.Read(context.Background(), "shared", 0, 1000)
		if err != nil {
			t.Fatal(err)
		}
		if page.Head != n || len(page.Entries) != int(n) {
			t.Fatalf("node %d reads head %d and %d entries, want %d", i+1, page.Head, len(page.Entries), n)
		}
		for _, en := range page.Entries {
			if string(en.Payload) != acked[en.Offset] {
				t.Fatalf("node %d: offset %d holds %q, acknowledged for %q", i+1, en.Offset, en.Payload, acked[en.Offset])
			}
		}
	}
	// Every node's feed reports the same order: 1..N.
	deadline := time.Now().Add(30 * time.Second)
	for i, f := range feeds {
		for {
			f.mu.Lock()
			got := len(f.offs)
			f.mu.Unlock()
			if uint64(got) >= n || time.Now().After(deadline) {
				break
			}
			time.Sleep(10 * time.Millisecond) // polled: the feed reports on its own goroutine
		}
		f.mu.Lock()
		for k, off := range f.offs {
			if off != uint64(k+1) || f.ids[k] != acked[off] {
				f.mu.Unlock()
				t.Fatalf("node %d's feed: position %d is offset %d (%s), want %d (%s)", i+1, k, off, f.ids[k], k+1, acked[uint64(k+1)])
			}
		}
		if uint64(len(f.offs)) != n {
			f.mu.Unlock()
			t.Fatalf("node %d's feed reported %d of %d", i+1, len(f.offs), n)
		}
		f.mu.Unlock()
	}
}

// TestLeaderLossLosesNothingAcknowledged: the stream's leader node stops
// while the other two nodes append with idempotency keys (retrying, as a
// backend does, until acknowledged). Appends stall or fail while a new
// leader is elected, never silently: every acknowledged record is stored
// at its acknowledged offset, once, and the offsets stay contiguous.
func TestLeaderLossLosesNothingAcknowledged(t *testing.T) {
	t.Parallel()
	servers := startCluster(t, 3)
	engines := make([]*Engine, len(servers))
	for i, ns := range servers {
		engines[i] = openOn(t, ns)
	}
	info, err := engines[0].stream.Info(context.Background())
	if err != nil || info.Cluster == nil {
		t.Fatalf("stream info: %v", err)
	}
	leader := -1
	for i, ns := range servers {
		if ns.Name() == info.Cluster.Leader {
			leader = i
		}
	}
	if leader < 0 {
		t.Fatalf("no server is the stream leader %q", info.Cluster.Leader)
	}
	const each = 80
	acked := map[uint64]string{}
	failures := 0
	var mu sync.Mutex
	var wg sync.WaitGroup
	half := make(chan struct{})
	var once sync.Once
	for i, e := range engines {
		if i == leader {
			continue
		}
		wg.Go(func() {
			for j := range each {
				id := fmt.Sprintf("n%d-%d", i, j)
				if j == each/2 {
					once.Do(func() { close(half) })
				}
				for attempt := 0; ; attempt++ {
					ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
					a, err := e.Append(ctx, "failover", store.Record{ID: id, Payload: []byte(id), IdempotencyKey: id})
					cancel()
					if err == nil {
						mu.Lock()
						if prev, dup := acked[a.Offset]; dup && prev != id {
							t.Errorf("offset %d acknowledged to %s and %s", a.Offset, prev, id)
						}
						acked[a.Offset] = id
						mu.Unlock()
						break
					}
					mu.Lock()
					failures++
					mu.Unlock()
					if attempt > 200 {
						t.Errorf("append %s never succeeded: %v", id, err)
						return
					}
					time.Sleep(50 * time.Millisecond) // a backend's retry pause
				}
			}
		})
	}
	<-half
	servers[leader].Shutdown() // the leader goes; the others elect a new one
	wg.Wait()
	if t.Failed() {
		return
	}
	n := uint64(2 * each)
	if uint64(len(acked)) != n {
		t.Fatalf("%d offsets acknowledged, want %d (one per record)", len(acked), n)
	}
	var survivor *Engine
	for i, e := range engines {
		if i != leader {
			survivor = e
			break
		}
	}
	page, err := survivor.Read(context.Background(), "failover", 0, 1000)
	if err != nil {
		t.Fatal(err)
	}
	if page.Head != n || len(page.Entries) != int(n) {
		t.Fatalf("head %d, %d entries; want %d of each (nothing twice, nothing lost)", page.Head, len(page.Entries), n)
	}
	for k, en := range page.Entries {
		if en.Offset != uint64(k+1) || string(en.Payload) != acked[en.Offset] {
			t.Fatalf("entry %d: offset %d holds %q, acknowledged %q", k, en.Offset, en.Payload, acked[en.Offset])
		}
	}
	t.Logf("leader %s stopped mid-run: %d appends failed and were retried", servers[leader].Name(), failures)
}

// Two nodes append batches to one channel at once: each batch's records
// are stored together, at consecutive offsets, with no record of the
// other node's batches between them (the store's contract for
// AppendBatch), and every record once.
func TestBatchesOfTwoNodesDoNotInterleave(t *testing.T) {
	t.Parallel()
	ns := natstest.Start(t, t.TempDir(), -1)
	t.Cleanup(func() { ns.Shutdown(); ns.WaitForShutdown() })
	const batches, size = 20, 25
	var wg sync.WaitGroup
	for node := range 2 {
		e, err := Open(context.Background(), Options{URLs: ns.ClientURL(), TrimInterval: -1})
		if err != nil {
			t.Fatal(err)
		}
		defer e.Close()
		wg.Go(func() {
			for b := range batches {
				recs := make([]store.ChannelRecord, size)
				for i := range recs {
					recs[i] = store.ChannelRecord{Channel: "busy", Record: store.Record{
						ID: fmt.Sprintf("n%d-b%d-%d", node, b, i), Payload: fmt.Appendf(nil, "n%d-b%d-%d", node, b, i)}}
					if i == 3 {
						recs[i].Record.IdempotencyKey = fmt.Sprintf("k-n%d-b%d", node, b)
					}
				}
				res, err := e.AppendBatch(context.Background(), recs)
				if err != nil {
					t.Error(err)
					return
				}
				for i, r := range res {
					if r.Err != nil || (i > 0 && r.Offset != res[i-1].Offset+1) {
						t.Errorf("node %d batch %d record %d: %+v, want the offset after %d", node, b, i, r, res[max(i-1, 0)].Offset)
						return
					}
				}
			}
		})
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	e, err := Open(context.Background(), Options{URLs: ns.ClientURL(), TrimInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	page, err := e.Read(context.Background(), "busy", 0, 1000)
	if err != nil || len(page.Entries) != 2*batches*size {
		t.Fatalf("read: %d records (%v), want %d", len(page.Entries), err, 2*batches*size)
	}
	for i := 0; i < len(page.Entries); i += size {
		var node, b, j int
		fmt.Sscanf(string(page.Entries[i].Payload), "n%d-b%d-%d", &node, &b, &j)
		for k := range size {
			want := fmt.Sprintf("n%d-b%d-%d", node, b, k)
			if got := string(page.Entries[i+k].Payload); got != want {
				t.Fatalf("offset %d holds %s, want %s: another batch came between", i+k+1, got, want)
			}
		}
	}
}
