package bench

// The webhooks workload of `herald bench`: what outgoing webhooks cost
// and how fast they go. Unlike the other workloads it starts its servers
// itself — each phase needs a fresh server with its own webhooks:
// section — by running `herald serve` (this binary, or --herald) with a
// generated configuration whose endpoints point at a receiver inside the
// tool: a net/http server on 127.0.0.1 that answers 200 at once and
// counts the events of every request (a batch body is a JSON list).
//
// Phases, each on a fresh server and data folder, each publishing the
// same N messages with the same batched publishes (P publishers, B
// messages per POST /api/publish), spread over C channels:
//
//	none       no endpoint: the publish path alone (msgs/s)
//	endpoints  --endpoints (3) endpoints taking every message: the publish
//	           path's msgs/s, and its ratio to none
//	unbatched  one endpoint, batch size 1: events/s from the first publish
//	           until the receiver has every event, and publish→receipt lag
//	batched    the same with batch: {size: --deliver-batch (100)}
//
// The lag is the receipt time minus the send time the message carries,
// so when publishing outruns delivery it includes the time spent queued.

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/heraldrt/herald/client"
	"github.com/heraldrt/herald/internal/cli"
	"github.com/heraldrt/herald/protocol"
)

// The phases of the webhooks workload, in the order they run.
var whPhases = []string{"none", "endpoints", "endpoints-unbatched", "endpoints-queued", "unbatched", "batched", "unbatched-queued", "batched-queued"}

// whOptions are the flags of `herald bench webhooks`.
type whOptions struct {
	messages     int
	publishers   int
	batch        int // messages per POST /api/publish
	channels     int
	endpoints    int // in the endpoints phase
	deliverBatch int // the batched phase's batch.size
	parallel     int // every endpoint's parallel; 0: the server's default
	batchTimeout time.Duration
	phases       []string
	herald       string // the binary that serves
	serverCPUs   string // taskset -c for the server; "" leaves it unpinned
	pprofAddr    string
	timeout      time.Duration // bound on each phase
	quiet        bool
}

