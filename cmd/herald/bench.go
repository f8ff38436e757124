package main

// `herald bench`: the load generator and benchmark reporter. It drives a
// running Herald on this machine (loopback only) over SSE, WebSocket or
// long polling, bounded in time and count, and reports delivered and
// acknowledged messages per second, delivery latency, lost / duplicated /
// out-of-order counts and — given the server's PID — the server's CPU time
// per delivered message and its memory.
//
//	herald bench fanout   --transport sse --subscribers 1000 --publishers 16 --server-pid PID
//	herald bench channels --transport sse --channels 2000 --publishers 16
//	herald bench idle     --transport ws --connections 10000 --server-pid PID
//	herald bench resume   --transport sse --messages 100000
//
// A run: subscribers connect and are confirmed subscribed; publishing
// starts; a warm-up is left out of the figures; the measured window runs
// --duration; publishing stops and the tool waits (bounded) for what is
// still in flight; then it counts. Ctrl-C ends a run early with a partial
// report.

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"runtime"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"

	"github.com/heraldrt/herald/server"
)

// cmdBench implements `herald bench WORKLOAD [flags]`.
func cmdBench(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	return runBench(ctx, args, os.Getenv, stdout, stderr)
}

const benchUsage = `Usage: herald bench WORKLOAD [flags]

Workloads (against a Herald on this machine; run "herald bench WORKLOAD -h"):
  fanout    one channel, S subscribers on one transport, P publishers
  channels  C channels with one subscriber each, publishes spread over them
  idle      N connections held open and subscribed: server memory per connection
  resume    a subscriber away while K messages are published, then catching up

Every workload prints a progress line a second on stderr, a table and one
JSON line on stdout, and exits non-zero if any message was lost, duplicated
or out of order.
`

// benchOptions are the parsed flags of one run.
type benchOptions struct {
	workload    string
	base        *url.URL
	token       string
	transport   string // sse, ws, poll
	subscribers int    // fanout
	channels    int    // channels: C; idle: how many the connections spread over
	connections int    // idle
	messages    int    // resume
	publishers  int
	publishVia  string  // api, ws
	rate        float64 // messages/s over all publishers; 0 = as fast as acknowledged
	duration    time.Duration
	warmup      time.Duration
	drain       time.Duration
	hold        time.Duration // idle
	timeout     time.Duration // resume: the catch-up's bound
	payload     int
	channel     string // the channel (fanout, resume) or the channels' prefix
	serverPID   int
	html        string
	// connectConcurrency bounds the connections being opened at once.
	connectConcurrency int
	connectTimeout     time.Duration
	quiet              bool   // no progress lines
	cpuProfile         string // the tool's own CPU profile
	// flags are the flags as set, for the report (never the token).
	flags map[string]string
}

func runBench(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		fmt.Fprint(stderr, benchUsage)
		if len(args) == 0 {
			return errors.New("name a workload: fanout, channels, idle or resume")
		}
		return flag.ErrHelp
	}
	opts, err := parseBenchFlags(args[0], args[1:], getenv, stderr)
	if err != nil {
		return err
	}
	r, err := newBenchRun(opts, stderr)
	if err != nil {
		return err
	}
	defer r.close()
	if opts.cpuProfile != "" {
		f, err := os.Create(opts.cpuProfile)
		if err != nil {
			return fmt.Errorf("--cpuprofile: %w", err)
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return fmt.Errorf("--cpuprofile: %w", err)
		}
		defer pprof.StopCPUProfile()
	}
	res, runErr := r.run(ctx)
	if res == nil {
		return runErr
	}
	if ctx.Err() != nil {
		res.Partial = true
	}
	if err := writeBenchReport(stdout, res); err != nil {
		return err
	}
	if opts.html != "" {
		if err := writeBenchHTML(opts.html, res, r.latency, r.ackLatency); err != nil {
			return fmt.Errorf("--html: %w", err)
		}
	}
	if runErr != nil {
		return runErr
	}
	return res.verdict()
}

