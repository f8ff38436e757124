package jetstream

import (
	"context"
	"testing"
	"time"

	natsserver "github.com/nats-io/nats-server/v2/server"

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

// startNATS runs an embedded NATS server with JetStream storing in dir,
// on a free loopback port.
func startNATS(t testing.TB, dir string) *natsserver.Server {
	t.Helper()
	ns, err := natsserver.NewServer(&natsserver.Options{Host: "127.0.0.1", Port: -1, JetStream: true, StoreDir: dir, NoLog: true, NoSigs: true})
	if err != nil {
		t.Fatal(err)
	}
	go ns.Start() // stopped by Shutdown
	if !ns.ReadyForConnections(30 * time.Second) {
		ns.Shutdown()
		t.Fatal("the embedded NATS server did not start")
	}
	return ns
}

// TestConformance runs the engine contract's suite on JetStream.
func TestConformance(t *testing.T) {
	storetest.Run(t, storetest.Harness{
		Open: func(t testing.TB, dir string, opts storetest.Options) (store.Engine, error) {
			ns := startNATS(t, dir)
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
