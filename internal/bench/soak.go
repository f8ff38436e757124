package bench

// `herald bench soak`: the mixed workload — subscribers on SSE, WebSocket
// and long polling over many channels, publishers over the API and over
// WebSockets, and every interval a share of the streaming subscribers
// cut and resumed from their position — held at a fraction (half) of the
// rate the server was just measured to sustain, for a long time: more
// publishers than the probe's draw their messages from one schedule, so
// the rate holds exactly. Every interval it reads the server's memory,
// goroutines, open files and CPU (GET /api/metrics) and the delivery
// latency of that interval; at the end it fits a line to each over the
// settled part of the run and states the slope, so that a leak shows as
// a number, not an impression. Where the server splits its resident
// memory by kind, the anonymous part is what the verdict bounds: the
// file-backed part is mostly the store's memory-mapped files, which
// follow the data directory (charted beside it with --data-dir), not
// what the process holds. The accounting is the stream workloads': every
// acknowledged message delivered to its subscriber exactly once, in
// order, through the churn.

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/heraldrt/herald/internal/cli"
)

// soakOptions are the parsed flags of a soak.
type soakOptions struct {
	// stream is the workload held: channels, one subscriber each over
	// mixed transports, publishers over mixed means.
	stream benchOptions
	// fraction of the probed maximum to hold (when --rate is 0).
	fraction float64
	probe    time.Duration
	interval time.Duration
	// churn is the share of SSE and WebSocket subscribers cut each interval.
	churn float64
	// settle: samples before it are left out of the fitted slopes (caches
	// and buffers fill first).
	settle time.Duration
	// maxRise is the verdict's bound on how much the memory, goroutines
	// and open files may rise over the settled part of the run along
	// their fitted line, in percent of their mean.
	maxRise float64
	out     string
	// holdPublishers hold the pace (0: 4 × the probe's publishers).
	holdPublishers int
	// dataDir is the server's data directory when it is on this machine:
	// its size on disk is sampled and charted.
	dataDir string
}

func parseSoakFlags(args []string, getenv func(string) string, stderr io.Writer) (soakOptions, error) {
	fs := cli.NewFlagSet("soak", "bench soak [--duration D] [--rate N | --fraction F] [--channels C] [--out DIR] [flags]", stderr)
	o := soakOptions{}
	st := &o.stream
	var serverURL string
	fs.StringVar(&serverURL, "server", "", "server base URL on this machine (default $"+cli.EnvURL+", else "+cli.DefaultServerURL+"); loopback only")
	fs.StringVar(&st.token, "token", "", "API key (default $"+cli.EnvAPIKey+"): publishes, and reads GET /api/metrics")
	fs.IntVar(&st.channels, "channels", 1000, "channels, one subscriber each: 40 % SSE, 40 % WebSocket, 20 % long polling")
	fs.IntVar(&st.publishers, "publishers", 16, "concurrent publishers measuring the maximum (--probe), each waiting for its acknowledgement")
	fs.IntVar(&o.holdPublishers, "hold-publishers", 0, "publishers holding the pace, drawing their messages from one schedule, so that a slow acknowledgement delays no other message; 0 = 4 × --publishers")
	fs.StringVar(&st.publishVia, "publish-via", "mixed", "mixed (half POST /api/publish, half WebSocket publish ops), api or ws")
	fs.IntVar(&st.payload, "payload", 200, "approximate size of each message's data in bytes")
	fs.Float64Var(&st.rate, "rate", 0, "messages/s to hold; 0 = --fraction of the maximum measured first (--probe)")
	fs.Float64Var(&o.fraction, "fraction", 0.5, "share of the probed maximum to hold when --rate is 0")
	fs.DurationVar(&o.probe, "probe", 20*time.Second, "how long the maximum is measured (the same workload as fast as acknowledged) when --rate is 0")
	fs.DurationVar(&st.duration, "duration", time.Hour, "how long the load is held")
	fs.DurationVar(&o.interval, "interval", 10*time.Second, "how often the server is sampled (and subscribers are cut)")
	fs.Float64Var(&o.churn, "churn", 0.02, "share of the SSE and WebSocket subscribers cut each interval, to come back from their position")
	fs.DurationVar(&o.settle, "settle", 5*time.Minute, "samples before this are left out of the fitted slopes")
	fs.Float64Var(&o.maxRise, "max-rise", 10, "fail when the server's memory, goroutines or open files rise by more than this many percent of their mean over the settled part of the run (along the fitted line)")
	fs.StringVar(&o.out, "out", ".", "directory for soak.json (every sample) and soak.svg (the charts)")
	fs.StringVar(&o.dataDir, "data-dir", "", "the server's data directory, when it is on this machine: its size on disk is sampled and charted (not checked: it grows until retention and the store's garbage collection level it)")
	fs.BoolVar(&st.quiet, "quiet", false, "no line per sample on stderr")
	if err := cli.Parse(fs, args); err != nil {
		return o, err
	}
	if st.token == "" {
		st.token = getenv(cli.EnvAPIKey)
	}
	nodes, err := parseBenchServers(&serverURL, getenv)
	if err != nil {
		return o, err
	}
	st.workload, st.transport = "soak", "mixed"
	st.base, st.nodes = nodes[0], nodes
	st.batch, st.window = 1, 1
	st.warmup, st.drain = 5*time.Second, time.Minute
	st.connectConcurrency, st.connectTimeout = 128, 2*time.Minute
	st.channel = "bench.soak." + strconv.FormatInt(time.Now().UnixNano(), 36)
	st.flags = map[string]string{}
	fs.VisitAll(func(f *flag.Flag) {
		if f.Name != "token" {
			st.flags[f.Name] = f.Value.String()
		}
	})
	st.flags["server"] = serverURL
	return o, o.validate()
}

