package server

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"testing"

	"github.com/heraldrt/herald/store"
)

// BenchmarkCatchUp measures a resuming session reading a channel's history
// through Drain: store pages, envelopes rebuilt, cursors stamped — what an
// SSE client coming back after an absence costs the server, without the
// network. One op is one message handed to the transport.
func BenchmarkCatchUp(b *testing.B) {
	const stored = 100_000
	srv, _ := newTestServer(b, Config{}, func(o *store.Options) {
		o.Retention = func(string) store.Retention { return store.Retention{MaxCount: stored} }
	})
	// Fill the channel with concurrent publishers (group commit batches them).
	var wg sync.WaitGroup
	data := json.RawMessage(`{"sent_at":1764175940123,"payload":"` + fmt.Sprintf("%0150d", 0) + `"}`)
	for p := 0; p < 64; p++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < stored/64; i++ {
				if _, err := srv.Publish(context.Background(), system, PublishRequest{Channel: "history", Data: data}); err != nil {
					b.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	b.ReportAllocs()
	b.ResetTimer()
	read := 0
	for read < b.N {
		sess, _ := openSession(b, srv, []string{"history"}, []*Position{{Since: 0}}, "")
		var buf []Item
		for n := 0; n < stored/64*64 && read < b.N; {
			<-sess.Ready()
			buf = sess.Drain(buf[:0])
			n += len(buf)
			read += len(buf)
			clear(buf)
		}
		sess.Close(ReasonClientGone)
	}
	b.ReportMetric(float64(read)/b.Elapsed().Seconds(), "msgs/s")
}
