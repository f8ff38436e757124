package bench

// The figures of a `herald bench` run: a progress line a second on stderr,
// then a table and one JSON line on stdout.

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"strings"
	"text/tabwriter"
	"time"
)

// benchResult is everything a run reports; the JSON line is this.
type benchResult struct {
	Workload    string  `json:"workload"`
	Transport   string  `json:"transport"`
	PublishVia  string  `json:"publish_via,omitempty"`
	Subscribers int     `json:"subscribers"`
	Publishers  int     `json:"publishers"`
	Channels    int     `json:"channels"`
	Payload     int     `json:"payload_bytes,omitempty"`
	Rate        float64 `json:"rate,omitempty"` // 0: as fast as acknowledged

	// The measured window (fanout, channels: after the warm-up; resume:
	// the catch-up).
	WindowSeconds   float64 `json:"window_seconds"`
	Delivered       int64   `json:"delivered"`
	DeliveredPerSec float64 `json:"delivered_per_sec"`
	Acks            int64   `json:"acks"`
	AcksPerSec      float64 `json:"acks_per_sec"`
	// Latency is receive time minus the send time in the payload, over
	// the messages sent in the window, merged over all subscribers.
	Latency benchLatency `json:"latency"`
	// AckLatency is publish to acknowledgement, per publish in the window.
	AckLatency benchLatency `json:"ack_latency"`

	Lost       int64 `json:"lost"`
	Duplicated int64 `json:"duplicated"`
	OutOfOrder int64 `json:"out_of_order"`
	Untracked  int64 `json:"untracked,omitempty"` // offsets absurdly far ahead
	Foreign    int64 `json:"foreign,omitempty"`   // messages not from this run's publishers
	Reconnects int64 `json:"reconnects"`
	// Errors counts failures (publish errors, resets, subscribers that
	// gave up); ErrorSamples holds the first few.
	Errors       int64    `json:"errors"`
	ErrorSamples []string `json:"error_samples,omitempty"`
	// Notices are the first reconnect reasons.
	Notices []string `json:"notices,omitempty"`

	DrainSeconds  float64 `json:"drain_seconds,omitempty"`
	DrainComplete bool    `json:"drain_complete"`

	Server *benchServerResult `json:"server,omitempty"`
	Tool   benchToolResult    `json:"tool"`
	Idle   *benchIdleResult   `json:"idle,omitempty"`
	Resume *benchResumeResult `json:"resume,omitempty"`
	Flood  *benchFloodResult  `json:"flood,omitempty"`

	Partial   bool              `json:"partial"`
	StartedAt string            `json:"started_at"`
	Flags     map[string]string `json:"flags"`
	Machine   benchMachine      `json:"machine"`
	Timeline  []benchSample     `json:"timeline,omitempty"`
}

type benchServerResult struct {
	PID        int     `json:"pid"`
	CPUSeconds float64 `json:"cpu_seconds,omitempty"`
	// CPUPerMsgUS is the server's CPU time (user + system) over the
	// window divided by the messages delivered in it, in µs.
	CPUPerMsgUS float64 `json:"cpu_us_per_delivered,omitempty"`
	// CPUCores is the server's CPU time over the window's wall time.
	CPUCores   float64 `json:"cpu_cores,omitempty"`
	RSSKiB     int64   `json:"rss_kib"`
	PeakRSSKiB int64   `json:"peak_rss_kib"`
	CPUs       string  `json:"cpu_set,omitempty"`
	// Writes is the server's write system calls over the window (sockets
	// and files, from /proc/PID/io) and MsgsPerWrite the delivered
	// messages per write: how well it coalesces frames.
	Writes        int64   `json:"write_calls,omitempty"`
	BytesPerWrite float64 `json:"bytes_per_write,omitempty"`
	MsgsPerWrite  float64 `json:"delivered_per_write,omitempty"`
}

// benchToolResult is the same for the tool itself: where it might be the
// bottleneck.
type benchToolResult struct {
	CPUSeconds  float64 `json:"cpu_seconds"`
	CPUPerMsgUS float64 `json:"cpu_us_per_delivered,omitempty"`
	CPUCores    float64 `json:"cpu_cores"`
	RSSKiB      int64   `json:"rss_kib"`
	// Reads is the tool's read system calls over the window, MsgsPerRead
	// the delivered messages per read.
	Reads       int64   `json:"read_calls,omitempty"`
	MsgsPerRead float64 `json:"delivered_per_read,omitempty"`
}

