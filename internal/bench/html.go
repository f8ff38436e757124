package bench

// `herald bench --html FILE`: a small self-contained report — the figures,
// a latency distribution and a throughput-over-time chart as inline SVG,
// no script, no external style sheet.

import (
	"fmt"
	"html"
	"maps"
	"math"
	"os"
	"slices"
	"strings"
)

const (
	benchChartW    = 720.0
	benchChartH    = 260.0
	benchChartLeft = 70.0
	benchChartPad  = 50.0
)

func writeBenchHTML(path string, res *benchResult, lat, ack *benchHist) error {
	var b strings.Builder
	esc := html.EscapeString
	title := fmt.Sprintf("herald bench %s — %s", res.Workload, res.Transport)
	fmt.Fprintf(&b, `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>%s</title>
<style>
body{font:14px/1.45 system-ui,sans-serif;margin:2em auto;max-width:800px;color:#222}
h1{font-size:1.3em}h2{font-size:1.05em;margin-top:1.6em}
table{border-collapse:collapse}td{padding:2px 14px 2px 0;vertical-align:top}td:first-child{color:#666}
svg{background:#fafafa;border:1px solid #ddd}svg text{font:11px system-ui,sans-serif;fill:#444}
.bad{color:#b00;font-weight:bold}.ok{color:#070}
</style></head><body>
<h1>%s</h1>
`, esc(title), esc(title))
	if res.Partial {
		b.WriteString(`<p class="bad">Partial report: the run was interrupted.</p>`)
	}
	b.WriteString("<table>\n")
	row := func(k, v string) { fmt.Fprintf(&b, "<tr><td>%s</td><td>%s</td></tr>\n", esc(k), esc(v)) }
	if res.Idle != nil {
		i := res.Idle
		row("connections", fmt.Sprintf("%d over %d channels, held %.0f s", i.Connections, i.Channels, i.HoldSeconds))
		row("server memory", fmt.Sprintf("%.2f KiB per connection (RSS %d → %d KiB)", i.PerConnKiB, i.RSSBeforeKiB, i.RSSAfterKiB))
	} else {
		row("subscribers / publishers", fmt.Sprintf("%d on %d channel(s) / %d via %s, payload %d B", res.Subscribers, res.Channels, res.Publishers, res.PublishVia, res.Payload))
		if res.Resume != nil {
			row("catch-up", fmt.Sprintf("%s msgs/s (%d messages in %.3f s)", benchNum(res.Resume.CatchUpPerSec), res.Resume.ReceivedOfWant, res.Resume.CatchUpSeconds))
			row("publish", fmt.Sprintf("%s acks/s", benchNum(res.Resume.PublishPerSec)))
		} else {
			row("delivered", fmt.Sprintf("%s msgs/s over %.2f s", benchNum(res.DeliveredPerSec), res.WindowSeconds))
			row("publish acks", fmt.Sprintf("%s acks/s", benchNum(res.AcksPerSec)))
		}
		row("latency", benchLatencyLine(res.Latency))
		row("publish→ack", benchLatencyLine(res.AckLatency))
		verdict := fmt.Sprintf("%d / %d / %d", res.Lost, res.Duplicated, res.OutOfOrder)
		cls := "ok"
		if res.Lost+res.Duplicated+res.OutOfOrder > 0 {
			cls = "bad"
		}
		fmt.Fprintf(&b, "<tr><td>lost / duplicated / out of order</td><td class=%q>%s</td></tr>\n", cls, esc(verdict))
	}
	row("reconnects / errors", fmt.Sprintf("%d / %d", res.Reconnects, res.Errors))
	if s := res.Server; s != nil {
		row("server", fmt.Sprintf("pid %d: %.3f µs CPU per delivered message, %.2f cores, RSS %d KiB, peak %d KiB, cpus %s", s.PID, s.CPUPerMsgUS, s.CPUCores, s.RSSKiB, s.PeakRSSKiB, s.CPUs))
	}
	row("tool", fmt.Sprintf("%.3f µs CPU per delivered message, %.2f cores, RSS %d KiB", res.Tool.CPUPerMsgUS, res.Tool.CPUCores, res.Tool.RSSKiB))
	m := res.Machine
	row("machine", fmt.Sprintf("%s, %d CPUs, %s, %s", m.CPUModel, m.CPUs, m.GoVersion, m.Kernel))
	row("started", res.StartedAt)
	b.WriteString("</table>\n")

	if lat != nil && lat.n > 0 {
		b.WriteString("<h2>Delivery latency (receive − send time), all subscribers</h2>\n")
		benchLatencySVG(&b, lat)
	}
	if ack != nil && ack.n > 0 {
		b.WriteString("<h2>Publish → acknowledgement</h2>\n")
		benchLatencySVG(&b, ack)
	}
	if len(res.Timeline) > 1 {
		b.WriteString("<h2>Throughput over time</h2>\n")
		benchTimelineSVG(&b, res.Timeline)
	}
	b.WriteString("<h2>Flags</h2>\n<table>\n")
	for _, k := range benchSortedKeys(res.Flags) {
		row("--"+k, res.Flags[k])
	}
	b.WriteString("</table>\n</body></html>\n")
	return os.WriteFile(path, []byte(b.String()), 0o644)
}

