package jetstream

import (
	"context"
	"fmt"
	"testing"
	"time"

	natsserver "github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/heraldrt/herald/internal/natstest"
	"github.com/heraldrt/herald/store"
	"github.com/heraldrt/herald/store/storetest"
)

// served is an engine with the embedded NATS server it runs on: closing
// it stops both, so that the suite's reopen on the same folder finds what
// the server wrote there.
type served struct {
	*Engine
	ns *natsserver.Server
}

func (s served) Close() error {
	err := s.Engine.Close()
	s.ns.Shutdown()
	s.ns.WaitForShutdown()
	return err
}

// TestConformance runs the engine contract's suite on JetStream.
func TestConformance(t *testing.T) {
	storetest.Run(t, storetest.Harness{
		Open: func(t testing.TB, dir string, opts storetest.Options) (store.Engine, error) {
			ns := natstest.Start(t, dir, -1)
			e, err := Open(context.Background(), Options{URLs: ns.ClientURL(), Retention: opts.Retention, IdempotencyTTL: opts.IdempotencyTTL, Now: opts.Now})
			if err != nil {
				ns.Shutdown()
				return nil, err
			}
			return served{e, ns}, nil
		},
		Trim: func(ctx context.Context, e store.Engine, channel string, r store.Retention) error {
			return e.(served).Trim(ctx, channel, r)
		},
		Durable: true,
	})
}

// TestTrimmerPurgesWhatRetentionDropped: with a short interval and no
// grace, the engine's own trimmer purges the messages beyond a channel's
// count, keeping the newest ones; reads showed only those all along.
func TestTrimmerPurgesWhatRetentionDropped(t *testing.T) {
	t.Parallel()
	ns := natstest.Start(t, t.TempDir(), -1)
	t.Cleanup(func() { ns.Shutdown(); ns.WaitForShutdown() })
	e, err := Open(context.Background(), Options{URLs: ns.ClientURL(), TrimInterval: 50 * time.Millisecond, TrimGrace: time.Nanosecond,
		Retention: func(string) store.Retention { return store.Retention{MaxCount: 3} }})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	for i := range 10 {
		if _, err := e.Append(context.Background(), "trimmed", store.Record{ID: fmt.Sprint(i), Payload: []byte{byte(i)}}); err != nil {
			t.Fatal(err)
		}
	}
	page, err := e.Read(context.Background(), "trimmed", 0, 100)
	if err != nil || page.First != 8 || len(page.Entries) != 3 {
		t.Fatalf("read: first %d, %d entries (%v); want 8 and 3", page.First, len(page.Entries), err)
	}
	subj := e.subject("trimmed")
	deadline := time.Now().Add(30 * time.Second)
	for {
		info, err := e.stream.Info(context.Background(), jetstream.WithSubjectFilter(subj))
		if err != nil {
			t.Fatal(err)
		}
		if n := info.State.Subjects[subj]; n == 3 {
			break
		} else if time.Now().After(deadline) {
			t.Fatalf("the stream still holds %d messages of the channel, want 3", n)
		}
		time.Sleep(20 * time.Millisecond) // polled: the trimmer runs on its own schedule
	}
}
