package bench

// The machinery of a bench run: channels, subscribers, publishers,
// counters and the wait for in-flight messages.

import (
	"context"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"net/url"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"

	"github.com/heraldrt/herald/client"
	"github.com/heraldrt/herald/internal/nofile"
	"github.com/heraldrt/herald/protocol"
)

// benchChannel is one channel of a run.
type benchChannel struct {
	idx   int
	name  string
	qname string // query-escaped
	// base is the channel's head before the run published anything
	// (poll subscribers start from it; SSE and WebSocket ones learn it from
	// the stream).
	base uint64
	// head is the highest offset acknowledged to the run's publishers.
	head uint64
}

// benchRun is one run: its connections, counters and phases.
type benchRun struct {
	opts   benchOptions
	stderr io.Writer
	// pubHC makes the few API calls besides publishing (heads, history);
	// api makes them through the client.
	pubHC *http.Client
	api   *client.Client
	// pubToken is what the publishers send as their bearer: the API key,
	// or (flood) a well-behaved user's token.
	pubToken string
	// abuser floods the channel (flood).
	abuser   *benchAbuser
	wsDialer *websocket.Dialer
	// reactors read the SSE and WebSocket subscribers' sockets.
	reactors []*benchReactor
	urls     benchURLs
	chans    []*benchChannel
	subs     []*benchSub
	pubs     []*benchPub

	// latFrom and latTo bound the send times (Unix ns) whose delivery
	// latency is recorded: the measured window. baseFrom and baseTo bound
	// a second one (flood: the phase before the flood).
	latFrom, latTo   atomic.Int64
	baseFrom, baseTo atomic.Int64
	// stopping: the run is closing its subscribers; their errors are expected.
	stopping atomic.Bool
	// pubStop ends the publishers after their current publish.
	pubStop atomic.Bool
	// pace is the publishers' schedule under --rate.
	pace benchPace
	// pubTickets, when bounded, is how many publishes are left (resume).
	pubTickets atomic.Int64
	pubBounded bool
	phase      atomic.Int32
	startedAt  time.Time

	errs    benchErrors
	notices benchErrors // reconnects and their reasons: not failures

	// connectSem bounds connections being opened at once.
	connectSem chan struct{}

	// window, when set (soak), also counts every delivery's latency, read
	// and reset by the sampler each interval.
	window *benchWindowHist

	// Merged at the end.
	latency    *benchHist
	ackLatency *benchHist

	progressMu sync.Mutex
	timeline   []benchSample
}