type benchIdleResult struct {
	Connections    int     `json:"connections"`
	Channels       int     `json:"channels"`
	ConnectSeconds float64 `json:"connect_seconds"`
	HoldSeconds    float64 `json:"hold_seconds"`
	RSSBeforeKiB   int64   `json:"server_rss_before_kib"`
	RSSAfterKiB    int64   `json:"server_rss_after_kib"`
	// PerConnKiB is (RSS after − RSS before) / connections.
	PerConnKiB       float64 `json:"server_kib_per_connection"`
	ToolPerConnKiB   float64 `json:"tool_kib_per_connection"`
	ServerCPUSeconds float64 `json:"server_cpu_seconds"`
	// Steps are the sizes a sweep grew the connections through, measured
	// after each one's hold.
	Steps []benchIdleStep `json:"steps,omitempty"`
}

// benchIdleStep is the server with the first Connections connections
// open: its RSS, RSS growth per connection since before the first, and
// its CPU over the hold as a share of one core.
type benchIdleStep struct {
	Connections    int     `json:"connections"`
	RSSKiB         int64   `json:"server_rss_kib"`
	PerConnKiB     float64 `json:"server_kib_per_connection"`
	IdleCPUPercent float64 `json:"idle_cpu_percent"`
}

type benchResumeResult struct {
	Messages       int64   `json:"messages"`
	StartOffset    uint64  `json:"start_offset"`
	EndOffset      uint64  `json:"end_offset"`
	PublishSeconds float64 `json:"publish_seconds"`
	PublishPerSec  float64 `json:"publish_per_sec"`
	CatchUpSeconds float64 `json:"catch_up_seconds"`
	CatchUpPerSec  float64 `json:"catch_up_per_sec"`
	CaughtUp       bool    `json:"caught_up"`
	ReceivedOfWant int64   `json:"received"`
}

// benchSample is one second of the run.
type benchSample struct {
	T               float64 `json:"t"` // seconds since the first sample's start
	Phase           string  `json:"phase"`
	DeliveredPerSec float64 `json:"delivered_per_sec"`
	AcksPerSec      float64 `json:"acks_per_sec"`
}

func (r *benchRun) newResult() *benchResult {
	o := &r.opts
	res := &benchResult{
		Workload:    o.workload,
		Transport:   o.transport,
		Subscribers: len(r.subs),
		Publishers:  len(r.pubs),
		Channels:    len(r.chans),
		Rate:        o.rate,
		StartedAt:   r.startedAt.UTC().Format(time.RFC3339),
		Flags:       o.flags,
		Machine:     benchDescribeMachine(),
	}
	if o.workload != "idle" {
		res.PublishVia = o.publishVia
		res.Payload = o.payload
	}
	return res
}

