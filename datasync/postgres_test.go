//go:build unix

package datasync

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/heraldrt/herald/internal/pgtest"
	"github.com/heraldrt/herald/server"
	"github.com/heraldrt/herald/store"
)

// history returns a channel's stored messages' events and data.
func history(t *testing.T, srv *server.Server, channel string) []string {
	t.Helper()
	limit := uint64(server.MaxHistoryLimit)
	page, err := srv.History(t.Context(), server.Identity{System: true}, server.HistoryRequest{Channel: channel, Limit: &limit})
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, raw := range page.Messages {
		var m struct {
			Event string          `json:"event"`
			Data  json.RawMessage `json:"data"`
		}
		if err := json.Unmarshal(raw, &m); err != nil {
			t.Fatal(err)
		}
		out = append(out, m.Event+" "+string(m.Data))
	}
	return out
}

func waitHistory(t *testing.T, srv *server.Server, channel string, n int) []string {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		h := history(t, srv, channel)
		if len(h) >= n {
			return h
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s holds %d messages after 30s, want %d: %v", channel, len(h), n, h)
		}
		time.Sleep(20 * time.Millisecond) // polled: the core has no event to await here
	}
}

// openCore opens a core on an in-memory store, shut down when the test
// ends.
func openCore(t *testing.T) *server.Server {
	t.Helper()
	srv, st, err := server.Open(server.Config{APIKey: "datasync-pg-test-key-0123456789",
		Logger: slog.New(slog.NewTextHandler(t.Output(), nil))}, store.Options{InMemory: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Shutdown(); _ = st.Close() })
	return srv
}

// startStreaming starts a source logging to logs and waits until it
// streams.
func startStreaming(t *testing.T, rules *Rules, dsn string, srv *server.Server, logs io.Writer) *Source {
	t.Helper()
	src := NewSource(rules, dsn, "", "", srv, slog.New(slog.NewTextHandler(logs, nil)))
	src.Start()
	deadline := time.Now().Add(30 * time.Second)
	for src.Status().State != "streaming" {
		if time.Now().After(deadline) {
			src.Stop()
			t.Fatalf("the source never streamed: %+v", src.Status())
		}
		time.Sleep(20 * time.Millisecond) // polled: a status, no event
	}
	return src
}

