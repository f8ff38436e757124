// Package bench is the load generator and benchmark reporter behind
// `herald bench`. It drives a running Herald on this machine (loopback
// only) over SSE, WebSocket or long polling, bounded in time and count,
// and reports delivered and acknowledged messages per second, delivery
// latency, lost / duplicated / out-of-order counts and — given the
// server's PID — the server's CPU time per delivered message and its
// memory.
//
//	herald bench fanout   --transport sse --subscribers 1000 --publishers 16 --server-pid PID
//	herald bench channels --transport sse --channels 2000 --publishers 16
//	herald bench idle     --transport ws --connections 10000 --server-pid PID
//	herald bench resume   --transport sse --messages 100000
//	herald bench flood    --subscribers 100 --rate 50 --jwt-secret SECRET
//	herald bench webhooks --messages 100000 --server-cpus 0
//
// A run: subscribers connect and are confirmed subscribed; publishing
// starts; a warm-up is left out of the figures; the measured window runs
// --duration; publishing stops and the tool waits (bounded) for what is
// still in flight; then it counts. Ctrl-C ends a run early with a partial
// report. Run is the whole of it; cmd/herald only passes its arguments.
//
// The webhooks workload (webhooks.go) is the exception to "a running
// server": each of its phases needs a fresh server with its own webhooks:
// section, so it runs `herald serve` itself (this binary, or --herald)
// with a generated configuration in a temporary folder, its endpoints
// pointing at a receiver inside the tool, and stops it after the phase.
//
// # The wire
//
// Names and shapes come from package protocol (event names, ops, push
// types) and the tool's few API calls besides publishing (history, token
// checks) and its error answers go through package client. Its hot paths
// do not: publishers write each request or publish op by hand into a
// reused buffer, and subscribers find an envelope's channel, offset and
// send time by scanning the bytes (scan.go) instead of decoding JSON, and
// track order with fixed counters (track.go) instead of client's
// Subscription. At a million messages a second, decoding every envelope
// and a goroutine hand-off per message would make the tool, not the
// server, the bottleneck, and distort what is measured.
//
// # Platforms
//
// On Linux the SSE and WebSocket subscribers' sockets are read by an epoll
// reactor (reactor.go, build tag linux && !noepoll): one goroutine per
// reactor reads every ready socket, which is what keeps the client side
// cheap at a million messages a second. Elsewhere, and with -tags noepoll
// (which `make test` runs too), reactor_other.go reads each socket with a
// goroutine of its own behind the same methods. /proc sampling (proc.go)
// is Linux only; elsewhere the server's CPU and memory are not reported.
//
// Concurrency: Run owns every goroutine it starts — subscribers,
// publishers, reactors, the progress line — and waits for them before it
// returns.
//
// bench imports client, protocol and nofile (to raise its open-file
// limit), and server only to mint the flood's user tokens and to check
// channel names as the server does; nothing imports bench but cmd/herald.
package bench
