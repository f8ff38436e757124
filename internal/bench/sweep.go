package bench

// `herald bench sweep`: the fan-out, channels and idle workloads run at
// growing sizes against one server, so that cost per unit of work can be
// read as work grows — per-delivery CPU as subscribers per channel and as
// channels grow, per-connection memory and idle CPU as connections grow —
// with SVG charts and the memory extrapolated to a million connections.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/heraldrt/herald/internal/cli"
)

// sweepPoint is one run of a sweep.
type sweepPoint struct {
	Series string `json:"series"` // subscribers, channels or connections
	X      int    `json:"x"`
	// Streams (subscribers, channels).
	DeliveredPerSec float64 `json:"delivered_per_sec,omitempty"`
	CPUPerMsgUS     float64 `json:"cpu_us_per_delivered,omitempty"`
	// MsgsPerWrite is how many deliveries one write of the server carried.
	MsgsPerWrite float64 `json:"delivered_per_write,omitempty"`
	// Connections: the server's RSS growth per connection since before
	// the first, its RSS, and its CPU while they idle (% of one core).
	KiBPerConn float64 `json:"kib_per_connection,omitempty"`
	RSSKiB     int64   `json:"server_rss_kib,omitempty"`
	IdleCPUPct float64 `json:"idle_cpu_percent,omitempty"`
	Bad        int64   `json:"lost_duplicated_out_of_order"`
	Errors     int64   `json:"errors"`
	// Reconnected counts subscribers that lost their connection.
	Reconnected int64 `json:"reconnects"`
}

// sweepResult is what a sweep reports: its points and the memory model
// fitted to the connections series.
type sweepResult struct {
	Points []sweepPoint `json:"points"`
	// RSS = BaseMiB + KiBPerConn × connections, least squares over the
	// connections series; Million is its value at 1,000,000 connections.
	Fit *sweepFit `json:"memory_fit,omitempty"`
}

type sweepFit struct {
	BaseMiB    float64 `json:"base_mib"`
	KiBPerConn float64 `json:"kib_per_connection"`
	MillionGiB float64 `json:"gib_at_1000000_connections"`
}

type sweepOptions struct {
	common      []string // flags every run gets
	subscribers []int
	channels    []int
	connections []int
	duration    time.Duration
	warmup      time.Duration
	hold        time.Duration
	out         string
}

func parseSweepFlags(args []string, getenv func(string) string, stderr io.Writer) (sweepOptions, error) {
	fs := cli.NewFlagSet("sweep", "bench sweep --server-pid PID [--subscribers LIST] [--channels LIST] [--connections LIST] [--out DIR] [flags]", stderr)
	var o sweepOptions
	var serverURL, token, transport, subs, chans, conns string
	var pid, publishers int
	fs.StringVar(&serverURL, "server", "", "server base URL on this machine (default $"+cli.EnvURL+", else "+cli.DefaultServerURL+"); loopback only")
	fs.StringVar(&token, "token", "", "API key (default $"+cli.EnvAPIKey+")")
	fs.IntVar(&pid, "server-pid", 0, "the server's process id: its CPU and memory are what the sweep measures (/proc, Linux)")
	fs.StringVar(&transport, "transport", "sse", "subscriber transport: sse, ws, poll, or mixed (40 % sse, 40 % ws, 20 % poll)")
	fs.IntVar(&publishers, "publishers", 16, "concurrent publishers in the subscribers and channels series")
	fs.StringVar(&subs, "subscribers", "10,100,1000,10000", "subscribers of one channel, one fan-out run each (empty: skip the series)")
	fs.StringVar(&chans, "channels", "10,100,1000,10000", "channels with one subscriber each, one channels run each (empty: skip)")
	fs.StringVar(&conns, "connections", "1000,5000,10000,19000", "idle subscribed connections, one idle run each (empty: skip)")
	fs.DurationVar(&o.duration, "duration", 5*time.Second, "the measured window of each subscribers and channels run")
	fs.DurationVar(&o.warmup, "warmup", time.Second, "publishing before each measured window, left out of the figures")
	fs.DurationVar(&o.hold, "hold", 10*time.Second, "how long each connections run holds its connections (idle CPU is measured over it)")
	fs.StringVar(&o.out, "out", ".", "directory for sweep.json and the charts sweep-subscribers.svg, sweep-channels.svg, sweep-connections.svg")
	if err := cli.Parse(fs, args); err != nil {
		return o, err
	}
	var errs []error
	for _, l := range []struct {
		name string
		s    string
		dst  *[]int
	}{{"subscribers", subs, &o.subscribers}, {"channels", chans, &o.channels}, {"connections", conns, &o.connections}} {
		v, err := parseSweepList(l.s)
		if err != nil {
			errs = append(errs, fmt.Errorf("--%s %q: %w", l.name, l.s, err))
		}
		*l.dst = v
	}
	if pid <= 0 {
		errs = append(errs, errors.New("--server-pid is required: the sweep measures the server's CPU and memory"))
	}
	if transport == "mixed" && (len(o.subscribers) > 0 || len(o.channels) > 0) {
		errs = append(errs, errors.New("--transport mixed is for the connections series only: pass --subscribers '' --channels ''"))
	}
	if o.duration <= 0 || o.warmup < 0 || o.hold < 0 {
		errs = append(errs, errors.New("--duration must be positive, --warmup and --hold not negative"))
	}
	if len(errs) > 0 {
		return o, errors.Join(errs...)
	}
	if token == "" {
		token = getenv(cli.EnvAPIKey)
	}
	o.common = []string{"--quiet", "--server-pid", strconv.Itoa(pid), "--transport", transport, "--token", token}
	if serverURL != "" {
		o.common = append(o.common, "--server", serverURL)
	}
	o.common = append(o.common, "--publishers", strconv.Itoa(publishers))
	return o, nil
}

