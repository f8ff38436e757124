package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/heraldrt/herald/server"
	"github.com/heraldrt/herald/store"
)

func TestSweepListsMustBePositiveAndGrow(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		in   string
		want []int
		err  string
	}{
		{"10,100, 1000", []int{10, 100, 1000}, ""},
		{"", nil, ""},
		{"5", []int{5}, ""},
		{"10,10", nil, "must grow"},
		{"100,10", nil, "must grow"},
		{"0,10", nil, "not a positive number"},
		{"ten", nil, "not a positive number"},
	} {
		got, err := parseSweepList(c.in)
		if c.err != "" {
			if err == nil || !strings.Contains(err.Error(), c.err) {
				t.Errorf("%q: err %v, want %q", c.in, err, c.err)
			}
			continue
		}
		if err != nil || len(got) != len(c.want) || (len(got) > 0 && strconv.Itoa(got[len(got)-1]) != strconv.Itoa(c.want[len(c.want)-1])) {
			t.Errorf("%q: %v %v, want %v", c.in, got, err, c.want)
		}
	}
}

func TestSweepFitsMemoryToConnections(t *testing.T) {
	t.Parallel()
	// 50 MiB of base and 8 KiB per connection, exactly.
	var pts []sweepPoint
	for _, n := range []int{1000, 5000, 10000} {
		pts = append(pts, sweepPoint{Series: "connections", X: n, RSSKiB: 50*1024 + 8*int64(n)})
	}
	pts = append(pts, sweepPoint{Series: "subscribers", X: 10, RSSKiB: 1}) // not a connections point
	f := fitMemory(pts)
	if f == nil || f.BaseMiB != 50 || f.KiBPerConn != 8 || f.MillionGiB != 7.68 {
		t.Fatalf("fit %+v, want 50 MiB + 8 KiB per connection, 7.68 GiB at a million", f)
	}
	if fitMemory(pts[:1]) != nil {
		t.Error("a fit from one point")
	}
}

func TestSweepRefusesBadFlagsClearly(t *testing.T) {
	t.Parallel()
	var stdout, stderr bytes.Buffer
	err := Run(context.Background(), []string{"sweep", "--subscribers", "100,10"}, func(string) string { return "" }, &stdout, &stderr)
	if err == nil || !strings.Contains(err.Error(), "--server-pid is required") || !strings.Contains(err.Error(), "--subscribers") {
		t.Fatalf("err %v", err)
	}
}

// A small sweep against a real core: every series runs at every size,
// nothing is lost, and the charts and the JSON are written.
func TestBenchSweepSmoke(t *testing.T) {
	t.Parallel()
	base := benchTestServer(t, server.Config{}, store.Options{})
	out := t.TempDir()
	var stdout, stderr bytes.Buffer
	err := Run(context.Background(), []string{"sweep", "--server", base, "--token", "bench-test-api-key-0123456789",
		"--server-pid", strconv.Itoa(os.Getpid()), "--subscribers", "2,4", "--channels", "2,3", "--connections", "5,10",
		"--publishers", "2", "--duration", "500ms", "--warmup", "100ms", "--hold", "0s", "--out", out},
		func(string) string { return "" }, &stdout, &stderr)
	if err != nil {
		t.Fatalf("%v\n%s\n%s", err, stdout.String(), stderr.String())
	}
	raw, err := os.ReadFile(filepath.Join(out, "sweep.json"))
	if err != nil {
		t.Fatal(err)
	}
	var res sweepResult
	if err := json.Unmarshal(raw, &res); err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, p := range res.Points {
		got = append(got, p.Series+" "+strconv.Itoa(p.X))
		if p.Bad != 0 || p.Errors != 0 {
			t.Errorf("%s %d: %d bad, %d errors", p.Series, p.X, p.Bad, p.Errors)
		}
		if p.Series != "connections" && p.DeliveredPerSec <= 0 {
			t.Errorf("%s %d delivered nothing", p.Series, p.X)
		}
		if p.Series == "connections" && (p.RSSKiB <= 0 || p.Reconnected != 0) {
			t.Errorf("connections %d: server memory %d KiB, %d reconnects", p.X, p.RSSKiB, p.Reconnected)
		}
	}
	if want := "connections 5,connections 10,subscribers 2,subscribers 4,channels 2,channels 3"; strings.Join(got, ",") != want {
		t.Errorf("points %q, want %q", strings.Join(got, ","), want)
	}
	if res.Fit == nil || !strings.Contains(stdout.String(), "at 1,000,000 connections") {
		t.Errorf("no memory fit: %+v\n%s", res.Fit, stdout.String())
	}
	for _, f := range []string{"sweep-subscribers.svg", "sweep-channels.svg", "sweep-connections.svg"} {
		svg, err := os.ReadFile(filepath.Join(out, f))
		if err != nil || !bytes.HasPrefix(svg, []byte("<svg")) || !bytes.Contains(svg, []byte("<polyline")) {
			t.Errorf("%s: %v\n%s", f, err, svg)
		}
	}
}
