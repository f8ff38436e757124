package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/heraldrt/herald/server"
	"github.com/heraldrt/herald/store"
)

func TestSoakFitsALineToEachQuantity(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		name      string
		xs, ys    []float64
		slope     float64
		mean      float64
		low, high float64
	}{
		{"flat", []float64{0, 1, 2, 3}, []float64{5, 5, 5, 5}, 0, 5, 5, 5},
		{"rising", []float64{0, 1, 2, 3}, []float64{1, 3, 5, 7}, 2, 4, 1, 7},
		{"falling with noise", []float64{0, 1, 2, 3, 4}, []float64{10, 9.5, 8, 7.5, 6}, -1, 8.2, 6, 10},
		{"one point", []float64{2}, []float64{3}, 0, 3, 3, 3},
		{"none", nil, nil, 0, 0, 0, 0},
	} {
		slope, mean, lo, hi := soakFit(c.xs, c.ys)
		if math.Abs(slope-c.slope) > 1e-9 || math.Abs(mean-c.mean) > 1e-9 || lo != c.low || hi != c.high {
			t.Errorf("%s: slope %v mean %v range %v–%v, want %v %v %v–%v", c.name, slope, mean, lo, hi, c.slope, c.mean, c.low, c.high)
		}
	}
}

func TestSoakTrendsLeaveOutTheSettling(t *testing.T) {
	t.Parallel()
	// RSS climbs for the first 10 minutes (caches filling), then holds
	// 100 MiB; goroutines leak 10 an hour from 1,000.
	var samples []soakSample
	for ts := 0.0; ts <= 3600; ts += 10 {
		rss := 100.0
		if ts < 600 {
			rss = 40 + ts/10
		}
		samples = append(samples, soakSample{T: ts, RSSMiB: rss, Goroutines: 1000 + 10*ts/3600})
	}
	qs := soakQuantitiesOf(&soakResult{})
	trends := map[string]soakTrend{}
	for _, tr := range soakTrends(qs, samples, 600) {
		trends[tr.Metric] = tr
	}
	if tr := trends["rss"]; tr.PerHour != 0 || tr.Mean != 100 || !tr.Checked {
		t.Errorf("rss after settling: %+v", tr)
	}
	// 10 an hour over the 50 settled minutes: 8.3 of about 1,005.
	if tr := trends["goroutines"]; math.Abs(tr.PerHour-10) > 0.01 || math.Abs(tr.PercentPerHour-1) > 0.05 || math.Abs(tr.RisePercent-0.8) > 0.05 {
		t.Errorf("goroutines: %+v, want 10/h (1 %%/h, 0.8 %% over the run)", tr)
	}
	if tr := trends["latency p99"]; tr.Checked {
		t.Errorf("latency is charted, not held to the bound: %+v", tr)
	}
	// With the settling kept, the early climb shows as a slope.
	for _, tr := range soakTrends(qs, samples, 0) {
		if tr.Metric == "rss" && tr.PerHour <= 0 {
			t.Errorf("rss over the whole run: %+v", tr)
		}
	}
}

func TestSoakReadsTheServersMetrics(t *testing.T) {
	t.Parallel()
	body := []byte(`{"go_goroutines":{"type":"gauge","samples":[{"value":42}]},
		"go_memstats_heap_inuse_bytes":{"type":"gauge","samples":[{"value":1048576}]},
		"process_resident_memory_bytes":{"type":"gauge","samples":[{"value":2097152}]},
		"process_open_fds":{"type":"gauge","samples":[{"value":17}]},
		"process_cpu_seconds_total":{"type":"counter","samples":[{"value":1.5}]},
		"herald_messages_published_total":{"type":"counter","samples":[{"labels":{"x":"y"},"value":9}]}}`)
	got, err := parseSoakMetrics(body)
	if err != nil {
		t.Fatal(err)
	}
	if want := (soakServer{rss: 2 << 20, heap: 1 << 20, goroutines: 42, files: 17, cpu: 1.5}); got != want {
		t.Errorf("got %+v, want %+v", got, want)
	}
	_, err = parseSoakMetrics([]byte(`{"go_goroutines":{"samples":[{"value":1}]}}`))
	if err == nil || !strings.Contains(err.Error(), "process_open_fds") || !strings.Contains(err.Error(), "Linux") {
		t.Errorf("missing metrics: %v", err)
	}
	if _, err := parseSoakMetrics([]byte(`<html>`)); err == nil {
		t.Error("not JSON: accepted")
	}
	// The resident memory by kind, where the server reports it.
	kinds := append(body[:len(body)-1:len(body)-1], []byte(`,
		"herald_process_resident_memory_bytes":{"type":"gauge","samples":[{"labels":{"kind":"anon"},"value":1024},
		{"labels":{"kind":"file"},"value":2048},{"labels":{"kind":"shmem"},"value":0}]}}`)...)
	got, err = parseSoakMetrics(kinds)
	if err != nil {
		t.Fatal(err)
	}
	if want := (soakServer{rss: 2 << 20, heap: 1 << 20, goroutines: 42, files: 17, cpu: 1.5, anon: 1024, file: 2048, kinds: true}); got != want {
		t.Errorf("got %+v, want %+v", got, want)
	}
}

