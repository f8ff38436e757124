package bench

// The sync workload of `herald bench`: row changes from a PostgreSQL
// database to a subscriber. Like the webhooks workload it starts its own
// server (`herald serve` with a generated sync: section pointing at
// --dsn), creates its table (herald_bench_sync, dropped and made again),
// subscribes to the table's channels over SSE with the Go client, and
// commits updates in transactions of 100 rows — so that the database's
// own commit rate is not what is measured — from one writer, either as
// fast as it can (--rate 0) or paced to --rate changes a second. It
// reports the changes/s that reached the subscriber and the latency from
// a transaction's commit returning to each of its events being received.

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/heraldrt/herald/client"
	"github.com/heraldrt/herald/internal/cli"
)

// syncOptions are the flags of `herald bench sync`.
type syncOptions struct {
	dsn        string
	changes    int
	rows       int
	rate       int // changes/s; 0: as fast as the writer commits
	herald     string
	serverCPUs string
	pprofAddr  string
	timeout    time.Duration
	quiet      bool
}

// syncTxRows is how many rows one transaction updates.
const syncTxRows = 100

func parseSyncFlags(args []string, stderr io.Writer) (syncOptions, error) {
	fs := cli.NewFlagSet("sync", "bench sync --dsn URL [--changes N] [--rows R] [--rate N] [--server-cpus LIST] [--server-pprof ADDR] [flags]", stderr)
	var o syncOptions
	fs.StringVar(&o.dsn, "dsn", "", "the PostgreSQL database (wal_level=logical; a role that may create tables, publications and slots)")
	fs.IntVar(&o.changes, "changes", 20_000, "row changes to commit, in transactions of 100")
	fs.IntVar(&o.rows, "rows", 64, "rows (and channels, one subscription: at most 64) the changes spread over")
	fs.IntVar(&o.rate, "rate", 0, "changes a second; 0 commits as fast as it can")
	fs.StringVar(&o.herald, "herald", "", "the herald binary that serves (default this one)")
	fs.StringVar(&o.serverCPUs, "server-cpus", "", "pin the server to these CPUs (taskset -c LIST; Linux)")
	fs.StringVar(&o.pprofAddr, "server-pprof", "", "serve the server's profiler on this loopback address (pprof_addr), such as 127.0.0.1:6060")
	fs.DurationVar(&o.timeout, "timeout", 2*time.Minute, "bound on the run")
	fs.BoolVar(&o.quiet, "quiet", false, "no progress lines on stderr")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	var errs []error
	if o.dsn == "" {
		errs = append(errs, errors.New("--dsn is required: postgres://user:password@127.0.0.1:5432/db"))
	}
	if o.changes < syncTxRows || o.changes%syncTxRows != 0 {
		errs = append(errs, fmt.Errorf("--changes %d: want a multiple of %d", o.changes, syncTxRows))
	}
	if o.rows < 1 || o.rows > 64 {
		errs = append(errs, fmt.Errorf("--rows %d: want 1 to 64 (the channels of one subscription)", o.rows))
	}
	if o.rate < 0 {
		errs = append(errs, fmt.Errorf("--rate %d: must not be negative", o.rate))
	}
	if err := checkServerPprof(o.pprofAddr); err != nil {
		errs = append(errs, err)
	}
	if fs.NArg() > 0 {
		errs = append(errs, fmt.Errorf("unexpected argument %q", fs.Arg(0)))
	}
	if o.herald == "" {
		exe, err := os.Executable()
		if err != nil {
			errs = append(errs, err)
		}
		o.herald = exe
	}
	return o, errors.Join(errs...)
}

// syncResult is the report.
type syncResult struct {
	Workload      string       `json:"workload"`
	Changes       int          `json:"changes"`
	Rows          int          `json:"rows"`
	Rate          int          `json:"rate"`
	Seconds       float64      `json:"seconds"`
	ChangesPerSec float64      `json:"changes_per_sec"`
	Latency       benchLatency `json:"latency"`
}

func runSyncBench(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	o, err := parseSyncFlags(args, stderr)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, o.timeout)
	defer cancel()
	res, err := runSync(ctx, o, stderr)
	if err != nil {
		return err
	}
	line, _ := json.Marshal(res)
	rate := "as fast as the writer commits"
	if o.rate > 0 {
		rate = fmt.Sprintf("paced to %s changes/s", benchNum(float64(o.rate)))
	}
	_, err = fmt.Fprintf(stdout, "herald bench sync — %s row changes over %d rows, transactions of %d, %s\n"+
		"received %s changes/s (%.2f s)\nlatency commit→received %s\n%s\n",
		benchNum(float64(o.changes)), o.rows, syncTxRows, rate, benchNum(res.ChangesPerSec), res.Seconds,
		benchLatencyLine(res.Latency), line)
	return err
}

