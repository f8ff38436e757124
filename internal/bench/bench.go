package bench

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"net/netip"
	"net/url"
	"os"
	"runtime/pprof"
	"strconv"
	"strings"
	"time"

	"github.com/heraldrt/herald/client"
	"github.com/heraldrt/herald/internal/cli"
	"github.com/heraldrt/herald/server"
)

const benchUsage = `Usage: herald bench WORKLOAD [flags]

Workloads (against a Herald on this machine; run "herald bench WORKLOAD -h"):
  fanout    one channel, S subscribers on one transport, P publishers
  channels  C channels with one subscriber each, publishes spread over them
  idle      N connections held open and subscribed: server memory per connection
  resume    a subscriber away while K messages are published, then catching up
  flood     an abusive user floods a rate-limited channel while S subscribers
            receive a well-behaved publisher's messages: refusals, and the
            delivery latency before and during the flood
  sweep     fanout, channels and idle at growing sizes: per-delivery CPU and
            per-connection memory as work grows, with SVG charts
  webhooks  outgoing webhooks: starts its own servers (herald serve with a
            generated webhooks: section) and a receiver; events/s delivered,
            unbatched and batched, and publish msgs/s with endpoints and without
  sync      data sync from PostgreSQL (--dsn): starts its own server with a
            generated sync: section, commits updates in transactions of 100
            and times them to an SSE subscriber: changes/s and latency
  soak      the mixed workload (SSE, WebSocket and long-poll subscribers,
            API and WebSocket publishers, subscribers cut and resumed) at
            half of the measured maximum for --duration (1h): the server's
            memory (anonymous and file-backed), goroutines, open files, CPU,
            latency and (--data-dir) data directory every 10 s, their
            slopes, and soak.svg

Every workload prints a progress line a second on stderr, a table and one
JSON line on stdout, and exits non-zero if any message was lost, duplicated
or out of order.
`