func parseWebhooksFlags(args []string, stderr io.Writer) (whOptions, error) {
	fs := cli.NewFlagSet("webhooks", "bench webhooks [--messages N] [--publishers P] [--batch B] [--endpoints E] [--deliver-batch S] [--phases LIST] [--server-cpus LIST] [flags]", stderr)
	var o whOptions
	var phases string
	fs.IntVar(&o.messages, "messages", 100_000, "messages published in each phase")
	fs.IntVar(&o.publishers, "publishers", 4, "concurrent publishers, each sending batches and waiting for their acknowledgement")
	fs.IntVar(&o.batch, "batch", 500, "messages per POST /api/publish")
	fs.IntVar(&o.channels, "channels", 16, "channels the messages spread over")
	fs.IntVar(&o.endpoints, "endpoints", 3, "endpoints taking every message in the endpoints phase")
	fs.IntVar(&o.deliverBatch, "deliver-batch", 100, "the batched phase's batch.size (events per webhook request)")
	fs.IntVar(&o.parallel, "parallel", 0, "every endpoint's parallel (requests in flight); 0 leaves the server's default (4)")
	fs.DurationVar(&o.batchTimeout, "batch-timeout", 100*time.Millisecond, "the batched phase's batch.timeout (how long a partial batch waits)")
	fs.StringVar(&phases, "phases", strings.Join(whPhases, ","), "phases to run, comma-separated: "+strings.Join(whPhases, ", "))
	fs.StringVar(&o.herald, "herald", "", "the herald binary that serves (default this one)")
	fs.StringVar(&o.serverCPUs, "server-cpus", "", "pin each server to these CPUs (taskset -c LIST; Linux), such as 0")
	fs.StringVar(&o.pprofAddr, "server-pprof", "", "serve each server's profiler on this loopback address (pprof_addr), such as 127.0.0.1:6060")
	fs.DurationVar(&o.timeout, "timeout", 2*time.Minute, "bound on each phase: publishing and every delivery")
	fs.BoolVar(&o.quiet, "quiet", false, "no progress lines on stderr")
	if err := cli.Parse(fs, args); err != nil {
		return whOptions{}, err
	}
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if o.messages < 1 || o.messages > 100_000_000 {
		bad("--messages %d: want 1 to 100000000", o.messages)
	}
	if o.publishers < 1 || o.publishers > 1000 {
		bad("--publishers %d: want 1 to 1000", o.publishers)
	}
	if o.batch < 1 || o.batch > 1000 {
		bad("--batch %d: want 1 to 1000 messages (the server's limits.max_batch_messages)", o.batch)
	}
	if o.channels < 1 || o.channels > 100_000 {
		bad("--channels %d: want 1 to 100000", o.channels)
	}
	if o.endpoints < 1 || o.endpoints > 64 {
		bad("--endpoints %d: want 1 to 64", o.endpoints)
	}
	if o.deliverBatch < 1 || o.deliverBatch > 1000 {
		bad("--deliver-batch %d: want 1 to 1000 (an endpoint's batch.size)", o.deliverBatch)
	}
	if o.parallel < 0 || o.parallel > 64 {
		bad("--parallel %d: want 0 (the server's default) or 1 to 64", o.parallel)
	}
	if o.batchTimeout <= 0 {
		bad("--batch-timeout %s: want more than 0", o.batchTimeout)
	}
	if o.timeout <= 0 {
		bad("--timeout %s: want more than 0", o.timeout)
	}
	for p := range strings.SplitSeq(phases, ",") {
		p = strings.TrimSpace(p)
		switch {
		case !slices.Contains(whPhases, p):
			bad("--phases: unknown phase %q; use %s", p, strings.Join(whPhases, ", "))
		case slices.Contains(o.phases, p):
			bad("--phases: %s twice", p)
		default:
			o.phases = append(o.phases, p)
		}
	}
	if err := checkServerPprof(o.pprofAddr); err != nil {
		errs = append(errs, err)
	}
	return o, errors.Join(errs...)
}

// checkServerPprof checks a --server-pprof address: empty, or a loopback
// host:port.
func checkServerPprof(addr string) error {
	if addr == "" {
		return nil
	}
	if u, err := url.Parse("http://" + addr); err != nil || u.Port() == "" || benchCheckLoopback(u) != nil {
		return fmt.Errorf("--server-pprof %s: want a loopback address such as 127.0.0.1:6060", addr)
	}
	return nil
}

// runWebhooksBench runs `herald bench webhooks`: every phase, then the
// table and the JSON line. It fails when a phase failed or lost events.
func runWebhooksBench(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	o, err := parseWebhooksFlags(args, stderr)
	if err != nil {
		return err
	}
	if o.herald == "" {
		if o.herald, err = os.Executable(); err != nil {
			return fmt.Errorf("find this binary to serve with (give --herald): %w", err)
		}
	}
	res := whResult{Workload: "webhooks", Messages: o.messages, Publishers: o.publishers, Batch: o.batch, Channels: o.channels}
	var failed []string
	for _, name := range o.phases {
		p, err := runWebhooksPhase(ctx, o, name, stderr)
		if err != nil {
			failed = append(failed, fmt.Sprintf("phase %s: %v", name, err))
			if p == nil {
				break
			}
		}
		res.Phases = append(res.Phases, *p)
		if ctx.Err() != nil {
			break
		}
	}
	res.ratio()
	if err := writeWebhooksReport(stdout, &res); err != nil {
		return err
	}
	return errors.Join(errorsOf(failed)...)
}

func errorsOf(msgs []string) []error {
	out := make([]error, len(msgs))
	for i, m := range msgs {
		out[i] = errors.New(m)
	}
	return out
}