// TestPostgresChangesBecomeEventsOnce: a real PostgreSQL cluster; inserts,
// an update and a delete of projects become the rule's events with their
// rows and changes, an omitted column never shows; the source stopped
// and started again (same slot) publishes nothing twice, and a change
// made while it was stopped arrives once.
func TestPostgresChangesBecomeEventsOnce(t *testing.T) {
	t.Parallel()
	pg := pgtest.Start(t)
	pg.Exec(t, `CREATE TABLE projects (id int PRIMARY KEY, name text NOT NULL, owner_id int NOT NULL,
		password_hash text, settings jsonb, budget numeric, active boolean);
		ALTER TABLE projects REPLICA IDENTITY FULL`)
	rules, _, err := SyncConfig{Tables: []TableRule{{
		Table: "projects", Omit: []string{"password_hash"},
		Publish: []PublishRule{
			{Channel: "project_{id}"},
			{Channel: "user_{owner_id}_notifications", Event: "project_notification", Data: map[string]string{"project_name": "{name}"}},
		},
	}}}.Compile(nil)
	if err != nil {
		t.Fatal(err)
	}
	srv := openCore(t)

	src := startStreaming(t, rules, pg.DSN(), srv, t.Output())
	pg.Exec(t, `INSERT INTO projects VALUES (7, 'Apollo', 3, 'secret', '{"theme":"dark","beta":true}', 1200.50, true)`)
	pg.Exec(t, `UPDATE projects SET name = 'Apollo 2', settings = '{"theme":"dark","beta":false}', password_hash = 'other' WHERE id = 7`)
	pg.Exec(t, `UPDATE projects SET password_hash = 'third' WHERE id = 7`) // only an omitted column: no event
	pg.Exec(t, `DELETE FROM projects WHERE id = 7`)
	got := waitHistory(t, srv, "project_7", 3)
	want := []string{
		`projects_insert {"key":{"id":7},"new":{"active":true,"budget":1200.50,"id":7,"name":"Apollo","owner_id":3,"settings":{"beta":true,"theme":"dark"}},"op":"insert","table":"public.projects"}`,
		`projects_update {"changes":{"name":{"old":"Apollo","new":"Apollo 2"},"settings":{"old":{"beta":true},"new":{"beta":false}}},` +
			`"key":{"id":7},"new":{"active":true,"budget":1200.50,"id":7,"name":"Apollo 2","owner_id":3,"settings":{"beta":false,"theme":"dark"}},` +
			`"old":{"active":true,"budget":1200.50,"id":7,"name":"Apollo","owner_id":3,"settings":{"beta":true,"theme":"dark"}},"op":"update","table":"public.projects"}`,
		`projects_delete {"key":{"id":7},"old":{"active":true,"budget":1200.50,"id":7,"name":"Apollo 2","owner_id":3,"settings":{"beta":false,"theme":"dark"}},"op":"delete","table":"public.projects"}`,
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("project_7:\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if n := len(waitHistory(t, srv, "user_3_notifications", 3)); n != 3 {
		t.Fatalf("user_3_notifications holds %d", n)
	}

	// Stopped and started again: nothing twice; what changed meanwhile
	// arrives once.
	src.Stop()
	pg.Exec(t, `INSERT INTO projects VALUES (8, 'Gemini', 3, NULL, NULL, NULL, false)`)
	src = startStreaming(t, rules, pg.DSN(), srv, t.Output())
	defer src.Stop()
	waitHistory(t, srv, "project_8", 1)
	if h := history(t, srv, "project_7"); len(h) != 3 {
		t.Fatalf("after a restart project_7 holds %d messages, want 3: %v", len(h), h)
	}
	if h := history(t, srv, "user_3_notifications"); len(h) != 4 {
		t.Fatalf("after a restart user_3_notifications holds %d messages, want 4", len(h))
	}
}

// TestPostgresSlotDroppedWhileAway: the slot dropped while Herald was
// stopped is made again at the database's current position, with a
// warning and the status naming when; what was committed while there was
// no slot is not streamed (the README says so), what comes after is, and
// nothing published before comes again.
func TestPostgresSlotDroppedWhileAway(t *testing.T) {
	t.Parallel()
	pg := pgtest.Start(t)
	pg.Exec(t, `CREATE TABLE notes (id int PRIMARY KEY, body text NOT NULL); ALTER TABLE notes REPLICA IDENTITY FULL`)
	rules, _, err := SyncConfig{Tables: []TableRule{{Table: "notes", Publish: []PublishRule{{Channel: "notes"}}}}}.Compile(nil)
	if err != nil {
		t.Fatal(err)
	}
	srv := openCore(t)
	start := func() (*Source, *lockedBuffer) {
		var logs lockedBuffer
		return startStreaming(t, rules, pg.DSN(), srv, &logs), &logs
	}
	src, logs := start()
	if !strings.Contains(logs.String(), "created the replication slot") || src.Status().SlotCreated == "" {
		t.Fatalf("a first start made the slot without saying so: %+v\n%s", src.Status(), logs.String())
	}
	pg.Exec(t, `INSERT INTO notes VALUES (1, 'before')`)
	waitHistory(t, srv, "notes", 1)
	src.Stop()

	pg.Exec(t, `SELECT pg_drop_replication_slot('herald')`)
	pg.Exec(t, `INSERT INTO notes VALUES (2, 'while no slot')`)
	src, logs = start()
	defer src.Stop()
	if !strings.Contains(logs.String(), "level=WARN") || !strings.Contains(logs.String(), "created the replication slot") {
		t.Fatalf("the slot was made again without a warning:\n%s", logs.String())
	}
	if !strings.Contains(src.Status().SlotCreated, " at ") {
		t.Fatalf("status %+v: want when and where the new slot starts", src.Status())
	}
	pg.Exec(t, `INSERT INTO notes VALUES (3, 'after')`)
	got := waitHistory(t, srv, "notes", 2)
	if len(got) != 2 || !strings.Contains(got[0], `"before"`) || !strings.Contains(got[1], `"after"`) {
		t.Fatalf("notes holds %v: want the rows before and after, the one without a slot not streamed", got)
	}
}

// lockedBuffer is a log a test reads while the source writes it.
type lockedBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// TestPostgresSourceReportsRulesTheDatabaseDoesNotMatch: a rule naming a
// table that does not exist, or a column a table does not have, leaves
// the source degraded with a message naming them; it never crashes.
func TestPostgresSourceReportsRulesTheDatabaseDoesNotMatch(t *testing.T) {
	t.Parallel()
	pg := pgtest.Start(t)
	pg.Exec(t, `CREATE TABLE projects (id int PRIMARY KEY, name text)`)
	rules, _, err := SyncConfig{Tables: []TableRule{
		{Table: "projects", Publish: []PublishRule{{Channel: "user_{owner_id}_notifications"}}},
		{Table: "invoices", Publish: []PublishRule{{Channel: "invoice_{id}"}}},
	}}.Compile(nil)
	if err != nil {
		t.Fatal(err)
	}
	srv := openCore(t)
	src := NewSource(rules, pg.DSN(), "", "", srv, slog.New(slog.DiscardHandler))
	src.Start()
	defer src.Stop()
	deadline := time.Now().Add(30 * time.Second)
	for {
		s := src.Status()
		if s.State == "degraded" {
			if !strings.Contains(s.LastError, `public.projects has no column "owner_id"`) || !strings.Contains(s.LastError, "table public.invoices does not exist") {
				t.Fatalf("degraded with %q, want both problems named", s.LastError)
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the source is %+v, want degraded", s)
		}
		time.Sleep(20 * time.Millisecond) // polled: a status, no event
	}
}

// BenchmarkPostgresChanges measures row changes per second from a real
// PostgreSQL cluster into the core's durable log: b.N updates, committed
// in transactions of 100 rows (so the database's own commit rate is not
// what is measured), each becoming one event; and the latency from a
// transaction's commit returning to its last event being durable in
// Herald (reported as p50 and p99 in ms). rate=max commits as fast as it
// can; rate=10000 paces the commits to 10,000 changes a second.
func BenchmarkPostgresChanges(b *testing.B) {
	for _, rate := range []int{0, 10_000} {
		name := "rate=max"
		if rate > 0 {
			name = fmt.Sprintf("rate=%d", rate)
		}
		b.Run(name, func(b *testing.B) { benchPostgresChanges(b, rate) })
	}
}

func benchPostgresChanges(b *testing.B, rate int) {
	const rows, perTx = 1000, 100
	pg := pgtest.Start(b)
	var values []string
	for i := 1; i <= rows; i++ {
		values = append(values, fmt.Sprintf("(%d, 0)", i))
	}
	pg.Exec(b, `CREATE TABLE counters (id int PRIMARY KEY, version int NOT NULL);
		ALTER TABLE counters REPLICA IDENTITY FULL;
		INSERT INTO counters VALUES `+strings.Join(values, ", "))
	rules, _, err := SyncConfig{Tables: []TableRule{{Table: "counters", On: []string{OpUpdate},
		Publish: []PublishRule{{Channel: "counter_{id}", Event: "counted"}}}}}.Compile(nil)
	if err != nil {
		b.Fatal(err)
	}
	srv, st, err := server.Open(server.Config{APIKey: "datasync-bench-key-0123456789", Logger: slog.New(slog.DiscardHandler)},
		store.Options{Dir: b.TempDir(), Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		b.Fatal(err)
	}
	defer func() { srv.Shutdown(); _ = st.Close() }()
	var mu sync.Mutex
	var committed int
	arrived := make(chan struct{}, 1)
	at := map[int]time.Time{} // events committed → when
	if _, err := srv.Observe("bench", func(ev server.Event) {
		mu.Lock()
		committed++
		at[committed] = time.Now()
		mu.Unlock()
		select {
		case arrived <- struct{}{}:
		default:
		}
	}, server.MessageCommitted); err != nil {
		b.Fatal(err)
	}
	src := NewSource(rules, pg.DSN(), "", "", srv, slog.New(slog.DiscardHandler))
	src.Start()
	defer src.Stop()
	for src.Status().State != "streaming" {
		time.Sleep(10 * time.Millisecond) // polled: a status
	}
	conn, err := pgconn.Connect(context.Background(), pg.DSN())
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Close(context.Background())

	txs := (b.N + perTx - 1) / perTx
	commits := make([]time.Time, txs)
	b.ResetTimer()
	start := time.Now()
	for tx := range txs {
		if rate > 0 {
			if wait := time.Until(start.Add(time.Duration(tx*perTx) * time.Second / time.Duration(rate))); wait > 0 {
				time.Sleep(wait) // pacing the writer, not synchronising
			}
		}
		var q strings.Builder
		q.WriteString("BEGIN;")
		for i := range perTx {
			fmt.Fprintf(&q, "UPDATE counters SET version = version + 1 WHERE id = %d;", (tx*perTx+i)%rows+1)
		}
		q.WriteString("COMMIT;")
		if _, err := conn.Exec(context.Background(), q.String()).ReadAll(); err != nil {
			b.Fatal(err)
		}
		commits[tx] = time.Now()
	}
	want := txs * perTx
	for {
		mu.Lock()
		n := committed
		mu.Unlock()
		if n >= want {
			break
		}
		<-arrived
	}
	elapsed := time.Since(start)
	b.StopTimer()
	lat := make([]float64, txs)
	mu.Lock()
	for tx := range txs {
		lat[tx] = float64(at[(tx+1)*perTx].Sub(commits[tx]).Microseconds()) / 1000
	}
	mu.Unlock()
	slices.Sort(lat)
	b.ReportMetric(float64(want)/elapsed.Seconds(), "changes/s")
	b.ReportMetric(lat[len(lat)/2], "p50-ms")
	b.ReportMetric(lat[len(lat)*99/100], "p99-ms")
}

// A cluster node's source stands by until its term: it is ready (not
// degraded) meanwhile, and back on standby once the term ends.
func TestSourceStandsByBetweenTerms(t *testing.T) {
	t.Parallel()
	s := NewSource(nil, "postgres://127.0.0.1:1/none", "", "", nil, nil)
	s.Standby()
	if st := s.Status(); st.State != "standby" || s.Healthy() != nil {
		t.Fatalf("standing by: %+v, healthy %v; want standby and healthy", st, s.Healthy())
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	s.Run(ctx)
	if st := s.Status(); st.State != "standby" {
		t.Fatalf("after a term: %+v, want standby", st)
	}
}