func newBenchRun(opts benchOptions, stderr io.Writer) (*benchRun, error) {
	r := &benchRun{opts: opts, stderr: stderr, connectSem: make(chan struct{}, opts.connectConcurrency),
		latency: newBenchHist(), ackLatency: newBenchHist(), startedAt: time.Now()}
	r.latFrom.Store(math.MaxInt64)
	r.latTo.Store(math.MaxInt64)
	r.baseFrom.Store(math.MaxInt64)
	r.baseTo.Store(math.MaxInt64)
	r.pubToken = opts.token
	nsubs := opts.subscribers
	switch opts.workload {
	case "channels", "soak":
		nsubs = opts.channels
	case "idle":
		nsubs = opts.connections
	case "resume":
		nsubs = 1
	}
	nchans := 1
	if opts.workload == "channels" || opts.workload == "idle" || opts.workload == "soak" {
		nchans = opts.channels
	}
	// Every connection is a file: check the limit before opening any.
	limit, err := nofile.Raise()
	if err != nil {
		fmt.Fprintf(stderr, "bench: %v\n", err)
	}
	need := uint64(nsubs + opts.publishers + 64)
	if limit > 0 && need > limit {
		return nil, fmt.Errorf("%d subscribers and %d publishers need about %d open files, but this process may open only %d (RLIMIT_NOFILE, raised to the hard limit); raise the hard limit (ulimit -Hn, limits.conf) or ask for fewer", nsubs, opts.publishers, need, limit)
	}
	if opts.serverPID > 0 {
		if _, err := benchReadProc(opts.serverPID); err != nil {
			return nil, fmt.Errorf("--server-pid %d: %w", opts.serverPID, err)
		}
		if sl, ok := benchMaxOpenFiles(opts.serverPID); ok && uint64(nsubs+opts.publishers+64) > sl {
			fmt.Fprintf(stderr, "bench: warning: the server may open only %d files; %d connections will not all fit\n", sl, nsubs+opts.publishers)
		}
	}
	readBuf := 64 << 10
	if opts.workload == "idle" {
		readBuf = 4 << 10 // nothing flows: keep the tool's own memory small
	}
	r.urls = newClusterURLs(opts.base, opts.nodes)
	r.wsDialer = &websocket.Dialer{
		NetDialContext:   (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		HandshakeTimeout: 30 * time.Second,
		ReadBufferSize:   readBuf,
		WriteBufferSize:  4 << 10,
	}
	if opts.transport != "poll" {
		// One reactor per processor the tool may use, at most four.
		for range min(runtime.GOMAXPROCS(0), 4) {
			re, err := newBenchReactor()
			if err != nil {
				r.close()
				return nil, err
			}
			r.reactors = append(r.reactors, re)
		}
	}
	r.pubHC = &http.Client{Transport: benchTransport(opts.publishers+16, 16<<10), Timeout: publishTimeout}
	api, err := client.New(opts.base.String(), client.Options{Token: opts.token, HTTPClient: r.pubHC})
	if err != nil {
		r.close()
		return nil, err
	}
	r.api = api
	for i := range nchans {
		name := opts.channelName(i)
		r.chans = append(r.chans, &benchChannel{idx: i, name: name, qname: url.QueryEscape(name)})
	}
	for i := range nsubs {
		r.subs = append(r.subs, newBenchSub(r, i, r.chans[i%nchans], benchSubTransport(opts.transport, i), readBuf))
	}
	if opts.workload != "idle" {
		for i := range opts.publishers {
			r.pubs = append(r.pubs, newBenchPub(r, i))
		}
	}
	return r, nil
}

// benchURLs are the endpoints, built once.
type benchURLs struct {
	// ws is the WebSocket URL (publishers over WebSocket dial it).
	ws string
	// For the tool's own HTTP requests: the address to dial and the
	// request targets.
	hostPort, ssePath, wsPath, pollPath, publishPath string
	// nodes are where connections go, in turn (a cluster's nodes; one
	// server: just it). The paths above are the same on every node.
	nodes []benchNode
	next  *atomic.Uint64
}

type benchNode struct{ hostPort, ws string }

// newClusterURLs is newBenchURLs with connections spread over nodes.
func newClusterURLs(base *url.URL, nodes []*url.URL) benchURLs {
	u := newBenchURLs(base)
	for _, n := range nodes {
		nu := newBenchURLs(n)
		u.nodes = append(u.nodes, benchNode{hostPort: nu.hostPort, ws: nu.ws})
	}
	return u
}

// node is where the next connection goes.
func (u benchURLs) node() benchNode {
	if len(u.nodes) == 0 {
		return benchNode{hostPort: u.hostPort, ws: u.ws}
	}
	return u.nodes[(u.next.Add(1)-1)%uint64(len(u.nodes))]
}

func newBenchURLs(base *url.URL) benchURLs {
	ws := *base.JoinPath("ws")
	ws.Scheme = "ws"
	port := base.Port()
	if port == "" {
		port = "80"
	}
	return benchURLs{
		next:        new(atomic.Uint64),
		ws:          ws.String(),
		hostPort:    net.JoinHostPort(base.Hostname(), port),
		ssePath:     benchAbsPath(base.JoinPath("sse")) + "?channel=",
		wsPath:      benchAbsPath(base.JoinPath("ws")),
		publishPath: benchAbsPath(base.JoinPath("api/publish")),
		pollPath:    benchAbsPath(base.JoinPath("poll")) + "?channel=",
	}
}

// benchAbsPath is u's path as a request target: it starts with a slash.
func benchAbsPath(u *url.URL) string {
	p := u.EscapedPath()
	if !strings.HasPrefix(p, "/") {
		p = "/" + p
	}
	return p
}

func (r *benchRun) wsURL() string { return r.urls.node().ws }

func (r *benchRun) close() {
	for _, re := range r.reactors {
		re.close()
	}
	for _, hc := range []*http.Client{r.pubHC} {
		if hc != nil {
			hc.CloseIdleConnections()
		}
	}
}

// benchSubTransport is subscriber i's transport: --transport, or for
// mixed, 40 % SSE, 40 % WebSocket and 20 % long polling, interleaved.
func benchSubTransport(transport string, i int) string {
	if transport != "mixed" {
		return transport
	}
	return [5]string{"sse", "ws", "sse", "ws", "poll"}[i%5]
}

func (r *benchRun) run(ctx context.Context) (*benchResult, error) {
	switch r.opts.workload {
	case "idle":
		return r.runIdle(ctx)
	case "resume":
		return r.runResume(ctx)
	case "flood":
		return r.runFlood(ctx)
	}
	return r.runStream(ctx)
}

// benchSnapshot is the state of the counters at one moment.
type benchSnapshot struct {
	at        time.Time
	delivered int64
	acks      int64
	server    benchProcStat
	serverErr error
	self      benchProcStat
}

func (r *benchRun) snapshot() benchSnapshot {
	s := benchSnapshot{at: time.Now(), delivered: r.delivered(), acks: r.acks()}
	if r.opts.serverPID > 0 {
		s.server, s.serverErr = benchReadProc(r.opts.serverPID)
	}
	s.self, _ = benchReadProc(0)
	return s
}

func (r *benchRun) delivered() int64 {
	var n int64
	for _, s := range r.subs {
		n += s.delivered.Load()
	}
	return n
}

func (r *benchRun) acks() int64 {
	var n int64
	for _, p := range r.pubs {
		n += p.acks.Load()
	}
	return n
}

// wait waits d or until ctx is done; it reports whether d passed.
func benchWait(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// prepareChannels learns each channel's head before anything is
// published, where the subscribers cannot learn it from the stream (long
// polling answers carry a cursor, not offsets).
func (r *benchRun) prepareChannels(ctx context.Context) error {
	if !slices.ContainsFunc(r.subs, func(s *benchSub) bool { return s.transport == "poll" }) {
		return nil
	}
	sem := make(chan struct{}, 16)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var first error
	for _, ch := range r.chans {
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			h, err := r.history(ctx, ch, 0)
			if err != nil {
				mu.Lock()
				first = benchFirstErr(first, err)
				mu.Unlock()
				return
			}
			ch.base = h.Head
		}()
	}
	wg.Wait()
	if first != nil {
		return fmt.Errorf("read the channels' heads: %w", first)
	}
	for _, s := range r.subs {
		s.setBase(s.ch.base)
	}
	return nil
}

func benchFirstErr(a, b error) error {
	if a != nil {
		return a
	}
	return b
}

// benchHistory is a channel's history page, as the tool reads it.
type benchHistory protocol.HistoryPage

// covers reports whether the history page read after since (limit 1)
// starts right after it. Reset says so for a since of 1 or more; since 0
// reads from the oldest kept message without a reset, so the page's
// first offset (its next) must be 1 when anything was published.
func (h benchHistory) covers(since uint64) bool {
	return !h.Reset && (h.Head == since || h.Next == since+1)
}

// history reads one message of ch's history after since, through the
// client.
func (r *benchRun) history(ctx context.Context, ch *benchChannel, since uint64) (benchHistory, error) {
	page, err := r.api.History(ctx, ch.name, since, 1)
	if err != nil {
		return benchHistory{}, fmt.Errorf("GET /api/history?channel=%s: %w", ch.name, err)
	}
	return benchHistory(page), nil
}

// connectAll starts every subscriber under subCtx and waits until each is
// confirmed subscribed. The first failure ends the connect phase.
func (r *benchRun) connectAll(ctx, subCtx context.Context, wg *sync.WaitGroup) error {
	return r.connectSubs(ctx, subCtx, wg, r.subs)
}

// connectSubs is connectAll for some of the subscribers.
func (r *benchRun) connectSubs(ctx, subCtx context.Context, wg *sync.WaitGroup, subs []*benchSub) error {
	r.phase.Store(benchPhaseConnect)
	ready := make(chan error, len(subs))
	for _, s := range subs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s.run(subCtx, ready)
		}()
	}
	deadline := time.NewTimer(r.opts.connectTimeout)
	defer deadline.Stop()
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	start := time.Now()
	for n := 0; n < len(subs); {
		select {
		case err := <-ready:
			if err != nil {
				return fmt.Errorf("subscriber could not subscribe (%d of %d did): %w", n, len(subs), err)
			}
			n++
		case <-tick.C:
			r.progressf("%5.0fs connect   subscribed %d of %d", time.Since(start).Seconds(), n, len(subs))
		case <-deadline.C:
			return fmt.Errorf("only %d of %d subscribers were subscribed after --connect-timeout %s", n, len(subs), r.opts.connectTimeout)
		case <-ctx.Done():
			return fmt.Errorf("interrupted while connecting (%d of %d subscribed): %w", n, len(subs), ctx.Err())
		}
	}
	r.progressf("%5.0fs connect   subscribed %d of %d in %.2fs", time.Since(start).Seconds(), len(subs), len(subs), time.Since(start).Seconds())
	return nil
}