// whResult is the report of `herald bench webhooks`.
type whResult struct {
	Workload   string    `json:"workload"`
	Messages   int       `json:"messages"`
	Publishers int       `json:"publishers"`
	Batch      int       `json:"batch"`
	Channels   int       `json:"channels"`
	Phases     []whPhase `json:"phases"`
	// PublishRatio is the endpoints phase's publish msgs/s over the none
	// phase's (0 unless both ran); PublishRatioUnbatched the same for the
	// endpoints-unbatched phase, PublishRatioQueued for endpoints-queued
	// (the publish path's own cost: no delivery competes with it).
	PublishRatio          float64 `json:"publish_ratio,omitempty"`
	PublishRatioUnbatched float64 `json:"publish_ratio_unbatched,omitempty"`
	PublishRatioQueued    float64 `json:"publish_ratio_queued,omitempty"`
}

// whPhase is one phase's figures.
type whPhase struct {
	Name      string `json:"name"`
	Endpoints int    `json:"endpoints"`
	BatchSize int    `json:"batch_size,omitempty"`
	// Publishing: from the first publish to the last acknowledgement.
	PublishSeconds float64 `json:"publish_seconds"`
	PublishPerSec  float64 `json:"publish_per_sec"`
	// Delivery phases: from the first publish until the receiver held
	// every event (Complete), in events/s. Queued phases publish
	// everything while the receiver refuses (503), then let it accept:
	// they time the drain, from the first accepted request to the last
	// event, which no publishing competes with.
	Queued          bool         `json:"queued,omitempty"`
	DrainSeconds    float64      `json:"drain_seconds,omitempty"`
	DrainedPerSec   float64      `json:"drained_per_sec,omitempty"`
	Complete        bool         `json:"complete"`
	DeliverSeconds  float64      `json:"deliver_seconds,omitempty"`
	DeliveredPerSec float64      `json:"delivered_per_sec,omitempty"`
	Lag             benchLatency `json:"lag"`
	// Received counts distinct events over every endpoint when the phase
	// ended, Duplicates the events received again, Requests the webhook
	// requests.
	Received   int64 `json:"received"`
	Duplicates int64 `json:"duplicates"`
	Requests   int64 `json:"requests"`
	// ServerCPUSeconds is the server's CPU time over the measured span;
	// ServerCPUPerMsg the same per message published (µs).
	ServerCPUSeconds float64 `json:"server_cpu_seconds,omitempty"`
	ServerCPUPerMsg  float64 `json:"server_cpu_per_msg_us,omitempty"`
}

func (r *whResult) ratio() {
	var none, ends, unbatched, queued float64
	for _, p := range r.Phases {
		switch p.Name {
		case "none":
			none = p.PublishPerSec
		case "endpoints":
			ends = p.PublishPerSec
		case "endpoints-unbatched":
			unbatched = p.PublishPerSec
		case "endpoints-queued":
			queued = p.PublishPerSec
		}
	}
	if none > 0 {
		r.PublishRatio = math.Round(ends/none*1000) / 1000
		r.PublishRatioUnbatched = math.Round(unbatched/none*1000) / 1000
		r.PublishRatioQueued = math.Round(queued/none*1000) / 1000
	}
}