// TestSoakChecksAnonymousMemoryWhereItIsReported: the store's
// memory-mapped files follow the data directory, so where the server
// reports its resident memory by kind the verdict bounds the anonymous
// part, and charts the total, the file-backed part and the data
// directory beside it.
func TestSoakChecksAnonymousMemoryWhereItIsReported(t *testing.T) {
	t.Parallel()
	checked := func(res *soakResult) (names, bounded []string) {
		for _, q := range soakQuantitiesOf(res) {
			names = append(names, q.name)
			if q.checked {
				bounded = append(bounded, q.name)
			}
		}
		return names, bounded
	}
	names, bounded := checked(&soakResult{})
	if names[0] != "rss" || bounded[0] != "rss" || len(names) != len(soakQuantities)+1 {
		t.Errorf("without kinds: %v, checked %v", names, bounded)
	}
	names, bounded = checked(&soakResult{MemoryKinds: true, DataDir: true})
	if strings.Join(names[:4], ",") != "rss,rss anonymous,rss file-backed,data directory" ||
		strings.Join(bounded, ",") != "rss anonymous,heap in use,goroutines,open files" {
		t.Errorf("with kinds and a data directory: %v, checked %v", names, bounded)
	}
	// The file-backed part rising with the data directory is charted and
	// fitted, not failed; the anonymous part rising is.
	var samples []soakSample
	for ts := 0.0; ts <= 3600; ts += 10 {
		samples = append(samples, soakSample{T: ts, RSSMiB: 100 + ts/36, RSSAnonMiB: 50 + ts/360, RSSFileMiB: 50 + ts/36 - ts/360, DataDirMiB: 500 + ts/10})
	}
	res := &soakResult{MemoryKinds: true, DataDir: true}
	for _, tr := range soakTrends(soakQuantitiesOf(res), samples, 0) {
		switch tr.Metric {
		case "rss anonymous":
			if !tr.Checked || math.Abs(tr.PerHour-10) > 0.01 {
				t.Errorf("anonymous: %+v", tr)
			}
		case "rss", "rss file-backed", "data directory":
			if tr.Checked || tr.PerHour <= 0 {
				t.Errorf("%s: %+v", tr.Metric, tr)
			}
		}
	}
}

func TestSoakMeasuresADirectoryOnDisk(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "sub"), 0o755); err != nil {
		t.Fatal(err)
	}
	for name, n := range map[string]int{"a": 64 << 10, "sub/b": 128 << 10} {
		if err := os.WriteFile(filepath.Join(dir, name), bytes.Repeat([]byte{1}, n), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	// A sparse file takes what is written, not its size.
	f, err := os.Create(filepath.Join(dir, "sparse"))
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(1 << 30); err != nil {
		t.Fatal(err)
	}
	f.Close()
	n, err := diskUsage(dir)
	if err != nil {
		t.Fatal(err)
	}
	if n < 192<<10 || n > 1<<20 {
		t.Errorf("%d bytes on disk, want about 192 KiB", n)
	}
	if _, err := diskUsage(filepath.Join(dir, "nothing")); err == nil {
		t.Error("a directory that is not there: measured")
	}
}

func TestSoakWindowHistogramCountsEachValueOnce(t *testing.T) {
	t.Parallel()
	w := newBenchWindowHist()
	const writers, each = 4, 20000
	var wg sync.WaitGroup
	for g := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				w.record(int64(g*each+i) * 1000) // 0 … 80 ms
			}
		}()
	}
	var total uint64
	for range 5 {
		total += w.take().n
	}
	wg.Wait()
	last := w.take()
	total += last.n
	if total != writers*each {
		t.Errorf("%d values taken over the windows, want %d", total, writers*each)
	}
	if h := w.take(); h.n != 0 {
		t.Errorf("an empty window has %d values", h.n)
	}
	w.record(int64(5 * time.Millisecond))
	w.record(int64(7 * time.Millisecond))
	h := w.take()
	if p50, p99 := h.quantile(0.5), h.quantile(0.99); h.n != 2 || p50 < int64(4900*time.Microsecond) || p50 > int64(5200*time.Microsecond) || p99 != int64(7*time.Millisecond) {
		t.Errorf("n %d p50 %d p99 %d", h.n, p50, p99)
	}
}