// stopSubscribers closes every subscriber and waits for them.
func (r *benchRun) stopSubscribers(cancel context.CancelFunc, wg *sync.WaitGroup) {
	r.stopping.Store(true)
	cancel()
	wg.Wait()
}

// startPublishers dials the publishers (WebSocket) and starts them.
func (r *benchRun) startPublishers(ctx context.Context, wg *sync.WaitGroup) error {
	for _, p := range r.pubs {
		if err := p.dial(ctx); err != nil {
			for _, q := range r.pubs {
				q.close()
			}
			return fmt.Errorf("publisher %d: %w", p.idx, err)
		}
	}
	r.pace.begin(time.Now(), r.opts.rate)
	for _, p := range r.pubs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer p.close()
			p.run(ctx)
		}()
	}
	return nil
}

// settleHeads takes each channel's head from the publishers'
// acknowledgements, once they have stopped.
func (r *benchRun) settleHeads() {
	for _, ch := range r.chans {
		for _, p := range r.pubs {
			ch.head = max(ch.head, p.maxAck[ch.idx])
		}
	}
}

// drain waits until every subscriber holds every acknowledged message, or
// the bound passes (at most a second more once ctx is done). It reports
// whether everything arrived.
func (r *benchRun) drain(ctx context.Context, bound time.Duration) bool {
	deadline := time.Now().Add(bound)
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	done := ctx.Done()
	for !r.allArrived() {
		if time.Now().After(deadline) {
			return false
		}
		select {
		case <-tick.C:
		case <-done:
			done = nil // interrupted: a short last look
			if d := time.Now().Add(time.Second); d.Before(deadline) {
				deadline = d
			}
		}
	}
	return true
}

func (r *benchRun) allArrived() bool {
	for _, s := range r.subs {
		if !s.complete() {
			return false
		}
	}
	return true
}