// runWebhooksPhase starts a receiver and a fresh server configured for
// the phase, publishes, waits for the deliveries the phase measures, and
// stops both.
func runWebhooksPhase(ctx context.Context, o whOptions, name string, stderr io.Writer) (*whPhase, error) {
	p := &whPhase{Name: name}
	deliver := strings.HasPrefix(name, "unbatched") || strings.HasPrefix(name, "batched")
	p.Queued = strings.HasSuffix(name, "-queued")
	switch name {
	case "endpoints", "endpoints-queued":
		p.Endpoints, p.BatchSize = o.endpoints, o.deliverBatch
	case "endpoints-unbatched":
		p.Endpoints, p.BatchSize = o.endpoints, 1
	case "unbatched", "unbatched-queued":
		p.Endpoints, p.BatchSize = 1, 1
	case "batched", "batched-queued":
		p.Endpoints, p.BatchSize = 1, o.deliverBatch
	}
	ctx, cancel := context.WithTimeout(ctx, o.timeout)
	defer cancel()
	rc, err := startWhReceiver(p.Endpoints, o.messages)
	if err != nil {
		return nil, err
	}
	rc.refuse.Store(p.Queued)
	defer rc.close()
	key := whRandom("bench-", 18)
	cfg := whConfig(o, p, rc.addr, key)
	srv, err := startWhServer(ctx, o, cfg, stderr)
	if err != nil {
		return nil, err
	}
	defer srv.stop()
	progress := func(format string, args ...any) {
		if !o.quiet {
			fmt.Fprintf(stderr, "bench webhooks %s: "+format+"\n", append([]any{name}, args...)...)
		}
	}
	progress("server pid %d on %s, receiver on %s", srv.pid, srv.base, rc.addr)

	c, err := client.New(srv.base, client.Options{Token: key, HTTPClient: &http.Client{Transport: benchTransport(o.publishers+4, 16<<10), Timeout: publishTimeout}})
	if err != nil {
		return nil, err
	}
	cpu0, cpuErr := benchReadProc(srv.pid)
	t0 := time.Now()
	last, err := whPublish(ctx, c, o, "bench.webhooks."+strconv.FormatInt(t0.UnixNano(), 36))
	if err != nil {
		return nil, err
	}
	p.PublishSeconds = round3(last.Sub(t0).Seconds())
	p.PublishPerSec = math.Round(float64(o.messages) / last.Sub(t0).Seconds())
	progress("published %d messages in %.2f s", o.messages, p.PublishSeconds)
	if p.Queued {
		rc.refuse.Store(false)
	}
	end := last
	if deliver {
		select {
		case <-rc.done:
			p.Complete = true
			end = rc.doneAt()
			p.DeliverSeconds = round3(end.Sub(t0).Seconds())
			p.DeliveredPerSec = math.Round(float64(o.messages) / end.Sub(t0).Seconds())
			if p.Queued {
				first := rc.firstAccepted()
				p.DrainSeconds = round3(end.Sub(first).Seconds())
				p.DrainedPerSec = math.Round(float64(o.messages) / end.Sub(first).Seconds())
			}
			progress("received %d events in %.2f s", o.messages, p.DeliverSeconds)
		case <-ctx.Done():
		}
	}
	if cpu1, err := benchReadProc(srv.pid); err == nil && cpuErr == nil {
		p.ServerCPUSeconds = round3((cpu1.CPU - cpu0.CPU).Seconds())
		p.ServerCPUPerMsg = math.Round((cpu1.CPU-cpu0.CPU).Seconds()/float64(o.messages)*1e7) / 10
	}
	p.Received, p.Duplicates, p.Requests, p.Lag = rc.counts()
	if deliver && !p.Complete {
		return p, fmt.Errorf("the receiver had %d of %d events when the phase's --timeout %s passed", p.Received, o.messages, o.timeout)
	}
	return p, nil
}

// whPublish publishes o.messages messages in batches over o.channels
// channels named prefix.i, each carrying its number and its send time,
// and returns when the last was acknowledged.
func whPublish(ctx context.Context, c *client.Client, o whOptions, prefix string) (time.Time, error) {
	var next atomic.Int64
	var wg sync.WaitGroup
	errs := make([]error, o.publishers)
	for w := range o.publishers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			msgs := make([]protocol.PublishRequest, 0, o.batch)
			for ctx.Err() == nil {
				from := int(next.Add(int64(o.batch))) - o.batch
				if from >= o.messages {
					return
				}
				msgs = msgs[:0]
				now := time.Now().UnixNano()
				for i := from; i < min(from+o.batch, o.messages); i++ {
					msgs = append(msgs, protocol.PublishRequest{Channel: prefix + "." + strconv.Itoa(i%o.channels),
						Data: fmt.Appendf(nil, `{"i":%d,"t":%d}`, i, now)})
				}
				res, err := c.PublishBatch(ctx, msgs)
				if err != nil {
					errs[w] = fmt.Errorf("publish: %w", err)
					return
				}
				for _, r := range res {
					if r.Error != nil {
						errs[w] = fmt.Errorf("publish to %s refused: %d %s", r.Channel, r.Error.Code, r.Error.Message)
						return
					}
				}
			}
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return time.Time{}, err
	}
	return time.Now(), ctx.Err()
}