func runSync(ctx context.Context, o syncOptions, stderr io.Writer) (*syncResult, error) {
	db, err := pgconn.Connect(ctx, o.dsn)
	if err != nil {
		return nil, fmt.Errorf("connect to --dsn: %w", err)
	}
	defer db.Close(context.Background())
	values := make([]string, o.rows)
	for i := range values {
		values[i] = fmt.Sprintf("(%d, 0, 0)", i+1)
	}
	setup := `DROP TABLE IF EXISTS herald_bench_sync;
		CREATE TABLE herald_bench_sync (id int PRIMARY KEY, version int NOT NULL, tx int NOT NULL);
		ALTER TABLE herald_bench_sync REPLICA IDENTITY FULL;
		INSERT INTO herald_bench_sync VALUES ` + strings.Join(values, ", ")
	if _, err := db.Exec(ctx, setup).ReadAll(); err != nil {
		return nil, fmt.Errorf("create the bench table: %w", err)
	}
	slot := "herald_bench_" + strings.ToLower(whRandom("", 6))
	slot = strings.Map(func(r rune) rune {
		if (r >= 'a' && r <= 'z') || (r >= '0' && r <= '9') {
			return r
		}
		return '_'
	}, slot)
	defer func() {
		// The slot would hold the database's log forever: drop it (the
		// server has stopped, so it is not in use).
		_, _ = db.Exec(context.Background(), fmt.Sprintf("SELECT pg_drop_replication_slot('%s'); DROP PUBLICATION IF EXISTS %s", slot, slot)).ReadAll()
	}()
	key := whRandom("bench-", 18)
	cfg := fmt.Sprintf("api_key: %q\nshutdown_timeout: 5s\nlog: {level: warn}\nsync:\n  postgres:\n    dsn: %q\n    publication: %s\n    slot: %s\n"+
		"  tables:\n    - table: herald_bench_sync\n      on: [update]\n      publish:\n        - channel: \"bench_sync_{id}\"\n          event: changed\n",
		key, o.dsn, slot, slot)
	if o.pprofAddr != "" {
		cfg += fmt.Sprintf("pprof_addr: %q\n", o.pprofAddr)
	}
	srv, err := startWhServer(ctx, whOptions{herald: o.herald, serverCPUs: o.serverCPUs}, []byte(cfg), stderr)
	if err != nil {
		return nil, err
	}
	defer srv.stop()
	c, err := client.New(srv.base, client.Options{Token: key, HTTPClient: &http.Client{Timeout: time.Minute}})
	if err != nil {
		return nil, err
	}
	if err := waitSyncStreaming(ctx, c); err != nil {
		return nil, err
	}
	stream, err := openSyncStream(ctx, srv.base, key, o.rows)
	if err != nil {
		return nil, err
	}
	defer stream.Close()

	txs := o.changes / syncTxRows
	// commits[tx] is when transaction tx's commit returned, in Unix
	// nanoseconds: written by the writer, read by the reader.
	commits := make([]atomic.Int64, txs)
	got := make(chan time.Time, 1)
	readErr := make(chan error, 1)
	hist := newBenchHist()
	go func() { // the reader: owned by this function, which closes its stream on return
		defer close(got)
		err := readSyncStream(stream, o.rows, o.changes, func(tx int) error {
			if tx < 1 || tx > txs {
				return fmt.Errorf("an event of transaction %d, which the bench did not make", tx)
			}
			hist.record(time.Now().UnixNano() - commits[tx-1].Load())
			return nil
		})
		if err != nil {
			readErr <- err
			return
		}
		got <- time.Now()
	}()
	start := time.Now()
	for tx := range txs {
		if o.rate > 0 {
			if wait := time.Until(start.Add(time.Duration(tx*syncTxRows) * time.Second / time.Duration(o.rate))); wait > 0 {
				time.Sleep(wait) // pacing the writer
			}
		}
		var q strings.Builder
		q.WriteString("BEGIN;")
		for i := range syncTxRows {
			fmt.Fprintf(&q, "UPDATE herald_bench_sync SET version = version + 1, tx = %d WHERE id = %d;", tx+1, (tx*syncTxRows+i)%o.rows+1)
		}
		q.WriteString("COMMIT;")
		// Stored before the commit is sent and again once it returned: an
		// event that outruns the answer is timed from the request.
		commits[tx].Store(time.Now().UnixNano())
		if _, err := db.Exec(ctx, q.String()).ReadAll(); err != nil {
			return nil, fmt.Errorf("update: %w", err)
		}
		commits[tx].Store(time.Now().UnixNano())
	}
	var end time.Time
	select {
	case end = <-got:
	case err := <-readErr:
		return nil, err
	case <-ctx.Done():
		return nil, fmt.Errorf("the subscriber had not received every change when --timeout passed: %w", ctx.Err())
	}
	secs := end.Sub(start).Seconds()
	return &syncResult{Workload: "sync", Changes: o.changes, Rows: o.rows, Rate: o.rate, Seconds: round3(secs),
		ChangesPerSec: math.Round(float64(o.changes) / secs), Latency: hist.summary()}, nil
}