func (o *soakOptions) validate() error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if err := o.stream.validate(); err != nil {
		errs = append(errs, err)
	}
	if o.stream.rate == 0 {
		if !(o.fraction > 0 && o.fraction <= 1) {
			bad("--fraction %v: want more than 0 and at most 1", o.fraction)
		}
		if o.probe <= 0 {
			bad("--probe %s: want a positive duration (or give --rate)", o.probe)
		}
	}
	if o.interval < time.Second || o.interval > o.stream.duration {
		bad("--interval %s: want at least 1s and at most --duration (%s)", o.interval, o.stream.duration)
	}
	if !(o.churn >= 0 && o.churn <= 1) {
		bad("--churn %v: want 0 to 1", o.churn)
	}
	if o.settle < 0 || o.settle >= o.stream.duration {
		bad("--settle %s: want 0 or more and less than --duration (%s)", o.settle, o.stream.duration)
	}
	if !(o.maxRise > 0) {
		bad("--max-rise %v: want a positive percentage", o.maxRise)
	}
	if o.holdPublishers < 0 || o.holdPublishers > 10000 {
		bad("--hold-publishers %d: want 1 to 10000, or 0 for 4 × --publishers", o.holdPublishers)
	}
	if o.dataDir != "" {
		if fi, err := os.Stat(o.dataDir); err != nil || !fi.IsDir() {
			bad("--data-dir %q: want the server's data directory on this machine (%v)", o.dataDir, soakNotDir(fi, err))
		}
	}
	return errors.Join(errs...)
}

// soakNotDir says why --data-dir is not a directory.
func soakNotDir(fi os.FileInfo, err error) error {
	if err != nil {
		return err
	}
	return fmt.Errorf("%s is not a directory", fi.Name())
}

// soakSample is one interval's reading.
type soakSample struct {
	T      float64 `json:"t"` // seconds since the load reached its rate
	RSSMiB float64 `json:"rss_mib"`
	// The resident memory by kind, where the server reports it (Linux):
	// anonymous (heap, stacks, buffers: where a leak shows) and
	// file-backed (the store's memory-mapped files: it follows the data
	// directory, and the kernel may drop it under pressure).
	RSSAnonMiB float64 `json:"rss_anon_mib,omitempty"`
	RSSFileMiB float64 `json:"rss_file_mib,omitempty"`
	// DataDirMiB is the data directory's size on disk (--data-dir).
	DataDirMiB float64 `json:"data_dir_mib,omitempty"`
	HeapMiB    float64 `json:"heap_inuse_mib"`
	Goroutines float64 `json:"goroutines"`
	OpenFiles  float64 `json:"open_files"`
	// CPUPercent is the server's CPU time over the interval, in percent
	// of one core.
	CPUPercent      float64 `json:"cpu_percent"`
	AcksPerSec      float64 `json:"acks_per_sec"`
	DeliveredPerSec float64 `json:"delivered_per_sec"`
	// Delivery latency (publish to receipt) of the interval's messages.
	P50Ms float64 `json:"p50_ms"`
	P99Ms float64 `json:"p99_ms"`
	MaxMs float64 `json:"max_ms"`
	// Kicked is how many subscribers were cut at the end of the interval.
	Kicked int `json:"kicked"`
}