// fill computes the figures of the window s0 → s1 and the accounting, once
// subscribers and publishers have stopped.
func (r *benchRun) fill(res *benchResult, s0, s1 benchSnapshot) {
	window := s1.at.Sub(s0.at).Seconds()
	res.WindowSeconds = round3(window)
	res.Delivered = s1.delivered - s0.delivered
	res.Acks = s1.acks - s0.acks
	if window > 0 {
		res.DeliveredPerSec = math.Round(float64(res.Delivered) / window)
		res.AcksPerSec = math.Round(float64(res.Acks)/window*10) / 10
	}
	for _, s := range r.subs {
		r.latency.merge(s.hist)
		res.Lost += s.track.lost(s.ch.head)
		res.Duplicated += s.track.dup
		res.OutOfOrder += s.track.reorder
		res.Untracked += s.track.jump
		res.Foreign += s.foreign
		res.Reconnects += s.reconnects.Load()
	}
	for _, p := range r.pubs {
		r.ackLatency.merge(p.ackHist)
	}
	res.Latency = r.latency.summary()
	res.AckLatency = r.ackLatency.summary()
	perMsg := func(d time.Duration) float64 {
		if res.Delivered <= 0 {
			return 0
		}
		return round3(float64(d.Microseconds()) / float64(res.Delivered))
	}
	if r.opts.serverPID > 0 && s0.serverErr == nil && s1.serverErr == nil {
		cpu := s1.server.CPU - s0.server.CPU
		res.Server = &benchServerResult{
			PID:         r.opts.serverPID,
			CPUSeconds:  round3(cpu.Seconds()),
			CPUPerMsgUS: perMsg(cpu),
			RSSKiB:      s1.server.RSSKiB,
			PeakRSSKiB:  s1.server.HWMKiB,
			CPUs:        s1.server.CPUs,
		}
		if window > 0 {
			res.Server.CPUCores = round3(cpu.Seconds() / window)
		}
		if w := s1.server.IO.WriteCalls - s0.server.IO.WriteCalls; w > 0 {
			res.Server.Writes = w
			res.Server.BytesPerWrite = math.Round(float64(s1.server.IO.WriteBytes-s0.server.IO.WriteBytes) / float64(w))
			res.Server.MsgsPerWrite = round3(float64(res.Delivered) / float64(w))
		}
	} else if r.opts.serverPID > 0 {
		r.errs.add("read the server's /proc: %v", benchFirstErr(s0.serverErr, s1.serverErr))
	}
	cpu := s1.self.CPU - s0.self.CPU
	res.Tool = benchToolResult{CPUSeconds: round3(cpu.Seconds()), CPUPerMsgUS: perMsg(cpu), RSSKiB: s1.self.RSSKiB}
	if window > 0 {
		res.Tool.CPUCores = round3(cpu.Seconds() / window)
	}
	if n := s1.self.IO.ReadCalls - s0.self.IO.ReadCalls; n > 0 {
		res.Tool.Reads = n
		res.Tool.MsgsPerRead = round3(float64(res.Delivered) / float64(n))
	}
	r.fillErrors(res)
}

func (r *benchRun) fillErrors(res *benchResult) {
	res.Errors, res.ErrorSamples = r.errs.get()
	_, res.Notices = r.notices.get()
	r.progressMu.Lock()
	res.Timeline = append([]benchSample(nil), r.timeline...)
	r.progressMu.Unlock()
}

func round3(v float64) float64 { return math.Round(v*1000) / 1000 }

// verdict is the run's exit status: delivery must be exact and nothing may
// have failed.
func (res *benchResult) verdict() error {
	var bad []string
	if n := res.Lost; n > 0 {
		bad = append(bad, fmt.Sprintf("%d lost", n))
	}
	if n := res.Duplicated; n > 0 {
		bad = append(bad, fmt.Sprintf("%d duplicated", n))
	}
	if n := res.OutOfOrder; n > 0 {
		bad = append(bad, fmt.Sprintf("%d out of order", n))
	}
	if n := res.Untracked; n > 0 {
		bad = append(bad, fmt.Sprintf("%d with an offset far beyond the head", n))
	}
	if n := res.Errors; n > 0 {
		bad = append(bad, fmt.Sprintf("%d errors (first: %s)", n, res.ErrorSamples[0]))
	}
	if res.Resume != nil && !res.Resume.CaughtUp {
		bad = append(bad, fmt.Sprintf("the catch-up did not finish: %d of %d messages", res.Resume.ReceivedOfWant, res.Resume.Messages))
	}
	if res.Flood != nil {
		bad = append(bad, res.Flood.verdict()...)
	}
	if len(bad) > 0 {
		return fmt.Errorf("%s", strings.Join(bad, ", "))
	}
	if res.Partial {
		return fmt.Errorf("interrupted: the report above is partial")
	}
	return nil
}