func TestSoakRefusesBadFlagsClearly(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--fraction", "1.5"}, "--fraction 1.5"},
		{[]string{"--interval", "100ms"}, "--interval 100ms"},
		{[]string{"--duration", "10s", "--interval", "20s", "--settle", "0s"}, "at most --duration"},
		{[]string{"--churn", "2"}, "--churn 2"},
		{[]string{"--settle", "2h"}, "--settle 2h"},
		{[]string{"--publish-via", "carrier-pigeon"}, `--publish-via "carrier-pigeon"`},
		{[]string{"--channels", "0"}, "--channels 0"},
		{[]string{"--server", "http://example.com"}, "on this machine only"},
		{[]string{"--max-rise", "0"}, "--max-rise 0"},
		{[]string{"--data-dir", "/nonexistent/herald"}, `--data-dir "/nonexistent/herald"`},
		{[]string{"--hold-publishers", "-1"}, "--hold-publishers -1"},
	} {
		_, err := parseSoakFlags(c.args, func(string) string { return "" }, new(bytes.Buffer))
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%v: %v, want an error naming %q", c.args, err, c.want)
		}
	}
	o, err := parseSoakFlags(nil, func(string) string { return "" }, new(bytes.Buffer))
	if err != nil {
		t.Fatal(err)
	}
	if o.stream.duration != time.Hour || o.interval != 10*time.Second || o.fraction != 0.5 || o.stream.transport != "mixed" || o.stream.publishVia != "mixed" {
		t.Errorf("defaults: %+v", o)
	}
}

// TestBenchSoakSmoke holds a short soak against a real core: the probe
// sets the rate, every interval is sampled from the server's metrics,
// streaming subscribers are cut and come back, and still every
// acknowledged message reaches its subscriber once, in order.
func TestBenchSoakSmoke(t *testing.T) {
	t.Parallel()
	base := benchTestServer(t, server.Config{}, store.Options{})
	out := t.TempDir()
	dataDir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dataDir, "v"), bytes.Repeat([]byte{1}, 1<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	var stdout, stderr bytes.Buffer
	err := Run(context.Background(), []string{"soak", "--server", base, "--token", "bench-test-api-key-0123456789",
		"--channels", "10", "--publishers", "4", "--probe", "1s", "--duration", "4s", "--interval", "1s",
		"--churn", "0.5", "--settle", "0s", "--max-rise", "1e9", "--out", out, "--data-dir", dataDir},
		func(string) string { return "" }, &stdout, &stderr)
	if err != nil {
		t.Fatalf("%v\n%s\n%s", err, stdout.String(), stderr.String())
	}
	raw, err := os.ReadFile(filepath.Join(out, "soak.json"))
	if err != nil {
		t.Fatal(err)
	}
	var res soakResult
	if err := json.Unmarshal(raw, &res); err != nil {
		t.Fatal(err)
	}
	st := res.Stream
	if st == nil || st.Lost != 0 || st.Duplicated != 0 || st.OutOfOrder != 0 || st.Errors != 0 || !st.DrainComplete || st.Acks == 0 {
		t.Fatalf("stream %+v\n%s", st, stderr.String())
	}
	if res.MaxRate <= 0 || res.Rate != math.Round(res.MaxRate/2) {
		t.Errorf("probed %v, held %v: want half", res.MaxRate, res.Rate)
	}
	qs := soakQuantitiesOf(&res)
	if len(res.Samples) < 3 || len(res.Trends) != len(qs) || !res.DataDir {
		t.Fatalf("%d samples, %d trends, data dir %v", len(res.Samples), len(res.Trends), res.DataDir)
	}
	if runtime.GOOS == "linux" && !res.MemoryKinds {
		t.Error("the server's resident memory by kind was not read")
	}
	for _, s := range res.Samples {
		if s.RSSMiB <= 0 || s.HeapMiB <= 0 || s.Goroutines <= 0 || s.OpenFiles <= 0 || s.DataDirMiB < 1 ||
			res.MemoryKinds && (s.RSSAnonMiB <= 0 || s.RSSAnonMiB+s.RSSFileMiB > 1.2*s.RSSMiB) {
			t.Errorf("sample %+v", s)
		}
	}
	// 10 subscribers: 8 stream (SSE and WebSocket), half of them cut at
	// each interval but the last.
	if res.Kicked < 4 || st.Reconnects < res.Kicked {
		t.Errorf("%d cut, %d reconnects", res.Kicked, st.Reconnects)
	}
	svg, err := os.ReadFile(filepath.Join(out, "soak.svg"))
	if err != nil || !bytes.HasPrefix(svg, []byte("<svg")) || bytes.Count(svg, []byte("<polyline")) != len(qs) {
		t.Errorf("soak.svg: %v\n%.500s", err, svg)
	}
	if !strings.Contains(stdout.String(), "lost 0, duplicated 0") || strings.Contains(stdout.String(), "bench-test-api-key") {
		t.Errorf("report:\n%s", stdout.String())
	}
}