// soakTrend is a least-squares line through one quantity's settled
// samples.
type soakTrend struct {
	Metric  string  `json:"metric"`
	Unit    string  `json:"unit"`
	Mean    float64 `json:"mean"`
	Min     float64 `json:"min"`
	Max     float64 `json:"max"`
	PerHour float64 `json:"slope_per_hour"`
	// PercentPerHour is the slope in percent of the mean; RisePercent
	// what the line rises over the settled samples, in percent of the
	// mean (what the verdict bounds).
	PercentPerHour float64 `json:"slope_percent_per_hour"`
	RisePercent    float64 `json:"rise_percent"`
	// Checked: the verdict bounds this slope (memory, goroutines, files).
	Checked bool `json:"checked"`
}

// soakResult is what a soak reports.
type soakResult struct {
	MaxRate         float64      `json:"probed_max_rate,omitempty"`
	Rate            float64      `json:"rate"`
	DurationSeconds float64      `json:"duration_seconds"`
	IntervalSeconds float64      `json:"interval_seconds"`
	SettleSeconds   float64      `json:"settle_seconds"`
	Kicked          int64        `json:"kicked"`
	MaxRise         float64      `json:"max_rise_percent"`
	Trends          []soakTrend  `json:"trends"`
	Samples         []soakSample `json:"samples,omitempty"`
	Stream          *benchResult `json:"stream"`
	Probe           *benchResult `json:"probe,omitempty"`
	Rising          []string     `json:"rising,omitempty"`
	// MemoryKinds: the server reported its resident memory by kind, so
	// the verdict bounds the anonymous part rather than the total.
	MemoryKinds bool              `json:"memory_kinds"`
	DataDir     bool              `json:"data_dir"`
	Machine     benchMachine      `json:"machine"`
	Flags       map[string]string `json:"flags"`
}

// runSoak runs `herald bench soak`.
func runSoak(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	o, err := parseSoakFlags(args, getenv, stderr)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(o.out, 0o755); err != nil {
		return fmt.Errorf("--out: %w", err)
	}
	res := &soakResult{MaxRise: o.maxRise, Machine: benchDescribeMachine(), Flags: o.stream.flags,
		IntervalSeconds: o.interval.Seconds(), SettleSeconds: o.settle.Seconds(), DataDir: o.dataDir != ""}
	if o.stream.rate == 0 {
		probe := o.stream
		probe.duration, probe.warmup, probe.drain = o.probe, 2*time.Second, time.Minute
		probe.channel += ".probe"
		probe.quiet = true
		pr, err := newBenchRun(probe, stderr)
		if err != nil {
			return err
		}
		fmt.Fprintf(stderr, "bench soak: measuring the maximum for %s\n", o.probe)
		pres, err := pr.runStream(ctx)
		pr.close()
		if err != nil {
			return fmt.Errorf("probe: %w", err)
		}
		if err := pres.verdict(); err != nil {
			return fmt.Errorf("probe: %w", err)
		}
		pres.Timeline = nil
		res.Probe, res.MaxRate = pres, pres.AcksPerSec
		o.stream.rate = math.Round(o.fraction * pres.AcksPerSec)
		if o.stream.rate < 1 {
			return fmt.Errorf("probe: the server acknowledged %.1f messages/s; nothing to hold", pres.AcksPerSec)
		}
		fmt.Fprintf(stderr, "bench soak: maximum %s msgs/s; holding %s msgs/s for %s\n", benchNum(pres.AcksPerSec), benchNum(o.stream.rate), o.stream.duration)
	}
	res.Rate = o.stream.rate
	if o.holdPublishers == 0 {
		o.holdPublishers = 4 * o.stream.publishers
	}
	o.stream.publishers = o.holdPublishers
	r, err := newBenchRun(o.stream, stderr)
	if err != nil {
		return err
	}
	defer r.close()
	r.window = newBenchWindowHist()
	quiet := o.stream.quiet
	r.opts.quiet = true // a line per sample instead of one a second
	stream, err := r.soak(ctx, &o, res, func(s soakSample) {
		if !quiet {
			fmt.Fprintf(stderr, "bench soak %6.0fs  rss %7.1f MiB (anon %7.1f, file %7.1f)  heap %7.1f MiB  goroutines %6.0f  files %6.0f  data %7.1f MiB  cpu %5.1f%%  acks %8s/s  p50 %6.2f ms  p99 %7.2f ms\n",
				s.T, s.RSSMiB, s.RSSAnonMiB, s.RSSFileMiB, s.HeapMiB, s.Goroutines, s.OpenFiles, s.DataDirMiB, s.CPUPercent, benchNum(s.AcksPerSec), s.P50Ms, s.P99Ms)
		}
	})
	if stream == nil {
		return err
	}
	if ctx.Err() != nil {
		stream.Partial = true
	}
	stream.Timeline = nil
	res.Stream = stream
	res.Trends = soakTrends(soakQuantitiesOf(res), res.Samples, o.settle.Seconds())
	for _, t := range res.Trends {
		if t.Checked && t.RisePercent > o.maxRise {
			res.Rising = append(res.Rising, fmt.Sprintf("%s rises %.1f %% over the run (%+.1f %%/h)", t.Metric, t.RisePercent, t.PercentPerHour))
		}
	}
	if werr := writeSoakFiles(o.out, res); werr != nil {
		return werr
	}
	if werr := writeSoakReport(stdout, res); werr != nil {
		return werr
	}
	if err != nil {
		return err
	}
	if verr := stream.verdict(); verr != nil {
		return verr
	}
	if len(res.Rising) > 0 {
		return fmt.Errorf("not flat: %s", strings.Join(res.Rising, ", "))
	}
	return nil
}