// parseSweepList parses "10,100,1000": positive, increasing.
func parseSweepList(s string) ([]int, error) {
	var out []int
	for f := range strings.SplitSeq(s, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		n, err := strconv.Atoi(f)
		if err != nil || n < 1 {
			return nil, fmt.Errorf("%q is not a positive number", f)
		}
		if len(out) > 0 && n <= out[len(out)-1] {
			return nil, fmt.Errorf("sizes must grow (%d after %d)", n, out[len(out)-1])
		}
		out = append(out, n)
	}
	return out, nil
}

// runSweep runs `herald bench sweep`.
func runSweep(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	o, err := parseSweepFlags(args, getenv, stderr)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(o.out, 0o755); err != nil {
		return fmt.Errorf("--out: %w", err)
	}
	var res sweepResult
	// Connections first, on the server as it started: one run that grows
	// its connections through the sizes, measuring at each, so that what
	// a point measures is never memory an earlier point freed.
	if n := len(o.connections); n > 0 {
		args := append(append([]string{}, o.common...), "--connections", strconv.Itoa(o.connections[n-1]),
			"--hold", o.hold.String(), "--channels", strconv.Itoa(min(o.connections[0], 100)))
		args = slicesWithout(args, "--publishers")
		fmt.Fprintf(stderr, "bench sweep: connections %v\n", o.connections)
		pts, err := sweepRun(ctx, "idle", args, o.connections, getenv, stderr)
		if err != nil {
			return fmt.Errorf("connections: %w", err)
		}
		res.Points = append(res.Points, pts...)
	}
	dur := []string{"--duration", o.duration.String(), "--warmup", o.warmup.String()}
	for _, s := range []struct {
		series, workload, flag string
		sizes                  []int
	}{
		{"subscribers", "fanout", "--subscribers", o.subscribers},
		{"channels", "channels", "--channels", o.channels},
	} {
		for _, n := range s.sizes {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			args := append(append([]string{}, o.common...), s.flag, strconv.Itoa(n))
			args = append(args, dur...)
			fmt.Fprintf(stderr, "bench sweep: %s %d\n", s.series, n)
			pts, err := sweepRun(ctx, s.workload, args, nil, getenv, stderr)
			if err != nil {
				return fmt.Errorf("%s %d: %w", s.series, n, err)
			}
			pts[0].Series, pts[0].X = s.series, n
			res.Points = append(res.Points, pts...)
		}
	}
	res.Fit = fitMemory(res.Points)
	if err := writeSweep(o.out, &res); err != nil {
		return err
	}
	writeSweepTable(stdout, &res)
	for _, p := range res.Points {
		if p.Bad > 0 || p.Errors > 0 {
			return fmt.Errorf("%s %d: %d messages lost, duplicated or out of order, %d errors", p.Series, p.X, p.Bad, p.Errors)
		}
	}
	return nil
}

// slicesWithout drops flag name and its value from args.
func slicesWithout(args []string, name string) []string {
	out := args[:0:0]
	for i := 0; i < len(args); i++ {
		if args[i] == name {
			i++
			continue
		}
		out = append(out, args[i])
	}
	return out
}