func parseBenchFlags(workload string, args []string, getenv func(string) string, stderr io.Writer) (benchOptions, error) {
	var synopsis string
	switch workload {
	case "fanout":
		synopsis = "bench fanout [--transport sse|ws|poll] [--subscribers S] [--publishers P] [--publish-via api|ws] [--rate N] [--duration D] [flags]"
	case "channels":
		synopsis = "bench channels [--transport sse|ws|poll] [--channels C] [--publishers P] [--publish-via api|ws] [--rate N] [--duration D] [flags]"
	case "idle":
		synopsis = "bench idle [--transport sse|ws|poll] [--connections N] --server-pid PID [--hold D] [flags]"
	case "resume":
		synopsis = "bench resume [--transport sse|ws|poll] [--messages K] [--publishers P] [flags]"
	default:
		return benchOptions{}, fmt.Errorf("unknown workload %q; use fanout, channels, idle or resume", workload)
	}
	fs := newFlagSet(workload, synopsis, stderr)
	o := benchOptions{workload: workload}
	var serverURL string
	fs.StringVar(&serverURL, "server", "", "server base URL on this machine (default $"+envURL+", else "+defaultServerURL+"); loopback only")
	fs.StringVar(&o.token, "token", "", "API key sent as Authorization: Bearer on every request (default $"+envAPIKey+")")
	fs.StringVar(&o.transport, "transport", "sse", "subscriber transport: sse, ws or poll")
	fs.IntVar(&o.serverPID, "server-pid", 0, "the server's process id: report its CPU time per delivered message and its memory, from /proc")
	fs.StringVar(&o.html, "html", "", "also write a self-contained HTML report (latency and throughput charts) to this file")
	fs.IntVar(&o.connectConcurrency, "connect-concurrency", 128, "connections opened at once while subscribers connect")
	fs.DurationVar(&o.connectTimeout, "connect-timeout", 2*time.Minute, "bound on connecting and subscribing every subscriber")
	fs.BoolVar(&o.quiet, "quiet", false, "no progress lines on stderr")
	fs.StringVar(&o.cpuProfile, "cpuprofile", "", "write this tool's own CPU profile (pprof) to the file: is the load generator the bottleneck?")
	if workload != "idle" {
		fs.IntVar(&o.publishers, "publishers", 16, "concurrent publishers, each waiting for its acknowledgement before the next publish")
		fs.StringVar(&o.publishVia, "publish-via", "api", "api (POST /api/publish, keep-alive) or ws (publish ops, one connection per publisher)")
		fs.IntVar(&o.payload, "payload", 200, "approximate size of each message's data in bytes (JSON carrying the send time)")
	}
	if workload == "fanout" || workload == "channels" {
		fs.Float64Var(&o.rate, "rate", 0, "publishes per second over all publishers; 0 = as fast as acknowledgements come")
		fs.DurationVar(&o.duration, "duration", 10*time.Second, "the measured window")
		fs.DurationVar(&o.warmup, "warmup", time.Second, "publishing before the measured window, left out of the figures")
		fs.DurationVar(&o.drain, "drain", 5*time.Second, "bound on waiting for in-flight deliveries after publishing stops")
	}
	switch workload {
	case "fanout":
		fs.IntVar(&o.subscribers, "subscribers", 1000, "subscribers of the channel")
		fs.StringVar(&o.channel, "channel", "", "the channel (default a fresh bench.fanout.* name)")
	case "channels":
		fs.IntVar(&o.channels, "channels", 2000, "channels, one subscriber each")
		fs.StringVar(&o.channel, "channel-prefix", "", "channel name prefix; channel i is PREFIX.i (default a fresh bench.channels.* name)")
	case "idle":
		fs.IntVar(&o.connections, "connections", 10000, "connections held open, each subscribed to one channel")
		fs.IntVar(&o.channels, "channels", 10, "channels the connections spread over")
		fs.DurationVar(&o.hold, "hold", 10*time.Second, "how long every connection is held open before the server's memory is read")
		fs.StringVar(&o.channel, "channel-prefix", "", "channel name prefix (default a fresh bench.idle.* name)")
	case "resume":
		fs.IntVar(&o.messages, "messages", 100000, "messages published while the subscriber is away (the server's history must keep them: history.size)")
		fs.StringVar(&o.channel, "channel", "", "the channel (default a fresh bench.resume.* name)")
		fs.DurationVar(&o.timeout, "timeout", 2*time.Minute, "bound on the catch-up")
	}
	if err := parseFlags(fs, args); err != nil {
		return benchOptions{}, err
	}
	if serverURL == "" {
		serverURL = getenv(envURL)
	}
	if serverURL == "" {
		serverURL = defaultServerURL
	}
	if o.token == "" {
		o.token = getenv(envAPIKey)
	}
	base, err := parseServerURL(serverURL)
	if err != nil {
		return benchOptions{}, err
	}
	if base.Scheme != "http" {
		return benchOptions{}, fmt.Errorf("--server %s: bench speaks plain http:// to a server on this machine", base)
	}
	if err := benchCheckLoopback(base); err != nil {
		return benchOptions{}, err
	}
	o.base = base
	o.flags = map[string]string{}
	fs.VisitAll(func(f *flag.Flag) {
		if f.Name != "token" {
			o.flags[f.Name] = f.Value.String()
		}
	})
	o.flags["server"] = base.String()
	if err := o.validate(); err != nil {
		return benchOptions{}, err
	}
	if o.channel == "" {
		o.channel = "bench." + workload + "." + strconv.FormatInt(time.Now().UnixNano(), 36)
	}
	if err := server.ValidateChannel(o.channelName(max(o.channels, 1) - 1)); err != nil {
		return benchOptions{}, fmt.Errorf("channel name: %w", err)
	}
	return o, nil
}