// waitSyncStreaming waits until GET /api/sync says the source streams.
func waitSyncStreaming(ctx context.Context, c *client.Client) error {
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		var st struct {
			Postgres *struct {
				State     string `json:"state"`
				LastError string `json:"last_error"`
			} `json:"postgres"`
		}
		if err := c.Call(ctx, http.MethodGet, "/api/sync", nil, nil, &st); err == nil && st.Postgres != nil && st.Postgres.State == "streaming" {
			return nil
		}
		select {
		case <-tick.C:
		case <-ctx.Done():
			return fmt.Errorf("the server's sync source never streamed: %w", ctx.Err())
		}
	}
}

// openSyncStream opens the SSE stream of the bench table's channels. The
// bench reads it with a plain line reader rather than the Go client, so
// that the subscriber's side costs little of the core it shares with
// PostgreSQL: what is measured is the server.
func openSyncStream(ctx context.Context, base, key string, rows int) (io.ReadCloser, error) {
	q := make(url.Values)
	for i := range rows {
		q.Add("channel", fmt.Sprintf("bench_sync_%d", i+1))
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/sse?"+q.Encode(), nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+key)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("subscribe: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<10))
		resp.Body.Close()
		return nil, fmt.Errorf("subscribe: %s: %s", resp.Status, body)
	}
	return resp.Body, nil
}

// The new row's tx column: the data's keys are sorted (changes, key, new,
// old…), so the row is found by its first column before its tx.
var benchKeyNewTx = []byte(`"new":{"id":`)

// readSyncStream reads SSE data lines until it has seen want changes,
// calling each with the transaction its new row names. Every channel's
// offsets must run 1, 2, 3…: a change lost, repeated or out of order
// fails the run.
func readSyncStream(r io.Reader, rows, want int, each func(tx int) error) error {
	br := bufio.NewReaderSize(r, 64<<10)
	next := make(map[string]uint64, rows) // channel → the offset expected next
	for n := 0; n < want; {
		line, err := br.ReadSlice('\n')
		if errors.Is(err, bufio.ErrBufferFull) {
			// An id line (every channel's position) longer than the
			// buffer: skip the rest of it.
			for errors.Is(err, bufio.ErrBufferFull) {
				_, err = br.ReadSlice('\n')
			}
			continue
		}
		if err != nil {
			return fmt.Errorf("the stream ended after %d of %d changes: %w", n, want, err)
		}
		if !bytes.HasPrefix(line, []byte("data: ")) {
			continue
		}
		e, p, ok := benchNextEnvelope(line, len("data: "))
		if !ok || e.offset == 0 {
			continue // a notice (herald.connected)
		}
		if exp := max(next[string(e.channel)], 1); e.offset != exp {
			return fmt.Errorf("channel %s: offset %d where %d was due (lost, repeated or reordered)", e.channel, e.offset, exp)
		}
		next[string(e.channel)] = e.offset + 1
		tx, k := uint64(0), 0
		if i := bytes.Index(line[p:], benchKeyNewTx); i >= 0 {
			if j := bytes.Index(line[p+i:], []byte(`,"tx":`)); j >= 0 {
				tx, k = benchParseUint(line[p+i+j+len(`,"tx":`):])
			}
		}
		if k == 0 {
			return fmt.Errorf("an event the bench did not make: %s", line)
		}
		if err := each(int(tx)); err != nil {
			return err
		}
		n++
	}
	return nil
}