// whConfig is the server's configuration for a phase.
func whConfig(o whOptions, p *whPhase, receiver, key string) []byte {
	var b bytes.Buffer
	fmt.Fprintf(&b, "api_key: %q\nshutdown_timeout: 5s\nlog: {level: warn}\n", key)
	if o.pprofAddr != "" {
		fmt.Fprintf(&b, "pprof_addr: %q\n", o.pprofAddr)
	}
	if p.Endpoints == 0 {
		return b.Bytes()
	}
	b.WriteString("webhooks:\n")
	for k := range p.Endpoints {
		fmt.Fprintf(&b, "  - name: bench-%d\n    url: http://%s/e/%d\n    secret: %s\n    events: [message]\n", k, receiver, k, whRandom("whsec_", 24))
		if o.parallel > 0 {
			fmt.Fprintf(&b, "    parallel: %d\n", o.parallel)
		}
		if p.BatchSize > 1 {
			fmt.Fprintf(&b, "    batch: {size: %d, timeout: %s}\n", p.BatchSize, o.batchTimeout)
		}
		if p.Queued {
			// Refused while publishing: the breaker opens (no request is
			// made or rendered while it is) and probes every second, so
			// the drain starts soon after the receiver accepts.
			b.WriteString("    retry: {initial: 20ms, max: 100ms}\n    breaker: {timeout: 1s}\n")
		}
	}
	return b.Bytes()
}

// whRandom is prefix and the base64 of n random bytes (URL-safe for
// the API key, standard for a whsec_ secret).
func whRandom(prefix string, n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b) // never fails (crypto/rand)
	if prefix == "whsec_" {
		return prefix + base64.StdEncoding.EncodeToString(b)
	}
	return prefix + base64.RawURLEncoding.EncodeToString(b)
}

// whServer is a `herald serve` child process.
type whServer struct {
	cmd    *exec.Cmd
	pid    int
	base   string
	dir    string
	exited chan struct{}
	logs   *whLogs
}

// startWhServer writes cfg beside a fresh data folder, starts the server
// on a free loopback port and waits until it is ready.
func startWhServer(ctx context.Context, o whOptions, cfg []byte, stderr io.Writer) (*whServer, error) {
	dir, err := os.MkdirTemp("", "herald-bench-webhooks-")
	if err != nil {
		return nil, err
	}
	file := filepath.Join(dir, "herald.yaml")
	if err := os.WriteFile(file, cfg, 0o600); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	port, err := whFreePort()
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	args := []string{o.herald, "serve", "--config", file, "--data-dir", filepath.Join(dir, "data"), "--addr", "127.0.0.1:" + port}
	if o.serverCPUs != "" {
		args = append([]string{"taskset", "-c", o.serverCPUs}, args...)
	}
	s := &whServer{base: "http://127.0.0.1:" + port, dir: dir, exited: make(chan struct{}), logs: &whLogs{}}
	// The child is stopped by stop (SIGTERM, then a kill after the
	// bound), not by ctx: its own context is the process's.
	s.cmd = exec.Command(args[0], args[1:]...)
	s.cmd.Stdout, s.cmd.Stderr = s.logs, s.logs
	s.cmd.Env = append(os.Environ(), "GOMAXPROCS=2")
	if err := s.cmd.Start(); err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("start %s: %w", strings.Join(args, " "), err)
	}
	s.pid = s.cmd.Process.Pid
	go func() {
		_ = s.cmd.Wait()
		close(s.exited)
	}()
	if err := s.waitReady(ctx); err != nil {
		s.stop()
		return nil, fmt.Errorf("%w; its output:\n%s", err, s.logs.String())
	}
	return s, nil
}