// benchLatencySVG draws the distribution on a log time axis: bars of ten
// bins per decade (share of messages) and the cumulative share as a line.
func benchLatencySVG(b *strings.Builder, h *benchHist) {
	const perDecade = 20
	lo := math.Floor(math.Log10(math.Max(float64(h.min), 1000)) * perDecade)
	hi := math.Ceil(math.Log10(math.Max(float64(h.max), 1000)+1) * perDecade)
	if hi <= lo {
		hi = lo + 1
	}
	nbins := int(hi - lo)
	bins := make([]float64, nbins)
	for i, c := range h.counts {
		if c == 0 {
			continue
		}
		low, width := benchBucketBounds(i)
		mid := math.Max(float64(low)+float64(width)/2, 1000)
		k := int(math.Floor(math.Log10(mid)*perDecade) - lo)
		k = max(0, min(nbins-1, k))
		bins[k] += float64(c)
	}
	peak := 0.0
	for _, v := range bins {
		peak = math.Max(peak, v)
	}
	W, H := benchChartW, benchChartH
	x0, y0, pw, ph := benchChartLeft, 20.0, W-benchChartLeft-benchChartPad, H-60
	xOf := func(logv float64) float64 { return x0 + (logv*perDecade-lo)/(hi-lo)*pw }
	fmt.Fprintf(b, `<svg xmlns="http://www.w3.org/2000/svg" width="%.0f" height="%.0f" viewBox="0 0 %.0f %.0f">`+"\n", W, H, W, H)
	bw := pw / float64(nbins)
	total := float64(h.n)
	for k, v := range bins {
		if v == 0 {
			continue
		}
		bh := v / peak * ph
		fmt.Fprintf(b, `<rect x="%.1f" y="%.1f" width="%.1f" height="%.1f" fill="#4a7fc1"><title>%.2f%%</title></rect>`+"\n",
			x0+float64(k)*bw+0.5, y0+ph-bh, math.Max(bw-1, 0.5), bh, v/total*100)
	}
	// cumulative share
	var pts []string
	cum := 0.0
	for k, v := range bins {
		cum += v
		pts = append(pts, fmt.Sprintf("%.1f,%.1f", x0+float64(k+1)*bw, y0+ph-cum/total*ph))
	}
	fmt.Fprintf(b, `<polyline points="%s" fill="none" stroke="#d2691e" stroke-width="1.5"/>`+"\n", strings.Join(pts, " "))
	// percentiles
	for i, q := range []struct {
		name string
		v    float64
	}{{"p50", 0.5}, {"p99", 0.99}, {"max", 1}} {
		v := float64(h.quantile(q.v))
		x := xOf(math.Log10(math.Max(v, 1000)))
		fmt.Fprintf(b, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="#b00" stroke-dasharray="3,3"/><text x="%.1f" y="%.1f" text-anchor="end">%s %s</text>`+"\n",
			x, y0, x, y0+ph, x-3, y0+12+float64(i)*14, q.name, benchDur(v/1000))
	}
	// axes: decades
	fmt.Fprintf(b, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="#888"/>`+"\n", x0, y0+ph, x0+pw, y0+ph)
	for d := math.Ceil(lo / perDecade); d <= hi/perDecade; d++ {
		x := xOf(d)
		fmt.Fprintf(b, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="#888"/><text x="%.1f" y="%.1f" text-anchor="middle">%s</text>`+"\n",
			x, y0+ph, x, y0+ph+4, x, y0+ph+16, benchDur(math.Pow(10, d)/1000))
	}
	fmt.Fprintf(b, `<text x="%.1f" y="%.1f" text-anchor="middle">latency (log scale); bars: share of messages, line: cumulative (right: 100%%)</text>`+"\n", x0+pw/2, H-8)
	fmt.Fprintf(b, `<text x="%.1f" y="%.1f" text-anchor="end">%.1f%%</text>`+"\n", x0-4, y0+8, peak/total*100)
	fmt.Fprintf(b, `<text x="%.1f" y="%.1f" fill="#d2691e">100%%</text>`+"\n", x0+pw+4, y0+4)
	b.WriteString("</svg>\n")
}

// benchTimelineSVG draws delivered/s (left axis) and acks/s (right axis)
// per second, the measured window shaded.
func benchTimelineSVG(b *strings.Builder, tl []benchSample) {
	W, H := benchChartW, benchChartH
	x0, y0, pw, ph := benchChartLeft, 20.0, W-benchChartLeft-benchChartPad-20, H-60
	tmax := tl[len(tl)-1].T
	maxD, maxA := 1.0, 1.0
	for _, s := range tl {
		maxD = math.Max(maxD, s.DeliveredPerSec)
		maxA = math.Max(maxA, s.AcksPerSec)
	}
	xOf := func(t float64) float64 { return x0 + t/tmax*pw }
	fmt.Fprintf(b, `<svg xmlns="http://www.w3.org/2000/svg" width="%.0f" height="%.0f" viewBox="0 0 %.0f %.0f">`+"\n", W, H, W, H)
	for i, s := range tl {
		if s.Phase != "measure" && s.Phase != "catch-up" && s.Phase != "flood" {
			continue
		}
		t0 := 0.0
		if i > 0 {
			t0 = tl[i-1].T
		}
		fmt.Fprintf(b, `<rect x="%.1f" y="%.1f" width="%.1f" height="%.1f" fill="#e8f0e0"/>`+"\n", xOf(t0), y0, xOf(s.T)-xOf(t0), ph)
	}
	line := func(get func(benchSample) float64, top float64, color string) {
		var pts []string
		for _, s := range tl {
			pts = append(pts, fmt.Sprintf("%.1f,%.1f", xOf(s.T), y0+ph-get(s)/top*ph))
		}
		fmt.Fprintf(b, `<polyline points="%s" fill="none" stroke="%s" stroke-width="2"/>`+"\n", strings.Join(pts, " "), color)
	}
	line(func(s benchSample) float64 { return s.DeliveredPerSec }, maxD, "#4a7fc1")
	line(func(s benchSample) float64 { return s.AcksPerSec }, maxA, "#d2691e")
	fmt.Fprintf(b, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="#888"/>`+"\n", x0, y0+ph, x0+pw, y0+ph)
	for t := 0.0; t <= tmax; t += math.Max(1, math.Ceil(tmax/10)) {
		fmt.Fprintf(b, `<text x="%.1f" y="%.1f" text-anchor="middle">%.0fs</text>`+"\n", xOf(t), y0+ph+16, t)
	}
	fmt.Fprintf(b, `<text x="%.1f" y="%.1f" text-anchor="end" fill="#4a7fc1">%s/s</text>`+"\n", x0-4, y0+8, benchNum(maxD))
	fmt.Fprintf(b, `<text x="%.1f" y="%.1f" text-anchor="end">0</text>`+"\n", x0-4, y0+ph)
	fmt.Fprintf(b, `<text x="%.1f" y="%.1f">%s/s</text>`+"\n", x0+pw+4, y0+8, benchNum(maxA))
	fmt.Fprintf(b, `<text x="%.1f" y="%.1f" text-anchor="middle">blue: delivered msgs/s (left) · orange: publish acks/s (right) · shaded: measured</text>`+"\n", x0+pw/2, H-8)
	b.WriteString("</svg>\n")
}

func benchSortedKeys(m map[string]string) []string {
	return slices.Sorted(maps.Keys(m))
}
