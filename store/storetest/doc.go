// Package storetest is the conformance suite of store.Engine: the
// guarantees Herald's channel core relies on, checked against a real
// engine. Every engine passes it — the Badger store (store/engine_test.go,
// on disk and in memory) and any engine written later.
//
// To run it, an engine's tests give Run a Harness:
//
//	func TestEngineConformance(t *testing.T) {
//		storetest.Run(t, storetest.Harness{
//			Open: func(t testing.TB, dir string, o storetest.Options) (store.Engine, error) {
//				return myengine.Open(myengine.Options{Dir: dir, Now: o.Now, … })
//			},
//			Trim: func(ctx context.Context, e store.Engine, channel string, r store.Retention) error {
//				return e.(*myengine.Engine).ApplyRetention(ctx, channel, r)
//			},
//			Durable: true,
//		})
//	}
//
// Each guarantee is its own subtest, named after it, so a failure says
// which promise of the contract broke. Subtests run in parallel, each on
// its own engine over its own directory, with a fake clock: nothing waits
// for real time to pass, and nothing asserts on durations. Tests that close
// an engine and open it again (durability, epochs and retention across a
// reopen) run only for a Durable harness; the rest run for every engine.
package storetest
