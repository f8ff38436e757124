//go:build unix

package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"slices"
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
	for _, args := range [][]string{{"sync"}, {"sync", "--dsn", "x", "--changes", "150"}, {"sync", "--dsn", "x", "--rows", "65"},
		{"sync", "--dsn", "x", "--server-pprof", "10.0.0.1:6060"}} {
		if err := Run(context.Background(), args, func(string) string { return "" }, &bytes.Buffer{}, &bytes.Buffer{}); err == nil {
			t.Errorf("%q was accepted", args)
		}
	}
}

// TestReadSyncStream: the bench's reader takes each change's transaction
// from its new row, skips notices and id lines of any length, and fails
// a run in which a channel's offsets do not run on by one.
func TestReadSyncStream(t *testing.T) {
	t.Parallel()
	event := func(ch string, off, tx int) string {
		return fmt.Sprintf("id: %s\nevent: changed\ndata: {\"channel\":\"%s\",\"offset\":%d,\"epoch\":\"b3f1c2a0d9e8\",\"id\":\"m_01M92TMD1TV0G1SB8ZM52PT4ZX\",\"event\":\"changed\","+
			"\"data\":{\"changes\":{\"tx\":{\"old\":%d,\"new\":%d}},\"key\":{\"id\":1},\"new\":{\"id\":1,\"tx\":%d,\"version\":2},\"op\":\"update\"},\"time\":\"2026-12-05T10:00:00.000Z\"}\n\n",
			strings.Repeat("A", 70_000), ch, off, tx-1, tx, tx)
	}
	connected := "retry: 2000\n\nevent: herald.connected\ndata: {\"session\":\"s_X\",\"channels\":[]}\n\n"
	cases := []struct {
		name    string
		stream  string
		want    int
		txs     []int
		wantErr string
	}{
		{"in order on two channels", connected + event("a", 1, 1) + event("b", 1, 1) + event("a", 2, 2), 3, []int{1, 1, 2}, ""},
		{"a change lost", connected + event("a", 1, 1) + event("a", 3, 2), 2, nil, "offset 3 where 2 was due"},
		{"a change twice", event("a", 1, 1) + event("a", 1, 1), 2, nil, "offset 1 where 2 was due"},
		{"the stream ends early", event("a", 1, 1), 2, nil, "ended after 1 of 2"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var txs []int
			err := readSyncStream(strings.NewReader(tc.stream), 2, tc.want, func(tx int) error { txs = append(txs, tx); return nil })
			if tc.wantErr == "" {
				if err != nil || !slices.Equal(txs, tc.txs) {
					t.Fatalf("err %v, transactions %v; want %v", err, txs, tc.txs)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("err %v, want one saying %q", err, tc.wantErr)
			}
		})
	}
}