// waitReady polls GET /readyz until it answers 200, the server exits or
// ctx ends.
func (s *whServer) waitReady(ctx context.Context) error {
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	hc := &http.Client{Timeout: time.Second}
	for {
		if resp, err := hc.Get(s.base + "/readyz"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case <-tick.C:
		case <-s.exited:
			return fmt.Errorf("the server exited before it was ready (%s)", s.cmd.ProcessState)
		case <-ctx.Done():
			return fmt.Errorf("the server was not ready: %w", ctx.Err())
		}
	}
}

// stop ends the server with SIGTERM (a kill after 15 s) and removes its
// folder.
func (s *whServer) stop() {
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	t := time.NewTimer(15 * time.Second)
	defer t.Stop()
	select {
	case <-s.exited:
	case <-t.C:
		_ = s.cmd.Process.Kill()
		<-s.exited
	}
	os.RemoveAll(s.dir)
}

// whFreePort is a loopback port free a moment ago.
func whFreePort() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	_, port, err := net.SplitHostPort(ln.Addr().String())
	return port, err
}

// whLogs keeps the last 64 KiB of the server's output.
type whLogs struct {
	mu  sync.Mutex
	buf []byte
}

func (l *whLogs) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.buf = append(l.buf, p...)
	if over := len(l.buf) - 64<<10; over > 0 {
		l.buf = l.buf[over:]
	}
	return len(p), nil
}

func (l *whLogs) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return string(l.buf)
}

// whReceiver is the endpoints' receiver: it answers 200 at once and
// counts each endpoint's events by the number the bench gave them.
type whReceiver struct {
	addr   string
	srv    *http.Server
	served chan struct{}
	want   int
	// done is closed once the endpoints together hold want × endpoints
	// distinct events.
	done chan struct{}

	// refuse makes it answer 503 (a queued phase, while publishing).
	refuse atomic.Bool

	mu       sync.Mutex
	first    time.Time // the first accepted request
	seen     [][]bool  // per endpoint, per message number
	distinct int64
	dups     int64
	requests int64
	lag      *benchHist
	at       time.Time // when done
}

func startWhReceiver(endpoints, want int) (*whReceiver, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("receiver: %w", err)
	}
	rc := &whReceiver{addr: ln.Addr().String(), want: want, done: make(chan struct{}), served: make(chan struct{}),
		seen: make([][]bool, endpoints), lag: newBenchHist()}
	for k := range rc.seen {
		rc.seen[k] = make([]bool, want)
	}
	rc.srv = &http.Server{Handler: http.HandlerFunc(rc.serveHTTP), ReadHeaderTimeout: 10 * time.Second}
	go func() {
		defer close(rc.served)
		_ = rc.srv.Serve(ln)
	}()
	return rc, nil
}

func (rc *whReceiver) close() {
	_ = rc.srv.Close()
	<-rc.served
}

// whEvent is the part of a default webhook body the receiver reads: the
// message envelope's data, as the bench published it.
type whEvent struct {
	Data struct {
		Data struct {
			I int   `json:"i"`
			T int64 `json:"t"`
		} `json:"data"`
	} `json:"data"`
}

func (rc *whReceiver) serveHTTP(w http.ResponseWriter, r *http.Request) {
	now := time.Now()
	k, err := strconv.Atoi(strings.TrimPrefix(r.URL.Path, "/e/"))
	body, rerr := io.ReadAll(r.Body)
	if err != nil || rerr != nil || k < 0 || k >= len(rc.seen) {
		http.Error(w, "not an endpoint of this bench", http.StatusNotFound)
		return
	}
	var events []whEvent
	if trimmed := bytes.TrimSpace(body); len(trimmed) > 0 && trimmed[0] == '[' {
		err = json.Unmarshal(trimmed, &events)
	} else {
		events = make([]whEvent, 1)
		err = json.Unmarshal(trimmed, &events[0])
	}
	if err != nil {
		http.Error(w, "body: "+err.Error(), http.StatusBadRequest)
		return
	}
	if rc.refuse.Load() {
		http.Error(w, "not yet", http.StatusServiceUnavailable)
		return
	}
	w.WriteHeader(http.StatusOK)
	rc.mu.Lock()
	defer rc.mu.Unlock()
	if rc.first.IsZero() {
		rc.first = now
	}
	rc.requests++
	for _, ev := range events {
		i := ev.Data.Data.I
		if i < 0 || i >= rc.want {
			continue
		}
		if rc.seen[k][i] {
			rc.dups++
			continue
		}
		rc.seen[k][i] = true
		rc.distinct++
		rc.lag.record(now.UnixNano() - ev.Data.Data.T)
	}
	if rc.distinct == int64(rc.want*len(rc.seen)) && rc.at.IsZero() {
		rc.at = now
		close(rc.done)
	}
}

