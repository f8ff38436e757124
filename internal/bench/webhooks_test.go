package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"testing"

	"github.com/heraldrt/herald/internal/app"
)

// TestMain lets the test binary stand in for `herald serve`, which the
// webhooks workload runs as a child process (--herald).
func TestMain(m *testing.M) {
	if len(os.Args) > 1 && os.Args[1] == "serve" {
		os.Exit(benchTestServe(os.Args[2:]))
	}
	os.Exit(m.Run())
}

// benchTestServe is `herald serve` with its flags, until SIGTERM.
func benchTestServe(args []string) int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	flags := app.RegisterFlags(fs)
	err := fs.Parse(args)
	var loaded *app.Loaded
	if err == nil {
		loaded, err = app.Load(flags, os.LookupEnv, app.DevCredentials)
	}
	var a *app.App
	if err == nil {
		a, err = app.New(loaded.Config, loaded.Config.NewLogger(os.Stderr))
	}
	if err == nil {
		err = a.Run(ctx)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "serve:", err)
		return 1
	}
	return 0
}

func TestBenchWebhooksFlags(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--messages", "0"}, "--messages 0"},
		{[]string{"--batch", "1001"}, "--batch 1001"},
		{[]string{"--endpoints", "0"}, "--endpoints 0"},
		{[]string{"--deliver-batch", "0"}, "--deliver-batch 0"},
		{[]string{"--parallel", "65"}, "--parallel 65"},
		{[]string{"--phases", "none,fast"}, `unknown phase "fast"`},
		{[]string{"--phases", "none,none"}, "none twice"},
		{[]string{"--server-pprof", "10.0.0.1:6060"}, "--server-pprof 10.0.0.1:6060: want a loopback address"},
		{[]string{"extra"}, `unexpected argument "extra"`},
	} {
		if _, err := parseWebhooksFlags(c.args, &bytes.Buffer{}); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%q: %v, want an error naming %q", c.args, err, c.want)
		}
	}
	o, err := parseWebhooksFlags(nil, &bytes.Buffer{})
	if err != nil || o.messages != 100_000 || o.endpoints != 3 || o.deliverBatch != 100 || strings.Join(o.phases, ",") != strings.Join(whPhases, ",") {
		t.Errorf("defaults %+v, %v", o, err)
	}
	// The generated configuration: endpoints at the receiver, batched
	// only where the phase batches.
	cfg := string(whConfig(o, &whPhase{Endpoints: 1, BatchSize: 100}, "127.0.0.1:9", "k"))
	if !strings.Contains(cfg, "url: http://127.0.0.1:9/e/0\n") || !strings.Contains(cfg, "batch: {size: 100, timeout: 100ms}") || !strings.Contains(cfg, "secret: whsec_") {
		t.Errorf("batched config:\n%s", cfg)
	}
	if strings.Contains(cfg, "parallel:") {
		t.Errorf("parallel set without --parallel:\n%s", cfg)
	}
	o.parallel = 16
	if cfg := string(whConfig(o, &whPhase{Endpoints: 3}, "127.0.0.1:9", "k")); strings.Count(cfg, "    parallel: 16\n") != 3 || strings.Contains(cfg, "batch:") || strings.Contains(cfg, "breaker:") {
		t.Errorf("three endpoints, parallel 16:\n%s", cfg)
	}
	if cfg := string(whConfig(o, &whPhase{Endpoints: 1, Queued: true}, "127.0.0.1:9", "k")); !strings.Contains(cfg, "breaker: {timeout: 1s}") {
		t.Errorf("a queued phase's config keeps the breaker shut:\n%s", cfg)
	}
	if cfg := string(whConfig(o, &whPhase{}, "127.0.0.1:9", "k")); strings.Contains(cfg, "webhooks:") {
		t.Errorf("config without endpoints:\n%s", cfg)
	}
}

// TestBenchWebhooksSmoke runs every phase with a few messages against
// real servers (this binary serving): each delivery phase's receiver
// gets every event once, in as many requests as the batch size implies.
func TestBenchWebhooksSmoke(t *testing.T) {
	t.Parallel()
	const n = 300
	var stdout, stderr bytes.Buffer
	err := Run(context.Background(), []string{"webhooks", "--messages", fmt.Sprint(n), "--publishers", "2", "--batch", "50", "--channels", "3",
		"--deliver-batch", "10", "--herald", os.Args[0], "--quiet"}, func(string) string { return "" }, &stdout, &stderr)
	if err != nil {
		t.Fatalf("%v\nstdout:\n%s\nstderr:\n%s", err, stdout.String(), stderr.String())
	}
	lines := strings.Split(strings.TrimSpace(stdout.String()), "\n")
	var res whResult
	if err := json.Unmarshal([]byte(lines[len(lines)-1]), &res); err != nil {
		t.Fatalf("the report's JSON line: %v\n%s", err, stdout.String())
	}
	if len(res.Phases) != len(whPhases) || res.Messages != n || res.PublishRatio <= 0 || res.PublishRatioUnbatched <= 0 || res.PublishRatioQueued <= 0 {
		t.Fatalf("report %+v", res)
	}
	for i, want := range whPhases {
		p := res.Phases[i]
		if p.Name != want || p.PublishPerSec <= 0 || p.Duplicates != 0 {
			t.Errorf("phase %d: %+v, want %s", i, p, want)
		}
		switch want {
		case "none":
			if p.Endpoints != 0 || p.Received != 0 || p.Requests != 0 {
				t.Errorf("none: %+v", p)
			}
		case "endpoints", "endpoints-unbatched", "endpoints-queued":
			if p.Endpoints != 3 || p.Received > 3*n {
				t.Errorf("%s: %+v", want, p)
			}
		case "unbatched", "unbatched-queued":
			if !p.Complete || p.Received != n || p.Requests != n || p.Lag.Count != n {
				t.Errorf("%s: %+v", want, p)
			}
		case "batched", "batched-queued":
			// A queued phase's requests refused while publishing are not
			// counted: only the accepted ones are.
			if !p.Complete || p.Received != n || p.Requests < n/10 || p.Requests > n || p.BatchSize != 10 || p.Lag.Count != n {
				t.Errorf("%s: %+v", want, p)
			}
		}
		if p.Queued != strings.HasSuffix(want, "-queued") || (p.Queued && p.Complete && (p.DrainedPerSec <= 0 || p.DrainSeconds <= 0)) {
			t.Errorf("%s: queued %v, drain %v s", want, p.Queued, p.DrainSeconds)
		}
	}
	for _, want := range []string{"herald bench webhooks — 300 messages per phase", "delivered", "drained", "ratio"} {
		if !strings.Contains(stdout.String(), want) {
			t.Errorf("the table lacks %q:\n%s", want, stdout.String())
		}
	}
}