// soak holds the stream workload for the duration, sampling every
// interval; it returns the stream's accounting.
func (r *benchRun) soak(ctx context.Context, o *soakOptions, res *soakResult, onSample func(soakSample)) (*benchResult, error) {
	stream := r.newResult()
	st, err := r.startStreams(ctx)
	if err != nil {
		return nil, err
	}
	var streaming []*benchSub
	for _, s := range r.subs {
		if s.transport != "poll" {
			streaming = append(streaming, s)
		}
	}
	perKick := int(math.Round(o.churn * float64(len(streaming))))
	nextKick := 0
	s0 := r.snapshot()
	r.latFrom.Store(s0.at.UnixNano())
	r.phase.Store(benchPhaseMeasure)
	r.window.take() // the warm-up's deliveries
	prev, err := r.readServer(ctx)
	if err != nil {
		st.stop(ctx, stream, nil)
		return nil, err
	}
	res.MemoryKinds = prev.kinds
	prevAt, prevD, prevA := time.Now(), r.delivered(), r.acks()
	start := prevAt
	tick := time.NewTicker(o.interval)
	defer tick.Stop()
	var sampleErr error
	for done := false; !done; {
		var now time.Time
		select {
		case <-ctx.Done():
			done = true
			now = time.Now()
		case now = <-tick.C:
		}
		if now.Sub(start) >= o.stream.duration-o.interval/2 {
			done = true
		}
		cur, err := r.readServer(ctx)
		if err != nil {
			if ctx.Err() == nil {
				sampleErr = err
			}
			break
		}
		var dataDir float64
		if o.dataDir != "" {
			n, err := diskUsage(o.dataDir)
			if err != nil {
				sampleErr = fmt.Errorf("--data-dir: %w", err)
				break
			}
			dataDir = round1(float64(n) / (1 << 20))
		}
		secs := now.Sub(prevAt).Seconds()
		d, a := r.delivered(), r.acks()
		lat := r.window.take()
		ms := func(ns int64) float64 { return math.Round(float64(ns)/1e4) / 100 }
		smp := soakSample{T: math.Round(now.Sub(start).Seconds()), RSSMiB: round1(cur.rss / (1 << 20)), HeapMiB: round1(cur.heap / (1 << 20)),
			Goroutines: cur.goroutines, OpenFiles: cur.files, CPUPercent: round1((cur.cpu - prev.cpu) / secs * 100),
			AcksPerSec: math.Round(float64(a-prevA) / secs), DeliveredPerSec: math.Round(float64(d-prevD) / secs),
			P50Ms: ms(lat.quantile(0.5)), P99Ms: ms(lat.quantile(0.99)), MaxMs: ms(lat.max),
			RSSAnonMiB: round1(cur.anon / (1 << 20)), RSSFileMiB: round1(cur.file / (1 << 20)), DataDirMiB: dataDir}
		if !done && len(streaming) > 0 {
			for range perKick {
				if streaming[nextKick%len(streaming)].kick() {
					smp.Kicked++
				}
				nextKick++
			}
			res.Kicked += int64(smp.Kicked)
		}
		res.Samples = append(res.Samples, smp)
		onSample(smp)
		prev, prevAt, prevD, prevA = cur, now, d, a
	}
	res.DurationSeconds = round3(time.Since(start).Seconds())
	s1 := r.snapshot()
	r.latTo.Store(s1.at.UnixNano())
	st.stop(ctx, stream, nil)
	r.fill(stream, s0, s1)
	return stream, sampleErr
}