// sweepRun runs one workload and keeps the figures the sweep charts: one
// point, or for idle with steps, a connections point per step.
func sweepRun(ctx context.Context, workload string, args []string, steps []int, getenv func(string) string, stderr io.Writer) ([]sweepPoint, error) {
	opts, err := parseBenchFlags(workload, args, getenv, stderr)
	if err != nil {
		return nil, err
	}
	opts.steps = steps
	r, err := newBenchRun(opts, stderr)
	if err != nil {
		return nil, err
	}
	defer r.close()
	res, err := r.run(ctx)
	if err != nil {
		return nil, err
	}
	p := sweepPoint{
		DeliveredPerSec: res.DeliveredPerSec,
		Bad:             res.Lost + res.Duplicated + res.OutOfOrder,
		Errors:          res.Errors,
		Reconnected:     res.Reconnects,
	}
	if res.Server != nil {
		p.CPUPerMsgUS = res.Server.CPUPerMsgUS
		p.MsgsPerWrite = res.Server.MsgsPerWrite
	}
	if res.Idle == nil {
		return []sweepPoint{p}, nil
	}
	var pts []sweepPoint
	for _, st := range res.Idle.Steps {
		q := p
		q.Series, q.X = "connections", st.Connections
		q.KiBPerConn, q.RSSKiB, q.IdleCPUPct = st.PerConnKiB, st.RSSKiB, st.IdleCPUPercent
		pts = append(pts, q)
	}
	return pts, nil
}

// fitMemory fits the server's RSS to base + perConn × connections over
// the connections series (at least two points).
func fitMemory(points []sweepPoint) *sweepFit {
	var xs, ys []float64
	for _, p := range points {
		if p.Series == "connections" && p.RSSKiB > 0 {
			xs = append(xs, float64(p.X))
			ys = append(ys, float64(p.RSSKiB))
		}
	}
	if len(xs) < 2 {
		return nil
	}
	slope, icept := leastSquares(xs, ys)
	return &sweepFit{
		BaseMiB:    math.Round(icept/1024*10) / 10,
		KiBPerConn: math.Round(slope*100) / 100,
		MillionGiB: math.Round((icept+slope*1e6)/(1<<20)*100) / 100,
	}
}

// leastSquares returns the slope and intercept of the line through xs, ys.
func leastSquares(xs, ys []float64) (slope, intercept float64) {
	n := float64(len(xs))
	var sx, sy, sxx, sxy float64
	for i := range xs {
		sx += xs[i]
		sy += ys[i]
		sxx += xs[i] * xs[i]
		sxy += xs[i] * ys[i]
	}
	d := n*sxx - sx*sx
	if d == 0 {
		return 0, sy / n
	}
	slope = (n*sxy - sx*sy) / d
	return slope, (sy - slope*sx) / n
}

func writeSweep(dir string, res *sweepResult) error {
	b, err := json.MarshalIndent(res, "", "  ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "sweep.json"), append(b, '\n'), 0o644); err != nil {
		return fmt.Errorf("--out: %w", err)
	}
	for _, c := range []struct {
		series, file, xLabel string
		y                    func(sweepPoint) float64
		yLabel               string
		y2                   func(sweepPoint) float64
		y2Label              string
	}{
		{"subscribers", "sweep-subscribers.svg", "subscribers of one channel",
			func(p sweepPoint) float64 { return p.CPUPerMsgUS }, "server CPU µs per delivery",
			func(p sweepPoint) float64 { return p.MsgsPerWrite }, "deliveries per write"},
		{"channels", "sweep-channels.svg", "channels, one subscriber each",
			func(p sweepPoint) float64 { return p.CPUPerMsgUS }, "server CPU µs per delivery",
			func(p sweepPoint) float64 { return p.MsgsPerWrite }, "deliveries per write"},
		{"connections", "sweep-connections.svg", "idle subscribed connections",
			func(p sweepPoint) float64 { return p.KiBPerConn }, "server KiB per connection",
			func(p sweepPoint) float64 { return p.IdleCPUPct }, "idle CPU %"},
	} {
		var pts []sweepPoint
		for _, p := range res.Points {
			if p.Series == c.series {
				pts = append(pts, p)
			}
		}
		if len(pts) == 0 {
			continue
		}
		var b strings.Builder
		sweepSVG(&b, pts, c.xLabel, c.y, c.yLabel, c.y2, c.y2Label)
		if err := os.WriteFile(filepath.Join(dir, c.file), []byte(b.String()), 0o644); err != nil {
			return fmt.Errorf("--out: %w", err)
		}
	}
	return nil
}