func (o *benchOptions) validate() error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	switch o.transport {
	case "sse", "ws", "poll":
	default:
		bad("--transport %q: use sse, ws or poll", o.transport)
	}
	if o.workload != "idle" {
		if o.publishers < 1 || o.publishers > 10000 {
			bad("--publishers %d: want 1 to 10000", o.publishers)
		}
		if o.publishVia != "api" && o.publishVia != "ws" {
			bad("--publish-via %q: use api or ws", o.publishVia)
		}
		if o.payload < 0 || o.payload > 60<<10 {
			bad("--payload %d: want 0 to %d bytes", o.payload, 60<<10)
		}
	}
	if o.workload == "fanout" || o.workload == "channels" {
		if o.rate < 0 || math.IsNaN(o.rate) || math.IsInf(o.rate, 0) {
			bad("--rate %v: want 0 (as fast as acknowledged) or a positive number of messages/s", o.rate)
		}
		if o.duration <= 0 || o.duration > 24*time.Hour {
			bad("--duration %s: want more than 0 and at most 24h", o.duration)
		}
		if o.warmup < 0 || o.drain < 0 {
			bad("--warmup and --drain must not be negative")
		}
	}
	switch o.workload {
	case "fanout":
		if o.subscribers < 1 || o.subscribers > 1_000_000 {
			bad("--subscribers %d: want 1 to 1000000", o.subscribers)
		}
	case "channels":
		if o.channels < 1 || o.channels > 1_000_000 {
			bad("--channels %d: want 1 to 1000000", o.channels)
		}
	case "idle":
		if o.connections < 1 || o.connections > 1_000_000 {
			bad("--connections %d: want 1 to 1000000", o.connections)
		}
		if o.channels < 1 || o.channels > o.connections {
			bad("--channels %d: want 1 to --connections", o.channels)
		}
		if o.serverPID <= 0 {
			bad("--server-pid is required: idle reports the server's memory per connection")
		}
		if o.hold < 0 {
			bad("--hold must not be negative")
		}
	case "resume":
		if o.messages < 1 || o.messages > 100_000_000 {
			bad("--messages %d: want 1 to 100000000", o.messages)
		}
		if o.timeout <= 0 {
			bad("--timeout must be positive")
		}
	}
	if o.serverPID < 0 {
		bad("--server-pid %d: want a process id", o.serverPID)
	}
	if o.connectConcurrency < 1 {
		bad("--connect-concurrency %d: want at least 1", o.connectConcurrency)
	}
	if o.connectTimeout <= 0 {
		bad("--connect-timeout must be positive")
	}
	return errors.Join(errs...)
}

// channelName returns the i-th channel of the run.
func (o *benchOptions) channelName(i int) string {
	if o.workload == "fanout" || o.workload == "resume" {
		return o.channel
	}
	return o.channel + "." + strconv.Itoa(i)
}

// benchCheckLoopback refuses a server that is not on this machine: the
// tool generates load, and only at one's own loopback.
func benchCheckLoopback(u *url.URL) error {
	host := u.Hostname()
	if strings.EqualFold(host, "localhost") {
		return nil
	}
	if ip, err := netip.ParseAddr(host); err == nil && ip.Zone() == "" && ip.Unmap().IsLoopback() {
		return nil
	}
	return fmt.Errorf("--server %s: bench drives load at a server on this machine only; the host must be in 127.0.0.0/8, ::1 or localhost, not %q", u, host)
}