func round1(v float64) float64 { return math.Round(v*10) / 10 }

// soakServer is one reading of the server's own metrics; anon and file
// are its resident memory by kind, when kinds (Linux).
type soakServer struct {
	rss, heap, goroutines, files, cpu float64
	anon, file                        float64
	kinds                             bool
}

// soakMemoryKinds is the metric of the resident memory by kind (label
// kind: anon, file, shmem), which the server serves on Linux.
const soakMemoryKinds = "herald_process_resident_memory_bytes"

// soakMetrics names the metrics a sample reads, all of a process.
var soakMetrics = [...]string{"process_resident_memory_bytes", "go_memstats_heap_inuse_bytes", "go_goroutines", "process_open_fds", "process_cpu_seconds_total"}

// readServer reads the server's memory, goroutines, open files and CPU
// time from GET /api/metrics.
func (r *benchRun) readServer(ctx context.Context) (soakServer, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, r.opts.base.JoinPath("api/metrics").String(), nil)
	if err != nil {
		return soakServer{}, err
	}
	setAuth(req.Header, r.opts.token)
	resp, err := r.pubHC.Do(req)
	if err != nil {
		return soakServer{}, fmt.Errorf("GET /api/metrics: %w", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return soakServer{}, fmt.Errorf("GET /api/metrics: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		return soakServer{}, fmt.Errorf("GET /api/metrics: %s: %.300s", resp.Status, body)
	}
	return parseSoakMetrics(body)
}

// parseSoakMetrics takes the values soakMetrics names out of a GET
// /api/metrics answer.
func parseSoakMetrics(body []byte) (soakServer, error) {
	var fams map[string]struct {
		Samples []struct {
			Labels map[string]string `json:"labels"`
			Value  *float64          `json:"value"`
		} `json:"samples"`
	}
	if err := json.Unmarshal(body, &fams); err != nil {
		return soakServer{}, fmt.Errorf("GET /api/metrics: %w", err)
	}
	var v [len(soakMetrics)]float64
	var missing []string
	for i, name := range soakMetrics {
		f, ok := fams[name]
		if !ok || len(f.Samples) == 0 || f.Samples[0].Value == nil {
			missing = append(missing, name)
			continue
		}
		v[i] = *f.Samples[0].Value
	}
	if len(missing) > 0 {
		return soakServer{}, fmt.Errorf("GET /api/metrics has no %s (the process metrics are read on Linux only)", strings.Join(missing, ", "))
	}
	s := soakServer{rss: v[0], heap: v[1], goroutines: v[2], files: v[3], cpu: v[4]}
	var anon, file bool
	for _, smp := range fams[soakMemoryKinds].Samples {
		if smp.Value == nil {
			continue
		}
		switch smp.Labels["kind"] {
		case "anon":
			s.anon, anon = *smp.Value, true
		case "file":
			s.file, file = *smp.Value, true
		}
	}
	s.kinds = anon && file
	return s, nil
}

// soakQuantity is one charted and fitted quantity of the samples;
// checked ones are bounded by the verdict.
type soakQuantity struct {
	name, unit string
	checked    bool
	get        func(soakSample) float64
}

// soakQuantitiesOf returns the quantities of a run. Where the server
// reports its resident memory by kind, the verdict bounds the anonymous
// part, and the total and the file-backed part (which follows the data
// directory) are charted beside it.
func soakQuantitiesOf(res *soakResult) []soakQuantity {
	qs := []soakQuantity{{"rss", "MiB", !res.MemoryKinds, func(s soakSample) float64 { return s.RSSMiB }}}
	if res.MemoryKinds {
		qs = append(qs,
			soakQuantity{"rss anonymous", "MiB", true, func(s soakSample) float64 { return s.RSSAnonMiB }},
			soakQuantity{"rss file-backed", "MiB", false, func(s soakSample) float64 { return s.RSSFileMiB }})
	}
	if res.DataDir {
		qs = append(qs, soakQuantity{"data directory", "MiB", false, func(s soakSample) float64 { return s.DataDirMiB }})
	}
	return append(qs, soakQuantities...)
}

// soakQuantities are the charted and fitted quantities of every run
// after the memory (soakQuantitiesOf).
var soakQuantities = []soakQuantity{
	{"heap in use", "MiB", true, func(s soakSample) float64 { return s.HeapMiB }},
	{"goroutines", "count", true, func(s soakSample) float64 { return s.Goroutines }},
	{"open files", "count", true, func(s soakSample) float64 { return s.OpenFiles }},
	{"cpu", "% of a core", false, func(s soakSample) float64 { return s.CPUPercent }},
	{"latency p50", "ms", false, func(s soakSample) float64 { return s.P50Ms }},
	{"latency p99", "ms", false, func(s soakSample) float64 { return s.P99Ms }},
	{"acks", "msgs/s", false, func(s soakSample) float64 { return s.AcksPerSec }},
}

// soakTrends fits a line to each quantity over the samples from settle
// seconds on (all of them when fewer than three are that late).
func soakTrends(qs []soakQuantity, samples []soakSample, settle float64) []soakTrend {
	var use []soakSample
	for _, s := range samples {
		if s.T >= settle {
			use = append(use, s)
		}
	}
	if len(use) < 3 {
		use = samples
	}
	span := 0.0 // hours
	if len(use) > 1 {
		span = (use[len(use)-1].T - use[0].T) / 3600
	}
	var out []soakTrend
	for _, q := range qs {
		xs := make([]float64, len(use))
		ys := make([]float64, len(use))
		for i, s := range use {
			xs[i], ys[i] = s.T/3600, q.get(s)
		}
		t := soakTrend{Metric: q.name, Unit: q.unit, Checked: q.checked}
		t.PerHour, t.Mean, t.Min, t.Max = soakFit(xs, ys)
		if t.Mean != 0 {
			t.PercentPerHour = math.Round(t.PerHour/t.Mean*1000) / 10
			t.RisePercent = math.Round(t.PerHour*span/t.Mean*1000) / 10
		}
		t.PerHour = math.Round(t.PerHour*100) / 100
		t.Mean = math.Round(t.Mean*100) / 100
		out = append(out, t)
	}
	return out
}

// soakFit returns the least-squares slope of ys over xs, and the mean,
// minimum and maximum of ys (zeros when there are none; slope 0 when xs
// do not vary).
func soakFit(xs, ys []float64) (slope, mean, lo, hi float64) {
	n := float64(len(xs))
	if n == 0 {
		return 0, 0, 0, 0
	}
	var mx, my float64
	lo, hi = math.Inf(1), math.Inf(-1)
	for i := range xs {
		mx += xs[i]
		my += ys[i]
		lo, hi = math.Min(lo, ys[i]), math.Max(hi, ys[i])
	}
	mx, my = mx/n, my/n
	var sxy, sxx float64
	for i := range xs {
		sxy += (xs[i] - mx) * (ys[i] - my)
		sxx += (xs[i] - mx) * (xs[i] - mx)
	}
	if sxx == 0 {
		return 0, my, lo, hi
	}
	return sxy / sxx, my, lo, hi
}

// writeSoakReport writes the table, then one JSON line (without the
// samples, which are in soak.json).
func writeSoakReport(w io.Writer, res *soakResult) error {
	var b strings.Builder
	tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
	st := res.Stream
	fmt.Fprintf(&b, "herald bench soak — %s held %s, sampled every %s\n", benchNum(res.Rate)+" msgs/s",
		time.Duration(res.DurationSeconds*float64(time.Second)).Round(time.Second), time.Duration(res.IntervalSeconds*float64(time.Second)))
	if res.MaxRate > 0 {
		fmt.Fprintf(tw, "probed maximum\t%s msgs/s\n", benchNum(res.MaxRate))
	}
	fmt.Fprintf(tw, "load\t%d channels, %d subscribers (sse/ws/poll), %d publishers (%s)\n", st.Channels, st.Subscribers, st.Publishers, st.PublishVia)
	fmt.Fprintf(tw, "delivered\t%d messages, latency %s\n", st.Delivered, benchLatencyLine(st.Latency))
	fmt.Fprintf(tw, "acknowledged\t%d publishes\n", st.Acks)
	fmt.Fprintf(tw, "exactly once\tlost %d, duplicated %d, out of order %d, errors %d\n", st.Lost, st.Duplicated, st.OutOfOrder, st.Errors)
	fmt.Fprintf(tw, "churn\t%d subscribers cut and resumed; %d reconnects in all\n", res.Kicked, st.Reconnects)
	fmt.Fprintf(tw, "slopes\tover the samples after %s\n", time.Duration(res.SettleSeconds*float64(time.Second)))
	for _, t := range res.Trends {
		mark := ""
		if t.Checked {
			mark = " (checked)"
			if t.RisePercent > res.MaxRise {
				mark = " RISING"
			}
		}
		fmt.Fprintf(tw, "  %s\tmean %s%s, %s–%s; slope %+.2f%s per hour (%+.1f %%/h), %+.1f %% over the run%s\n", t.Metric, soakNum(t.Mean), soakUnit(t.Unit),
			soakNum(t.Min), soakNum(t.Max), t.PerHour, soakUnit(t.Unit), t.PercentPerHour, t.RisePercent, mark)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	line := *res
	line.Samples = nil
	j, err := json.Marshal(&line)
	if err != nil {
		return err
	}
	b.Write(j)
	b.WriteByte('\n')
	_, err = io.WriteString(w, b.String())
	return err
}

// soakUnit is a unit as it follows a number.
func soakUnit(u string) string {
	if u == "" || strings.HasPrefix(u, "/") {
		return u
	}
	return " " + u
}

func soakNum(v float64) string {
	if v == math.Trunc(v) && math.Abs(v) < 1e15 {
		return benchNum(v)
	}
	return strconv.FormatFloat(v, 'f', 2, 64)
}

// writeSoakFiles writes soak.json (every sample) and soak.svg.
func writeSoakFiles(dir string, res *soakResult) error {
	j, err := json.MarshalIndent(res, "", "  ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "soak.json"), append(j, '\n'), 0o644); err != nil {
		return fmt.Errorf("--out: %w", err)
	}
	var b strings.Builder
	soakSVG(&b, res)
	if err := os.WriteFile(filepath.Join(dir, "soak.svg"), []byte(b.String()), 0o644); err != nil {
		return fmt.Errorf("--out: %w", err)
	}
	return nil
}

// soakSVG draws one panel per quantity, two columns: the samples, the
// fitted line over the settled part (dashed), and the slope in the title.
func soakSVG(b *strings.Builder, res *soakResult) {
	const cols, pw, ph, left, top, gapX, gapY = 2, 400.0, 150.0, 56.0, 30.0, 40.0, 62.0
	qs := soakQuantitiesOf(res)
	rows := (len(qs) + cols - 1) / cols
	W := left + cols*pw + (cols-1)*(gapX+left) + 20
	H := 40 + float64(rows)*(top+ph+gapY)
	fmt.Fprintf(b, `<svg xmlns="http://www.w3.org/2000/svg" width="%.0f" height="%.0f" viewBox="0 0 %.0f %.0f" font-family="sans-serif" font-size="11">`+"\n", W, H, W, H)
	fmt.Fprintf(b, `<rect width="100%%" height="100%%" fill="#fff"/>`+"\n")
	fmt.Fprintf(b, `<text x="%.0f" y="20" font-size="13">herald bench soak: %s msgs/s for %s, a sample every %s; dashed: least-squares line after %s</text>`+"\n",
		left, benchNum(res.Rate), time.Duration(res.DurationSeconds*float64(time.Second)).Round(time.Second),
		time.Duration(res.IntervalSeconds*float64(time.Second)), time.Duration(res.SettleSeconds*float64(time.Second)))
	tmax := 1.0
	if n := len(res.Samples); n > 0 {
		tmax = math.Max(res.Samples[n-1].T, 1)
	}
	trends := map[string]soakTrend{}
	for _, t := range res.Trends {
		trends[t.Metric] = t
	}
	for qi, q := range qs {
		x0 := left + float64(qi%cols)*(pw+gapX+left)
		y0 := 40 + float64(qi/cols)*(top+ph+gapY) + top
		ymax := 0.0
		for _, s := range res.Samples {
			ymax = math.Max(ymax, q.get(s))
		}
		ymax = soakNiceCeil(ymax * 1.1)
		xOf := func(t float64) float64 { return x0 + t/tmax*pw }
		yOf := func(v float64) float64 { return y0 + ph - v/ymax*ph }
		t := trends[q.name]
		fmt.Fprintf(b, `<text x="%.1f" y="%.1f" font-size="12">%s (%s) — slope %+.1f %%/h, %+.1f %% over the run</text>`+"\n", x0, y0-8, q.name, q.unit, t.PercentPerHour, t.RisePercent)
		fmt.Fprintf(b, `<rect x="%.1f" y="%.1f" width="%.1f" height="%.1f" fill="none" stroke="#ccc"/>`+"\n", x0, y0, pw, ph)
		fmt.Fprintf(b, `<text x="%.1f" y="%.1f" text-anchor="end">%s</text>`+"\n", x0-4, y0+8, soakNum(ymax))
		fmt.Fprintf(b, `<text x="%.1f" y="%.1f" text-anchor="end">0</text>`+"\n", x0-4, y0+ph)
		for _, m := range soakTicks(tmax) {
			fmt.Fprintf(b, `<text x="%.1f" y="%.1f" text-anchor="middle">%s</text>`+"\n", xOf(m), y0+ph+14, soakMinutes(m))
		}
		if len(res.Samples) == 0 {
			continue
		}
		pts := make([]string, 0, len(res.Samples))
		for _, s := range res.Samples {
			pts = append(pts, fmt.Sprintf("%.1f,%.1f", xOf(s.T), yOf(q.get(s))))
		}
		fmt.Fprintf(b, `<polyline points="%s" fill="none" stroke="#4a7fc1" stroke-width="1.5"/>`+"\n", strings.Join(pts, " "))
		// The fitted line through the mean of the settled samples.
		from := math.Min(res.SettleSeconds, tmax)
		var mt float64
		var n int
		for _, s := range res.Samples {
			if s.T >= from {
				mt += s.T
				n++
			}
		}
		if n > 0 {
			mt /= float64(n)
			at := func(ts float64) float64 { return t.Mean + t.PerHour*(ts-mt)/3600 }
			fmt.Fprintf(b, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="#d2691e" stroke-width="1.5" stroke-dasharray="5,3"/>`+"\n",
				xOf(from), yOf(at(from)), xOf(tmax), yOf(at(tmax)))
		}
	}
	b.WriteString("</svg>\n")
}

// soakNiceCeil rounds v up to 1, 2 or 5 times a power of ten.
func soakNiceCeil(v float64) float64 {
	if v <= 0 {
		return 1
	}
	p := math.Pow(10, math.Floor(math.Log10(v)))
	for _, m := range []float64{1, 2, 5, 10} {
		if v <= m*p {
			return m * p
		}
	}
	return 10 * p
}

// soakTicks returns about six round times (seconds) from 0 to tmax.
func soakTicks(tmax float64) []float64 {
	step := 1.0
	for _, s := range []float64{1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 14400} {
		step = s
		if tmax/s <= 6 {
			break
		}
	}
	var out []float64
	for t := 0.0; t <= tmax+1e-9; t += step {
		out = append(out, t)
	}
	return out
}

// soakMinutes labels a time axis tick: seconds under two minutes, then
// minutes.
func soakMinutes(t float64) string {
	if t < 120 {
		return strconv.FormatFloat(t, 'f', 0, 64) + "s"
	}
	return strconv.FormatFloat(t/60, 'f', 0, 64) + "m"
}

// diskUsage is the space the files under dir take on disk (what du
// says: the store's files are sparse, so their sizes overstate it).
func diskUsage(dir string) (int64, error) {
	var n int64
	err := filepath.WalkDir(dir, func(path string, d os.DirEntry, err error) error {
		if err != nil {
			if path != dir && errors.Is(err, os.ErrNotExist) {
				return nil // removed while walked (a compaction, a GC)
			}
			return err
		}
		if d.IsDir() {
			return nil
		}
		fi, err := d.Info()
		if errors.Is(err, os.ErrNotExist) {
			return nil
		}
		if err != nil {
			return err
		}
		n += allocatedBytes(fi)
		return nil
	})
	return n, err
}