// benchOptions are the parsed flags of one run.
type benchOptions struct {
	workload    string
	base        *url.URL   // the server, or a cluster's first node: the API calls go there
	nodes       []*url.URL // every node (base first): connections are spread over them
	token       string
	transport   string // sse, ws, poll
	subscribers int    // fanout
	channels    int    // channels: C; idle: how many the connections spread over
	connections int    // idle
	messages    int    // resume
	publishers  int
	publishVia  string  // api, ws
	batch       int     // messages per POST /api/publish (api)
	window      int     // publish ops in flight per connection (ws)
	rate        float64 // messages/s over all publishers; 0 = as fast as acknowledged
	duration    time.Duration
	warmup      time.Duration
	drain       time.Duration
	hold        time.Duration // idle
	steps       []int         // idle in a sweep: connection counts to grow through, measuring at each
	timeout     time.Duration // resume: the catch-up's bound
	payload     int
	channel     string // the channel (fanout, resume, flood) or the channels' prefix
	// flood: the abusive user's connections and requests in flight on
	// each, the secret that mints its and the publishers' user tokens, and
	// the phase without the flood.
	floodConns  int
	floodWindow int
	jwtSecret   string
	baseline    time.Duration
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

// Run runs `herald bench WORKLOAD [flags]` (args start with the
// workload): it parses the flags (their defaults from getenv), drives the
// server, writes the progress to stderr and the report to stdout, and
// returns an error when the run failed or a message was lost, duplicated
// or out of order. flag.ErrHelp is returned as is.
func Run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		fmt.Fprint(stderr, benchUsage)
		if len(args) == 0 {
			return errors.New("name a workload: fanout, channels, idle, resume, flood, sweep, webhooks, sync or soak")
		}
		return flag.ErrHelp
	}
	switch args[0] {
	case "sweep":
		return runSweep(ctx, args[1:], getenv, stdout, stderr)
	case "webhooks":
		return runWebhooksBench(ctx, args[1:], stdout, stderr)
	case "sync":
		return runSyncBench(ctx, args[1:], stdout, stderr)
	case "soak":
		return runSoak(ctx, args[1:], getenv, stdout, stderr)
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
		synopsis = "bench idle [--transport sse|ws|poll|mixed] [--connections N] --server-pid PID [--hold D] [flags]"
	case "resume":
		synopsis = "bench resume [--transport sse|ws|poll] [--messages K] [--publishers P] [flags]"
	case "flood":
		synopsis = "bench flood --jwt-secret SECRET [--transport mixed|sse|ws|poll] [--subscribers S] [--rate N] [--baseline D] [--duration D] [--flood-connections C] [flags]"
	default:
		return benchOptions{}, fmt.Errorf("unknown workload %q; use fanout, channels, idle, resume, flood, sweep, webhooks, sync or soak", workload)
	}
	fs := cli.NewFlagSet(workload, synopsis, stderr)
	o := benchOptions{workload: workload}
	var serverURL string
	fs.StringVar(&serverURL, "server", "", "server base URL on this machine (default $"+cli.EnvURL+", else "+cli.DefaultServerURL+"); loopback only. Several, comma-separated: the nodes of one cluster, connections spread over them in turn")
	fs.StringVar(&o.token, "token", "", "API key sent as Authorization: Bearer on every request (default $"+cli.EnvAPIKey+")")
	if workload == "idle" {
		fs.StringVar(&o.transport, "transport", "sse", "subscriber transport: sse, ws, poll, or mixed (40 % sse, 40 % ws, 20 % poll)")
	} else if workload == "flood" {
		fs.StringVar(&o.transport, "transport", "mixed", "subscriber transport: mixed (40 % sse, 40 % ws, 20 % poll), sse, ws or poll")
	} else {
		fs.StringVar(&o.transport, "transport", "sse", "subscriber transport: sse, ws or poll")
	}
	fs.IntVar(&o.serverPID, "server-pid", 0, "the server's process id: report its CPU time per delivered message and its memory, from /proc (Linux)")
	fs.StringVar(&o.html, "html", "", "also write a self-contained HTML report (latency and throughput charts) to this file")
	fs.IntVar(&o.connectConcurrency, "connect-concurrency", 128, "connections opened at once while subscribers connect")
	fs.DurationVar(&o.connectTimeout, "connect-timeout", 2*time.Minute, "bound on connecting and subscribing every subscriber")
	fs.BoolVar(&o.quiet, "quiet", false, "no progress lines on stderr")
	fs.StringVar(&o.cpuProfile, "cpuprofile", "", "write this tool's own CPU profile (pprof) to the file: is the load generator the bottleneck?")
	if workload == "flood" {
		fs.IntVar(&o.publishers, "publishers", 1, "well-behaved publishers, each waiting for its acknowledgement before the next publish")
		fs.StringVar(&o.publishVia, "publish-via", "api", "api (POST /api/publish, keep-alive) or ws (publish ops, one connection per publisher)")
		fs.IntVar(&o.payload, "payload", 200, "approximate size of each message's data in bytes (JSON carrying the send time)")
	} else if workload != "idle" {
		fs.IntVar(&o.publishers, "publishers", 16, "concurrent publishers, each waiting for its acknowledgement before the next publish")
		fs.StringVar(&o.publishVia, "publish-via", "api", "api (POST /api/publish, keep-alive) or ws (publish ops, one connection per publisher)")
		fs.IntVar(&o.payload, "payload", 200, "approximate size of each message's data in bytes (JSON carrying the send time)")
	}
	o.batch, o.window = 1, 1
	if workload == "fanout" || workload == "channels" {
		fs.IntVar(&o.batch, "batch", 1, "messages per POST /api/publish, sent as one batch publish (--publish-via api)")
		fs.IntVar(&o.window, "window", 1, "publish ops each WebSocket publisher keeps in flight, acknowledged in order (--publish-via ws)")
		fs.Float64Var(&o.rate, "rate", 0, "publishes per second over all publishers; 0 = as fast as acknowledgements come")
		fs.DurationVar(&o.duration, "duration", 10*time.Second, "the measured window")
		fs.DurationVar(&o.warmup, "warmup", time.Second, "publishing before the measured window, left out of the figures")
		fs.DurationVar(&o.drain, "drain", 5*time.Second, "bound on waiting for in-flight deliveries after publishing stops")
	}
	switch workload {
	case "flood":
		fs.IntVar(&o.subscribers, "subscribers", 100, "subscribers of the channel")
		fs.StringVar(&o.channel, "channel", "", "the channel, which a rule of the server must rate-limit (default a fresh bench.flood.* name)")
		fs.Float64Var(&o.rate, "rate", 50, "the well-behaved publishers' messages per second, in all: keep it under the rule's limit")
		fs.DurationVar(&o.warmup, "warmup", time.Second, "publishing before the baseline, left out of the figures")
		fs.DurationVar(&o.baseline, "baseline", 5*time.Second, "the phase without the flood, measured first")
		fs.DurationVar(&o.duration, "duration", 10*time.Second, "the flood")
		fs.DurationVar(&o.drain, "drain", 30*time.Second, "bound on waiting for in-flight deliveries after publishing stops")
		fs.IntVar(&o.floodConns, "flood-connections", 8, "the abusive user's keep-alive connections, each pipelining requests")
		fs.IntVar(&o.floodWindow, "flood-window", 64, "the abusive user's requests in flight on each connection")
		fs.StringVar(&o.jwtSecret, "jwt-secret", "", "the server's JWT secret, to mint the abusive user's and the publishers' tokens (default $"+cli.EnvJWTSecret+")")
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
	if err := cli.Parse(fs, args); err != nil {
		return benchOptions{}, err
	}
	if o.token == "" {
		o.token = getenv(cli.EnvAPIKey)
	}
	if workload == "flood" && o.jwtSecret == "" {
		o.jwtSecret = getenv(cli.EnvJWTSecret)
	}
	nodes, err := parseBenchServers(&serverURL, getenv)
	if err != nil {
		return benchOptions{}, err
	}
	o.base, o.nodes = nodes[0], nodes
	o.flags = map[string]string{}
	fs.VisitAll(func(f *flag.Flag) {
		if f.Name != "token" && f.Name != "jwt-secret" {
			o.flags[f.Name] = f.Value.String()
		}
	})
	o.flags["server"] = serverURL
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

// parseBenchServers parses --server (when empty, $HERALD_URL or the
// default, set in *serverURL): one URL, or a cluster's nodes separated
// by commas, each plain http:// on a loopback address.
func parseBenchServers(serverURL *string, getenv func(string) string) ([]*url.URL, error) {
	if *serverURL == "" {
		*serverURL = getenv(cli.EnvURL)
	}
	if *serverURL == "" {
		*serverURL = cli.DefaultServerURL
	}
	var nodes []*url.URL
	for _, s := range strings.Split(*serverURL, ",") {
		if _, err := client.New(s, client.Options{}); err != nil {
			return nil, fmt.Errorf("--server: %w", err)
		}
		u, err := url.Parse(s)
		if err != nil {
			return nil, err
		}
		if u.Scheme != "http" {
			return nil, fmt.Errorf("--server %s: bench speaks plain http:// to a server on this machine", u)
		}
		if err := benchCheckLoopback(u); err != nil {
			return nil, err
		}
		nodes = append(nodes, u)
	}
	return nodes, nil
}

func (o *benchOptions) validate() error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	switch {
	case o.transport == "sse", o.transport == "ws", o.transport == "poll":
	case o.transport == "mixed" && (o.workload == "flood" || o.workload == "idle" || o.workload == "soak"):
	case o.workload == "flood" || o.workload == "idle":
		bad("--transport %q: use mixed, sse, ws or poll", o.transport)
	default:
		bad("--transport %q: use sse, ws or poll", o.transport)
	}
	if o.workload != "idle" {
		if o.publishers < 1 || o.publishers > 10000 {
			bad("--publishers %d: want 1 to 10000", o.publishers)
		}
		if o.publishVia != "api" && o.publishVia != "ws" && (o.publishVia != "mixed" || o.workload != "soak") {
			bad("--publish-via %q: use api or ws", o.publishVia)
		}
		if o.payload < 0 || o.payload > 60<<10 {
			bad("--payload %d: want 0 to %d bytes", o.payload, 60<<10)
		}
	}
	if o.workload == "fanout" || o.workload == "channels" || o.workload == "soak" {
		if o.rate < 0 || math.IsNaN(o.rate) || math.IsInf(o.rate, 0) {
			bad("--rate %v: want 0 (as fast as acknowledged) or a positive number of messages/s", o.rate)
		}
		if o.batch < 1 || o.batch > 10000 {
			bad("--batch %d: want 1 to 10000 messages", o.batch)
		} else if o.batch > 1 && o.publishVia != "api" {
			bad("--batch %d: batches are sent with --publish-via api; over a WebSocket use --window", o.batch)
		}
		if o.window < 1 || o.window > 1024 {
			bad("--window %d: want 1 to 1024 ops", o.window)
		} else if o.window > 1 && o.publishVia != "ws" {
			bad("--window %d: a window is for --publish-via ws; over the API use --batch", o.window)
		}
		if o.duration <= 0 || o.duration > 24*time.Hour {
			bad("--duration %s: want more than 0 and at most 24h", o.duration)
		}
		if o.warmup < 0 || o.drain < 0 {
			bad("--warmup and --drain must not be negative")
		}
	}
	switch o.workload {
	case "flood":
		if o.subscribers < 1 || o.subscribers > 1_000_000 {
			bad("--subscribers %d: want 1 to 1000000", o.subscribers)
		}
		if !(o.rate > 0) || math.IsInf(o.rate, 0) {
			bad("--rate %v: want a positive number of messages/s (a well-behaved publisher keeps a pace)", o.rate)
		}
		if o.baseline <= 0 || o.duration <= 0 || o.baseline > 24*time.Hour || o.duration > 24*time.Hour {
			bad("--baseline %s and --duration %s: want more than 0 and at most 24h", o.baseline, o.duration)
		}
		if o.warmup < 0 || o.drain < 0 {
			bad("--warmup and --drain must not be negative")
		}
		if o.floodConns < 1 || o.floodConns > 1000 {
			bad("--flood-connections %d: want 1 to 1000", o.floodConns)
		}
		if o.floodWindow < 1 || o.floodWindow > 4096 {
			bad("--flood-window %d: want 1 to 4096", o.floodWindow)
		}
		if o.jwtSecret == "" {
			bad("--jwt-secret is required: the abusive user and the publishers are users with tokens (the API key is never rate-limited); set $%s or pass the server's secret", cli.EnvJWTSecret)
		}
	case "fanout":
		if o.subscribers < 1 || o.subscribers > 1_000_000 {
			bad("--subscribers %d: want 1 to 1000000", o.subscribers)
		}
	case "channels", "soak":
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
	if o.workload == "fanout" || o.workload == "resume" || o.workload == "flood" {
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
	benchPhaseBaseline // flood: before the flood
	benchPhaseFlood    // flood: the measured window
)

var benchPhaseNames = []string{"connect", "warmup", "measure", "drain", "publish", "catch-up", "hold", "done", "baseline", "flood"}