func (rc *whReceiver) firstAccepted() time.Time {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return rc.first
}

func (rc *whReceiver) doneAt() time.Time {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return rc.at
}

func (rc *whReceiver) counts() (distinct, dups, requests int64, lag benchLatency) {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return rc.distinct, rc.dups, rc.requests, rc.lag.summary()
}

// writeWebhooksReport writes the table, then the report as one JSON line.
func writeWebhooksReport(w io.Writer, res *whResult) error {
	var b strings.Builder
	fmt.Fprintf(&b, "herald bench webhooks — %s messages per phase over %d channels, %d publishers sending batches of %d\n",
		benchNum(float64(res.Messages)), res.Channels, res.Publishers, res.Batch)
	tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
	for _, p := range res.Phases {
		what := "no endpoint"
		switch {
		case p.Endpoints > 1:
			what = fmt.Sprintf("%d endpoints, batch size %d", p.Endpoints, p.BatchSize)
		case p.BatchSize > 0:
			what = fmt.Sprintf("1 endpoint, batch size %d", p.BatchSize)
		}
		if p.Queued {
			what += ", queued first"
		}
		fmt.Fprintf(tw, "%s\t%s\tpublish %s msgs/s (%.2f s)", p.Name, what, benchNum(p.PublishPerSec), p.PublishSeconds)
		if p.ServerCPUPerMsg > 0 {
			fmt.Fprintf(tw, ", server CPU %.1f µs/msg", p.ServerCPUPerMsg)
		}
		fmt.Fprintln(tw)
		switch {
		case p.Complete:
			fmt.Fprintf(tw, "\t\tdelivered %s events/s (all %s in %.2f s, %s requests, %d again)\n",
				benchNum(p.DeliveredPerSec), benchNum(float64(p.Received)), p.DeliverSeconds, benchNum(float64(p.Requests)), p.Duplicates)
			if p.Queued {
				fmt.Fprintf(tw, "\t\tdrained %s events/s (%.2f s from the first accepted request)\n", benchNum(p.DrainedPerSec), p.DrainSeconds)
			}
			fmt.Fprintf(tw, "\t\tlag publish→receipt %s\n", benchLatencyLine(p.Lag))
		case p.Endpoints == 1:
			fmt.Fprintf(tw, "\t\tINCOMPLETE: %s of %s events received\n", benchNum(float64(p.Received)), benchNum(float64(res.Messages)))
		case p.Endpoints > 0:
			fmt.Fprintf(tw, "\t\t(%s events received by the last acknowledgement)\n", benchNum(float64(p.Received)))
		}
	}
	if res.PublishRatio > 0 {
		fmt.Fprintf(tw, "ratio\tpublish with endpoints ÷ without\t%.3f\n", res.PublishRatio)
	}
	if res.PublishRatioUnbatched > 0 {
		fmt.Fprintf(tw, "ratio\tpublish with unbatched endpoints ÷ without\t%.3f\n", res.PublishRatioUnbatched)
	}
	if res.PublishRatioQueued > 0 {
		fmt.Fprintf(tw, "ratio\tpublish with endpoints, none delivering ÷ without\t%.3f\n", res.PublishRatioQueued)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	line, err := json.Marshal(res)
	if err != nil {
		return err
	}
	b.Write(line)
	b.WriteByte('\n')
	_, err = io.WriteString(w, b.String())
	return err
}