// sweepSVG draws y (left axis, blue) and optionally y2 (right axis,
// orange) over x on a log scale, each point labelled with its value.
func sweepSVG(b *strings.Builder, pts []sweepPoint, xLabel string, y func(sweepPoint) float64, yLabel string, y2 func(sweepPoint) float64, y2Label string) {
	W, H := 640.0, 300.0
	x0, y0, pw, ph := 60.0, 24.0, 520.0, 220.0
	lo, hi := math.Log10(float64(pts[0].X)), math.Log10(float64(pts[len(pts)-1].X))
	if hi == lo {
		lo, hi = lo-0.5, hi+0.5
	}
	xOf := func(x int) float64 { return x0 + (math.Log10(float64(x))-lo)/(hi-lo)*pw }
	top := func(f func(sweepPoint) float64) float64 {
		m := 0.0
		for _, p := range pts {
			m = math.Max(m, f(p))
		}
		return math.Max(m*1.25, 1e-9) // room for the labels; the axis starts at 0
	}
	fmt.Fprintf(b, `<svg xmlns="http://www.w3.org/2000/svg" width="%.0f" height="%.0f" viewBox="0 0 %.0f %.0f" font-family="sans-serif" font-size="11">`+"\n", W, H, W, H)
	fmt.Fprintf(b, `<rect width="%.0f" height="%.0f" fill="#fafafa"/>`+"\n", W, H)
	fmt.Fprintf(b, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="#888"/>`+"\n", x0, y0+ph, x0+pw, y0+ph)
	fmt.Fprintf(b, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="#888"/>`+"\n", x0, y0, x0, y0+ph)
	series := func(f func(sweepPoint) float64, color string, anchorDy float64) {
		t := top(f)
		var line []string
		for _, p := range pts {
			px, py := xOf(p.X), y0+ph-f(p)/t*ph
			line = append(line, fmt.Sprintf("%.1f,%.1f", px, py))
			fmt.Fprintf(b, `<circle cx="%.1f" cy="%.1f" r="3" fill="%s"/>`+"\n", px, py, color)
			fmt.Fprintf(b, `<text x="%.1f" y="%.1f" text-anchor="middle" fill="%s">%s</text>`+"\n", px, py+anchorDy, color, sweepNum(f(p)))
		}
		fmt.Fprintf(b, `<polyline points="%s" fill="none" stroke="%s" stroke-width="2"/>`+"\n", strings.Join(line, " "), color)
	}
	series(y, "#4a7fc1", -7)
	legend := fmt.Sprintf(`<tspan fill="#4a7fc1">%s</tspan>`, yLabel)
	if y2 != nil {
		series(y2, "#d2691e", 15)
		legend += fmt.Sprintf(` · <tspan fill="#d2691e">%s</tspan>`, y2Label)
	}
	for _, p := range pts {
		fmt.Fprintf(b, `<text x="%.1f" y="%.1f" text-anchor="middle" fill="#444">%s</text>`+"\n", xOf(p.X), y0+ph+15, benchNum(float64(p.X)))
	}
	fmt.Fprintf(b, `<text x="%.1f" y="%.1f" text-anchor="middle" fill="#444">%s (log scale)</text>`+"\n", x0+pw/2, y0+ph+32, xLabel)
	fmt.Fprintf(b, `<text x="%.1f" y="%.1f" text-anchor="middle" fill="#444">%s; axes start at 0</text>`+"\n", x0+pw/2, y0-8, legend)
	b.WriteString("</svg>\n")
}

// sweepNum writes a figure with two or three significant digits.
func sweepNum(v float64) string {
	switch {
	case v >= 100:
		return strconv.FormatFloat(v, 'f', 0, 64)
	case v >= 10:
		return strconv.FormatFloat(v, 'f', 1, 64)
	default:
		return strconv.FormatFloat(v, 'f', 2, 64)
	}
}

func writeSweepTable(w io.Writer, res *sweepResult) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "series\tsize\tdelivered/s\tCPU µs/delivery\tdelivered/write\tKiB/connection\tidle CPU %\tRSS MiB")
	for _, p := range res.Points {
		fmt.Fprintf(tw, "%s\t%d\t%.0f\t%.2f\t%.1f\t%.2f\t%.2f\t%.1f\n", p.Series, p.X, p.DeliveredPerSec, p.CPUPerMsgUS, p.MsgsPerWrite, p.KiBPerConn, p.IdleCPUPct, float64(p.RSSKiB)/1024)
	}
	tw.Flush()
	if f := res.Fit; f != nil {
		fmt.Fprintf(w, "memory: %.1f MiB + %.2f KiB per connection; at 1,000,000 connections %.2f GiB\n", f.BaseMiB, f.KiBPerConn, f.MillionGiB)
	}
}