// Phases of a run, for the progress line and the timeline.
const (
	benchPhaseConnect int32 = iota
	benchPhaseWarmup
	benchPhaseMeasure
	benchPhaseDrain
	benchPhasePublish // resume: publishing while the subscriber is away
	benchPhaseCatchUp // resume
	benchPhaseHold    // idle
	benchPhaseDone
)

var benchPhaseNames = []string{"connect", "warmup", "measure", "drain", "publish", "catch-up", "hold", "done"}

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
	// pubHC makes the few API calls besides publishing (heads, history).
	pubHC    *http.Client
	wsDialer *websocket.Dialer
	// reactors read the SSE and WebSocket subscribers' sockets.
	reactors []*benchReactor
	urls     benchURLs
	chans    []*benchChannel
	subs     []*benchSub
	pubs     []*benchPub

	// latFrom and latTo bound the send times (Unix ns) whose delivery
	// latency is recorded: the measured window.
	latFrom, latTo atomic.Int64
	// stopping: the run is closing its subscribers; their errors are expected.
	stopping atomic.Bool
	// pubStop ends the publishers after their current publish.
	pubStop atomic.Bool
	// pubTickets, when bounded, is how many publishes are left (resume).
	pubTickets atomic.Int64
	pubBounded bool
	phase      atomic.Int32
	startedAt  time.Time

	errs    benchErrors
	notices benchErrors // reconnects and their reasons: not failures

	// connectSem bounds connections being opened at once.
	connectSem chan struct{}

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
	nsubs := opts.subscribers
	switch opts.workload {
	case "channels":
		nsubs = opts.channels
	case "idle":
		nsubs = opts.connections
	case "resume":
		nsubs = 1
	}
	nchans := 1
	if opts.workload == "channels" || opts.workload == "idle" {
		nchans = opts.channels
	}
	// Every connection is a file: check the limit before opening any.
	limit, err := benchRaiseNoFile()
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
	r.urls = newBenchURLs(opts.base)
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
	for i := range nchans {
		name := opts.channelName(i)
		r.chans = append(r.chans, &benchChannel{idx: i, name: name, qname: url.QueryEscape(name)})
	}
	for i := range nsubs {
		r.subs = append(r.subs, newBenchSub(r, i, r.chans[i%nchans], readBuf))
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
}