// writeBenchReport writes the table, then the JSON line.
func writeBenchReport(w io.Writer, res *benchResult) error {
	var b strings.Builder
	tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
	row := func(k, format string, args ...any) { fmt.Fprintf(tw, "%s\t"+format+"\n", append([]any{k}, args...)...) }
	title := fmt.Sprintf("herald bench %s — %s", res.Workload, res.Transport)
	switch res.Workload {
	case "fanout", "flood":
		title += fmt.Sprintf(", 1 channel, %d subscribers", res.Subscribers)
	case "channels", "idle":
		title += fmt.Sprintf(", %d channels, %d subscribers", res.Channels, res.Subscribers)
	}
	if res.Workload != "idle" {
		rate := "as fast as acknowledged"
		if res.Rate > 0 {
			rate = fmt.Sprintf("%s msgs/s", benchNum(res.Rate))
		}
		title += fmt.Sprintf(", %d publishers via %s (%s), payload %d B", res.Publishers, res.PublishVia, rate, res.Payload)
	}
	if res.Partial {
		title += "  [PARTIAL: interrupted]"
	}
	fmt.Fprintln(&b, title)
	if res.Idle != nil {
		i := res.Idle
		row("connections", "%d subscribed in %.2f s, held %.0f s", i.Connections, i.ConnectSeconds, i.HoldSeconds)
		row("server memory", "%.2f KiB per connection  (RSS %s → %s KiB)", i.PerConnKiB, benchNum(float64(i.RSSBeforeKiB)), benchNum(float64(i.RSSAfterKiB)))
		row("tool memory", "%.2f KiB per connection", i.ToolPerConnKiB)
	} else if res.Flood != nil {
		writeFloodRows(row, res)
		row("lost / dup / order", "%d / %d / %d", res.Lost, res.Duplicated, res.OutOfOrder)
		row("drain", "%.2f s, complete: %v", res.DrainSeconds, res.DrainComplete)
	} else {
		if res.Resume != nil {
			rr := res.Resume
			row("published", "%s messages in %.2f s (%s acks/s)", benchNum(float64(rr.Messages)), rr.PublishSeconds, benchNum(rr.PublishPerSec))
			row("catch-up", "%s of %s messages in %.3f s: %s msgs/s", benchNum(float64(rr.ReceivedOfWant)), benchNum(float64(rr.Messages)), rr.CatchUpSeconds, benchNum(rr.CatchUpPerSec))
		} else {
			row("window", "%.2f s measured (warm-up excluded)", res.WindowSeconds)
			row("delivered", "%s msgs/s  (%s messages)", benchNum(res.DeliveredPerSec), benchNum(float64(res.Delivered)))
			row("publish acks", "%s acks/s  (%s)", benchNum(res.AcksPerSec), benchNum(float64(res.Acks)))
		}
		if res.Resume != nil {
			// Receive time minus send time of messages published while the
			// subscriber was away: their age when they arrived.
			row("message age", "%s", benchLatencyLine(res.Latency))
		} else {
			row("latency", "%s", benchLatencyLine(res.Latency))
		}
		row("publish→ack", "%s", benchLatencyLine(res.AckLatency))
		row("lost / dup / order", "%d / %d / %d", res.Lost, res.Duplicated, res.OutOfOrder)
		if res.DrainSeconds > 0 || !res.DrainComplete {
			row("drain", "%.2f s, complete: %v", res.DrainSeconds, res.DrainComplete)
		}
	}
	row("reconnects", "%d", res.Reconnects)
	row("errors", "%d", res.Errors)
	for _, e := range res.ErrorSamples {
		row("", "%s", e)
	}
	for i, n := range res.Notices {
		if i == 3 {
			break
		}
		row("", "%s", n)
	}
	if s := res.Server; s != nil {
		line := ""
		if s.CPUSeconds > 0 || s.CPUPerMsgUS > 0 {
			line = fmt.Sprintf("cpu %.3f µs/delivered msg, %.2f cores, ", s.CPUPerMsgUS, s.CPUCores)
		}
		row(fmt.Sprintf("server (pid %d)", s.PID), "%srss %s KiB, peak %s KiB, cpus %s", line, benchNum(float64(s.RSSKiB)), benchNum(float64(s.PeakRSSKiB)), s.CPUs)
		if s.Writes > 0 {
			row("", "%s write calls, %s B and %.2f delivered msgs per write", benchNum(float64(s.Writes)), benchNum(s.BytesPerWrite), s.MsgsPerWrite)
		}
	}
	t := res.Tool
	if res.Idle != nil {
		row("tool (this process)", "rss %s KiB", benchNum(float64(t.RSSKiB)))
	} else {
		row("tool (this process)", "cpu %.3f µs/delivered msg, %.2f cores, rss %s KiB", t.CPUPerMsgUS, t.CPUCores, benchNum(float64(t.RSSKiB)))
	}
	if t.Reads > 0 {
		row("", "%s read calls, %.2f delivered msgs per read", benchNum(float64(t.Reads)), t.MsgsPerRead)
	}
	m := res.Machine
	row("machine", "%s, %d CPUs (tool may use %d: %s), %s, %s", m.CPUModel, m.CPUs, m.ToolCPUs, m.ToolCPUSet, m.GoVersion, m.Kernel)
	if err := tw.Flush(); err != nil {
		return err
	}
	js, err := json.Marshal(res)
	if err != nil {
		return fmt.Errorf("encode the JSON report: %w", err)
	}
	b.Write(js)
	b.WriteByte('\n')
	_, err = io.WriteString(w, b.String())
	return err
}

