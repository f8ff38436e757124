package store_test

import (
	"context"
	"log/slog"
	"testing"

	"github.com/heraldrt/herald/store"
	"github.com/heraldrt/herald/store/storetest"
)

// TestEngineConformance runs the engine contract's suite against the
// Badger store, on disk (reopened, lost and reopened by the suite) and in
// memory.
func TestEngineConformance(t *testing.T) {
	harness := func(inMemory bool) storetest.Harness {
		return storetest.Harness{
			Open: func(t testing.TB, dir string, o storetest.Options) (store.Engine, error) {
				opts := store.Options{
					Retention:      o.Retention,
					IdempotencyTTL: o.IdempotencyTTL,
					Now:            o.Now,
					Logger:         slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelWarn})),
				}
				if inMemory {
					opts.InMemory = true
				} else {
					opts.Dir = dir
				}
				return store.Open(opts)
			},
			Trim: func(ctx context.Context, e store.Engine, channel string, r store.Retention) error {
				_, err := e.(*store.Store).Trim(ctx, channel, r)
				return err
			},
			Durable: !inMemory,
		}
	}
	t.Run("disk", func(t *testing.T) {
		t.Parallel()
		storetest.Run(t, harness(false))
	})
	t.Run("memory", func(t *testing.T) {
		t.Parallel()
		storetest.Run(t, harness(true))
	})
}
