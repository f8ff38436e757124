//go:build unix

package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"strings"
	"testing"

	"github.com/heraldrt/herald/internal/pgtest"
)

// TestBenchSyncSmoke runs the sync workload on a real PostgreSQL cluster
// with this binary serving: every change reaches the subscriber, and the
// report counts them (no rate is asserted).
func TestBenchSyncSmoke(t *testing.T) {
	t.Parallel()
	pg := pgtest.Start(t)
	var stdout, stderr bytes.Buffer
	err := Run(context.Background(), []string{"sync", "--dsn", pg.DSN(), "--changes", "1000", "--rows", "8",
		"--rate", "5000", "--herald", os.Args[0], "--quiet"}, func(string) string { return "" }, &stdout, &stderr)
	if err != nil {
		t.Fatalf("%v\nstdout:\n%s\nstderr:\n%s", err, stdout.String(), stderr.String())
	}
	lines := strings.Split(strings.TrimSpace(stdout.String()), "\n")
	var res syncResult
	if err := json.Unmarshal([]byte(lines[len(lines)-1]), &res); err != nil {
		t.Fatalf("the report's JSON line: %v\n%s", err, stdout.String())
	}
	if res.Changes != 1000 || res.Rows != 8 || res.Rate != 5000 || res.ChangesPerSec <= 0 || res.Latency.Count != 1000 {
		t.Fatalf("report %+v", res)
	}
	for _, args := range [][]string{{"sync"}, {"sync", "--dsn", "x", "--changes", "150"}, {"sync", "--dsn", "x", "--rows", "65"}} {
		if err := Run(context.Background(), args, func(string) string { return "" }, &bytes.Buffer{}, &bytes.Buffer{}); err == nil {
			t.Errorf("%q was accepted", args)
		}
	}
}
