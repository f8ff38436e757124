package store

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// BenchmarkAppend measures durable (SyncEachBatch, on disk) acknowledged
// appends per second: P publishers each append ~200-byte records one at a
// time and wait for each answer, spread over 16 channels.
func BenchmarkAppend(b *testing.B) {
	for _, publishers := range []int{1, 64, 256} {
		b.Run(fmt.Sprintf("publishers=%d", publishers), func(b *testing.B) {
			s, err := Open(Options{Dir: b.TempDir(), Logger: slog.New(slog.DiscardHandler)})
			if err != nil {
				b.Fatal(err)
			}
			rec := Record{ID: "m_01JDXK3V7QF9", Payload: bytes.Repeat([]byte("x"), 200)}
			var next atomic.Int64
			var wg sync.WaitGroup
			b.ResetTimer()
			start := time.Now()
			for p := range publishers {
				channel := fmt.Sprintf("bench_%d", p%16)
				wg.Go(func() {
					for next.Add(1) <= int64(b.N) {
						if _, err := s.Append(context.Background(), channel, rec); err != nil {
							b.Error(err)
							return
						}
					}
				})
			}
			wg.Wait()
			elapsed := time.Since(start)
			b.StopTimer()
			b.ReportMetric(float64(b.N)/elapsed.Seconds(), "appends/s")
			if err := s.Close(); err != nil {
				b.Fatal(err)
			}
		})
	}
}

// BenchmarkRead measures a subscriber's catch-up: reading a channel of
// 100,000 stored ~200-byte messages from the start in pages of 1,000.
func BenchmarkRead(b *testing.B) {
	const stored, page = 100_000, 1000
	s, err := Open(Options{
		Dir:        b.TempDir(),
		Durability: NoSync,
		Retention:  keepAll,
		Logger:     slog.New(slog.DiscardHandler),
	})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	var wg sync.WaitGroup
	var next atomic.Int64
	for range 64 {
		wg.Go(func() {
			for next.Add(1) <= stored {
				if _, err := s.Append(context.Background(), "history", Record{Payload: bytes.Repeat([]byte("y"), 200)}); err != nil {
					b.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()

	ctx := context.Background()
	b.ResetTimer()
	start := time.Now()
	for b.Loop() {
		after, n := uint64(0), 0
		for {
			p, err := s.Read(ctx, "history", after, page)
			if err != nil {
				b.Fatal(err)
			}
			if len(p.Entries) == 0 {
				break
			}
			n += len(p.Entries)
			after = p.Entries[len(p.Entries)-1].Offset
		}
		if n != stored {
			b.Fatalf("read %d messages, want %d", n, stored)
		}
	}
	b.ReportMetric(float64(b.N)*stored/time.Since(start).Seconds(), "msgs/s")
}

// BenchmarkAppendBatchOutbox measures what routing every record to
// outbox queues costs the commit path: 4 publishers append batches of
// 500 ~200-byte records, with no queue, or with 3 queues taking every
// record (nobody reads them).
func BenchmarkAppendBatchOutbox(b *testing.B) {
	for _, queues := range []int{0, 3} {
		b.Run(fmt.Sprintf("queues=%d", queues), func(b *testing.B) {
			opts := Options{Dir: b.TempDir(), Logger: slog.New(slog.DiscardHandler), Retention: keepAll}
			for i := range queues {
				opts.Outbox.Queues = append(opts.Outbox.Queues, fmt.Sprint("q", i))
			}
			if queues > 0 {
				opts.Outbox.Route = func(string, *Record) uint64 { return 1<<queues - 1 }
			}
			s, err := Open(opts)
			if err != nil {
				b.Fatal(err)
			}
			const batch = 500
			payload := bytes.Repeat([]byte("x"), 200)
			var next atomic.Int64
			var wg sync.WaitGroup
			b.ResetTimer()
			start := time.Now()
			for p := range 4 {
				wg.Go(func() {
					recs := make([]ChannelRecord, batch)
					for i := range recs {
						recs[i] = ChannelRecord{Channel: fmt.Sprintf("bench_%d", (p*batch+i)%16), Record: Record{ID: "m_01JDXK3V7QF9", Payload: payload}}
					}
					for next.Add(batch) <= int64(b.N)+batch-1 {
						if _, err := s.AppendBatch(context.Background(), recs); err != nil {
							b.Error(err)
							return
						}
					}
				})
			}
			wg.Wait()
			elapsed := time.Since(start)
			b.StopTimer()
			b.ReportMetric(float64(b.N)/elapsed.Seconds(), "records/s")
			if err := s.Close(); err != nil {
				b.Fatal(err)
			}
		})
	}
}