func benchLatencyLine(l benchLatency) string {
	if l.Count == 0 {
		return "—"
	}
	return fmt.Sprintf("p50 %s  p90 %s  p99 %s  p99.9 %s  max %s  (n=%s)",
		benchDur(l.P50), benchDur(l.P90), benchDur(l.P99), benchDur(l.P999), benchDur(l.Max), benchNum(float64(l.Count)))
}

// benchDur prints microseconds readably.
func benchDur(us float64) string {
	switch {
	case us >= 1e6:
		return fmt.Sprintf("%.2fs", us/1e6)
	case us >= 1e3:
		return fmt.Sprintf("%.2fms", us/1e3)
	}
	return fmt.Sprintf("%.0fµs", us)
}

// benchNum prints a number with thousands separators.
func benchNum(v float64) string {
	neg := v < 0
	v = math.Abs(v)
	whole := math.Floor(v)
	s := fmt.Sprintf("%.0f", whole)
	if v-whole >= 0.05 && v < 100 {
		s = fmt.Sprintf("%.1f", v)
		return s
	}
	var out []byte
	for i := range len(s) {
		if i > 0 && (len(s)-i)%3 == 0 {
			out = append(out, ',')
		}
		out = append(out, s[i])
	}
	if neg {
		return "-" + string(out)
	}
	return string(out)
}

// progressf writes one progress line to stderr.
func (r *benchRun) progressf(format string, args ...any) {
	if r.opts.quiet {
		return
	}
	fmt.Fprintf(r.stderr, "bench %s/%s "+format+"\n", append([]any{r.opts.workload, r.opts.transport}, args...)...)
}

// startProgress samples the counters every second — a progress line and
// a point of the throughput timeline — until the returned stop is called.
func (r *benchRun) startProgress() (stop func()) {
	done := make(chan struct{})
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		tick := time.NewTicker(time.Second)
		defer tick.Stop()
		start := time.Now()
		last, lastD, lastA := start, r.delivered(), r.acks()
		var lastAtt, lastRef int64 // the abusive user's (flood)
		for {
			select {
			case <-done:
				return
			case now := <-tick.C:
				d, a := r.delivered(), r.acks()
				secs := now.Sub(last).Seconds()
				phase := benchPhaseNames[r.phase.Load()]
				smp := benchSample{T: round3(now.Sub(start).Seconds()), Phase: phase,
					DeliveredPerSec: math.Round(float64(d-lastD) / secs), AcksPerSec: math.Round(float64(a-lastA) / secs)}
				r.progressMu.Lock()
				r.timeline = append(r.timeline, smp)
				r.progressMu.Unlock()
				var reconnects int64
				for _, s := range r.subs {
					reconnects += s.reconnects.Load()
				}
				errs, _ := r.errs.get()
				if r.opts.workload == "idle" {
					r.progressf("%5.0fs %-8s holding %d connections  reconnects %d  errors %d", smp.T, phase, len(r.subs), reconnects, errs)
					last, lastD, lastA = now, d, a
					continue
				}
				flood := ""
				if ab := r.abuser; ab != nil {
					att, ref := ab.attempts.Load(), ab.refused.Load()
					flood = fmt.Sprintf("  flood %s req/s, %s refused/s", benchNum(math.Round(float64(att-lastAtt)/secs)), benchNum(math.Round(float64(ref-lastRef)/secs)))
					lastAtt, lastRef = att, ref
				}
				r.progressf("%5.0fs %-8s delivered %11s/s  acks %9s/s%s  reconnects %d  errors %d",
					smp.T, phase, benchNum(smp.DeliveredPerSec), benchNum(smp.AcksPerSec), flood, reconnects, errs)
				last, lastD, lastA = now, d, a
			}
		}
	}()
	return func() {
		close(done)
		<-finished
	}
}
