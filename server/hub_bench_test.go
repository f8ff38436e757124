package server

import (
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
)

// BenchmarkHubFanout measures the fan-out of one channel to 1,000
// sessions without a network: one op is one message delivered to every
// session, and each session is drained by its own goroutine, as a
// transport's writer would.
func BenchmarkHubFanout(b *testing.B) {
	const subscribers = 1000
	srv, _ := newTestServer(b, Config{Limits: Limits{QueueMessages: 1 << 16, QueueBytes: 1 << 30}})
	var delivered atomic.Int64
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for i := 0; i < subscribers; i++ {
		sess, _ := openSession(b, srv, []string{"bench"}, nil, "")
		<-sess.Ready()
		sess.Drain(nil) // goes live
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer sess.Close(ReasonClientGone)
			var buf []Item
			for {
				select {
				case <-stop:
					return
				case <-sess.Ready():
					buf = sess.Drain(buf[:0])
					delivered.Add(int64(len(buf)))
					clear(buf)
				}
			}
		}()
	}
	raw := []byte(`{"channel":"bench","offset":1,"epoch":"b3f1c2a0d9e8","id":"m_01JDQ7Z3X2V8K5N4M3R2T1Y0WQ","event":"message","data":{"sent_at":1764175940123,"payload":"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"},"time":"2026-11-26T16:52:20.123Z"}`)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		srv.hub.deliver([]*Message{{Channel: "bench", Offset: uint64(i + 1), Epoch: "b3f1c2a0d9e8", Event: "message", Raw: raw}})
	}
	for delivered.Load() < int64(b.N)*subscribers {
		runtime.Gosched()
	}
	b.StopTimer()
	b.ReportMetric(float64(delivered.Load())/b.Elapsed().Seconds(), "deliveries/s")
	close(stop)
	wg.Wait()
}