func newBenchURLs(base *url.URL) benchURLs {
	ws := *apiEndpoint(base, "ws")
	ws.Scheme = "ws"
	port := base.Port()
	if port == "" {
		port = "80"
	}
	return benchURLs{
		ws:          ws.String(),
		hostPort:    net.JoinHostPort(base.Hostname(), port),
		ssePath:     benchAbsPath(apiEndpoint(base, "sse")) + "?channel=",
		wsPath:      benchAbsPath(apiEndpoint(base, "ws")),
		publishPath: benchAbsPath(apiEndpoint(base, "api/publish")),
		pollPath:    benchAbsPath(apiEndpoint(base, "poll")) + "?channel=",
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

func (r *benchRun) wsURL() string { return r.urls.ws }

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

func (r *benchRun) run(ctx context.Context) (*benchResult, error) {
	switch r.opts.workload {
	case "idle":
		return r.runIdle(ctx)
	case "resume":
		return r.runResume(ctx)
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
	if r.opts.transport != "poll" {
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

// benchHistory is the part of GET /api/history the tool reads.
type benchHistory struct {
	Head  uint64 `json:"head"`
	Epoch string `json:"epoch"`
	Reset bool   `json:"reset"`
}

func (r *benchRun) history(ctx context.Context, ch *benchChannel, since uint64) (benchHistory, error) {
	u := apiEndpoint(r.opts.base, "api/history").String() + "?channel=" + ch.qname + "&limit=1&since=" + strconv.FormatUint(since, 10)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return benchHistory{}, err
	}
	setAuth(req.Header, r.opts.token)
	resp, err := r.pubHC.Do(req)
	if err != nil {
		return benchHistory{}, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return benchHistory{}, fmt.Errorf("GET /api/history?channel=%s: %w", ch.name, readAPIError(resp))
	}
	var h benchHistory
	if err := benchDecodeJSON(resp.Body, &h); err != nil {
		return benchHistory{}, fmt.Errorf("GET /api/history?channel=%s: %w", ch.name, err)
	}
	return h, nil
}

// connectAll starts every subscriber under subCtx and waits until each is
// confirmed subscribed. The first failure ends the connect phase.
func (r *benchRun) connectAll(ctx, subCtx context.Context, wg *sync.WaitGroup) error {
	r.phase.Store(benchPhaseConnect)
	ready := make(chan error, len(r.subs))
	for _, s := range r.subs {
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
	for n := 0; n < len(r.subs); {
		select {
		case err := <-ready:
			if err != nil {
				return fmt.Errorf("subscriber could not subscribe (%d of %d did): %w", n, len(r.subs), err)
			}
			n++
		case <-tick.C:
			r.progressf("%5.0fs connect   subscribed %d of %d", time.Since(start).Seconds(), n, len(r.subs))
		case <-deadline.C:
			return fmt.Errorf("only %d of %d subscribers were subscribed after --connect-timeout %s", n, len(r.subs), r.opts.connectTimeout)
		case <-ctx.Done():
			return fmt.Errorf("interrupted while connecting (%d of %d subscribed): %w", n, len(r.subs), ctx.Err())
		}
	}
	r.progressf("%5.0fs connect   subscribed %d of %d in %.2fs", time.Since(start).Seconds(), len(r.subs), len(r.subs), time.Since(start).Seconds())
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

// runStream runs fanout and channels.
func (r *benchRun) runStream(ctx context.Context) (*benchResult, error) {
	res := r.newResult()
	if err := r.prepareChannels(ctx); err != nil {
		return nil, err
	}
	subCtx, cancelSubs := context.WithCancel(context.WithoutCancel(ctx))
	var subWG sync.WaitGroup
	if err := r.connectAll(ctx, subCtx, &subWG); err != nil {
		r.stopSubscribers(cancelSubs, &subWG)
		return nil, err
	}

	pubCtx, cancelPubs := context.WithCancel(ctx)
	defer cancelPubs()
	var pubWG sync.WaitGroup
	if err := r.startPublishers(pubCtx, &pubWG); err != nil {
		r.stopSubscribers(cancelSubs, &subWG)
		return nil, err
	}
	stopProgress := r.startProgress()

	r.phase.Store(benchPhaseWarmup)
	benchWait(ctx, r.opts.warmup)
	s0 := r.snapshot()
	r.latFrom.Store(s0.at.UnixNano())
	r.phase.Store(benchPhaseMeasure)
	benchWait(ctx, r.opts.duration)
	s1 := r.snapshot()
	r.latTo.Store(s1.at.UnixNano())

	r.pubStop.Store(true)
	pubWG.Wait()
	r.settleHeads()
	r.phase.Store(benchPhaseDrain)
	drainStart := time.Now()
	arrived := r.drain(ctx, r.opts.drain)
	res.DrainSeconds = round3(time.Since(drainStart).Seconds())
	res.DrainComplete = arrived
	r.stopSubscribers(cancelSubs, &subWG)
	r.phase.Store(benchPhaseDone)
	stopProgress()

	r.fill(res, s0, s1)
	return res, nil
}

// runIdle opens N connections, holds them and reads the server's memory.
func (r *benchRun) runIdle(ctx context.Context) (*benchResult, error) {
	res := r.newResult()
	before, err := benchReadProc(r.opts.serverPID)
	if err != nil {
		return nil, fmt.Errorf("--server-pid %d: %w", r.opts.serverPID, err)
	}
	selfBefore, _ := benchReadProc(0)
	subCtx, cancelSubs := context.WithCancel(context.WithoutCancel(ctx))
	var subWG sync.WaitGroup
	connectStart := time.Now()
	if err := r.connectAll(ctx, subCtx, &subWG); err != nil {
		r.stopSubscribers(cancelSubs, &subWG)
		return nil, err
	}
	connectSecs := time.Since(connectStart).Seconds()
	r.phase.Store(benchPhaseHold)
	stopProgress := r.startProgress()
	benchWait(ctx, r.opts.hold)
	after, err := benchReadProc(r.opts.serverPID)
	selfAfter, _ := benchReadProc(0)
	var reconnects int64
	for _, s := range r.subs {
		reconnects += s.reconnects.Load()
	}
	r.stopSubscribers(cancelSubs, &subWG)
	r.phase.Store(benchPhaseDone)
	stopProgress()
	if err != nil {
		return nil, fmt.Errorf("--server-pid %d: %w", r.opts.serverPID, err)
	}
	n := float64(len(r.subs))
	res.Idle = &benchIdleResult{
		Connections:      len(r.subs),
		Channels:         len(r.chans),
		ConnectSeconds:   connectSecs,
		HoldSeconds:      r.opts.hold.Seconds(),
		RSSBeforeKiB:     before.RSSKiB,
		RSSAfterKiB:      after.RSSKiB,
		PerConnKiB:       math.Round(float64(after.RSSKiB-before.RSSKiB)/n*100) / 100,
		ToolPerConnKiB:   math.Round(float64(selfAfter.RSSKiB-selfBefore.RSSKiB)/n*100) / 100,
		ServerCPUSeconds: (after.CPU - before.CPU).Seconds(),
	}
	res.Server = &benchServerResult{PID: r.opts.serverPID, RSSKiB: after.RSSKiB, PeakRSSKiB: after.HWMKiB, CPUs: after.CPUs}
	res.Tool.RSSKiB = selfAfter.RSSKiB
	res.Reconnects = reconnects
	r.fillErrors(res)
	return res, nil
}

// runResume: subscribe, note the position, leave; publish K; come back
// from the position and time the catch-up.
func (r *benchRun) runResume(ctx context.Context) (*benchResult, error) {
	res := r.newResult()
	if err := r.prepareChannels(ctx); err != nil {
		return nil, err
	}
	sub := r.subs[0]
	ch := r.chans[0]

	// 1. Subscribe and leave at once, keeping the position.
	r.phase.Store(benchPhaseConnect)
	sub.once = true
	if err := sub.session(ctx, func() {}); err != nil {
		return nil, fmt.Errorf("subscribe: %w", err)
	}
	sub.once = false
	sub.pollSess = "" // come back by cursor alone, as after losing the session

	// 2. Publish K, as fast as the publishers are acknowledged.
	r.phase.Store(benchPhasePublish)
	stopProgress := r.startProgress()
	r.pubBounded = true
	r.pubTickets.Store(int64(r.opts.messages))
	pubCtx, cancelPubs := context.WithCancel(ctx)
	defer cancelPubs()
	var pubWG sync.WaitGroup
	r.latFrom.Store(0) // every message counts
	p0 := time.Now()
	if err := r.startPublishers(pubCtx, &pubWG); err != nil {
		stopProgress()
		return nil, err
	}
	pubWG.Wait()
	pubSecs := time.Since(p0).Seconds()
	r.settleHeads()
	if ctx.Err() != nil {
		stopProgress()
		return nil, fmt.Errorf("interrupted while publishing: %w", ctx.Err())
	}
	want := int64(ch.head - sub.track.base)
	if h, err := r.history(ctx, ch, sub.track.base); err != nil {
		stopProgress()
		return nil, fmt.Errorf("check the history: %w", err)
	} else if h.Reset {
		stopProgress()
		return nil, fmt.Errorf("the server no longer keeps channel %s from offset %d (head %d): its history holds fewer than the %d messages published; raise history.size in the server's configuration to at least %d", ch.name, sub.track.base+1, h.Head, want, want)
	}

	// 3. Come back from the position and time the catch-up.
	r.phase.Store(benchPhaseCatchUp)
	s0 := r.snapshot()
	subCtx, cancelSubs := context.WithCancel(context.WithoutCancel(ctx))
	var subWG sync.WaitGroup
	ready := make(chan error, 1)
	subWG.Add(1)
	go func() {
		defer subWG.Done()
		sub.run(subCtx, ready)
	}()
	arrived := r.drain(ctx, r.opts.timeout)
	s1 := r.snapshot()
	end := time.Unix(0, sub.lastAt.Load())
	if !arrived || end.Before(s0.at) {
		end = s1.at
	}
	s1.at = end
	r.latTo.Store(math.MaxInt64)
	r.stopSubscribers(cancelSubs, &subWG)
	r.phase.Store(benchPhaseDone)
	stopProgress()
	select {
	case err := <-ready:
		if err != nil {
			r.errs.add("resume: reconnect: %v", err)
		}
	default:
	}
	res.DrainComplete = arrived
	r.fill(res, s0, s1)
	catch := end.Sub(s0.at).Seconds()
	res.Resume = &benchResumeResult{
		Messages:       want,
		PublishSeconds: round3(pubSecs),
		PublishPerSec:  math.Round(float64(r.acks()) / pubSecs),
		CatchUpSeconds: round3(catch),
		CatchUpPerSec:  math.Round(float64(sub.track.distinct) / catch),
		CaughtUp:       arrived,
		ReceivedOfWant: sub.track.distinct,
		StartOffset:    sub.track.base,
		EndOffset:      ch.head,
	}
	res.AcksPerSec = res.Resume.PublishPerSec
	res.Acks = r.acks()
	return res, nil
}
