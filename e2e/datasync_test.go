//go:build unix

package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/heraldrt/herald/internal/pgtest"
)

// TestDataSyncFromPostgres: the built binary follows a real PostgreSQL
// cluster. An SSE subscriber of project_7 and one of the owner's
// notifications each get the update's event with exactly the changed
// columns (the omitted one never shows); the rule's on: [update] keeps
// inserts and deletes of projects off the channels, while tasks, whose
// rule publishes inserts and deletes, gets both; GET /api/sync says the
// source is streaming. The same change reported through POST /api/changes
// gives the same data.
func TestDataSyncFromPostgres(t *testing.T) {
	t.Parallel()
	pg := pgtest.Start(t)
	pg.Exec(t, `CREATE TABLE projects (id int PRIMARY KEY, name text, owner_id int, password_hash text, status text);
		ALTER TABLE projects REPLICA IDENTITY FULL;
		CREATE TABLE tasks (id int PRIMARY KEY, project_id int, title text);
		ALTER TABLE tasks REPLICA IDENTITY FULL;
		INSERT INTO projects VALUES (7, 'Apollo', 3, 'x', 'draft')`)
	srv := startServer(t, "--config", writeConfig(t, fmt.Sprintf(`sync:
  postgres:
    dsn: %s
  tables:
    - table: public.projects
      on: [update]
      omit: [password_hash]
      publish:
        - channel: "project_{id}"
          event: project_updated
        - channel: "user_{owner_id}_notifications"
          event: project_notification
          data: {type: project_updated, project_name: "{name}"}
    - table: tasks
      on: [insert, delete]
      publish:
        - channel: "project_{project_id}_tasks"
`, pg.DSN())))

	waitStreaming(t, srv)

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	project, _ := openSSE(t, ctx, srv.url()+"/sse?channel=project_7", nil)
	owner, _ := openSSE(t, ctx, srv.url()+"/sse?channel=user_3_notifications", nil)
	tasks, _ := openSSE(t, ctx, srv.url()+"/sse?channel=project_7_tasks", nil)
	for _, ch := range []<-chan sseEvent{project, owner, tasks} {
		if ev := <-ch; ev.name != "herald.connected" {
			t.Fatalf("first event %+v", ev)
		}
	}
	pg.Exec(t, `INSERT INTO projects VALUES (8, 'Gemini', 3, 'y', 'draft');
		INSERT INTO tasks VALUES (1, 7, 'write');
		UPDATE projects SET name = 'Apollo 2', password_hash = 'z' WHERE id = 7;
		DELETE FROM tasks WHERE id = 1;
		DELETE FROM projects WHERE id = 8`)

	next := func(ch <-chan sseEvent, what string) sseEvent {
		t.Helper()
		select {
		case ev, ok := <-ch:
			if !ok {
				t.Fatalf("%s: the stream ended", what)
			}
			return ev
		case <-ctx.Done():
			t.Fatalf("%s: nothing came", what)
		}
		return sseEvent{}
	}
	type data struct {
		Table       string                     `json:"table"`
		Op          string                     `json:"op"`
		Key         map[string]any             `json:"key"`
		Changes     map[string]json.RawMessage `json:"changes"`
		New         map[string]json.RawMessage `json:"new"`
		Old         map[string]json.RawMessage `json:"old"`
		Type        string                     `json:"type"`
		ProjectName string                     `json:"project_name"`
	}
	decode := func(ev sseEvent) (data, string) {
		var env struct {
			Data json.RawMessage `json:"data"`
		}
		var d data
		if json.Unmarshal([]byte(ev.data), &env) != nil || json.Unmarshal(env.Data, &d) != nil {
			t.Fatalf("event %+v", ev)
		}
		return d, string(env.Data)
	}
	ev := next(project, "project_7")
	d, raw := decode(ev)
	if ev.name != "project_updated" || d.Op != "update" || d.Table != "public.projects" || len(d.Changes) != 1 ||
		string(d.Changes["name"]) != `{"old":"Apollo","new":"Apollo 2"}` || strings.Contains(raw, "password_hash") {
		t.Fatalf("project_7 got %s %s, want the update with exactly the name changed", ev.name, raw)
	}
	ev = next(owner, "user_3_notifications")
	if d, raw := decode(ev); ev.name != "project_notification" || d.Type != "project_updated" || d.ProjectName != "Apollo 2" ||
		len(d.Changes) != 1 || strings.Contains(raw, "password_hash") {
		t.Fatalf("user_3_notifications got %s %s", ev.name, raw)
	}
	if ev := next(tasks, "tasks insert"); ev.name != "tasks_insert" {
		t.Fatalf("project_7_tasks got %+v first, want tasks_insert", ev)
	}
	if ev := next(tasks, "tasks delete"); ev.name != "tasks_delete" {
		t.Fatalf("project_7_tasks got %+v second, want tasks_delete", ev)
	}
	// Nothing for the insert and delete of project 8 (on: [update]): the
	// owner's channel holds the one event.
	_, hist := apiCall(t, "GET", srv.url()+"/api/history?channel=user_3_notifications", apiKey, nil, nil)
	if n := strings.Count(string(hist), `"event":"project_notification"`); n != 1 {
		t.Fatalf("user_3_notifications history: %s, want one event", hist)
	}

	// The metrics count them: the update of projects made two events,
	// the two changes of tasks one each; the source is streaming.
	if v := metric(t, srv.url(), "", "herald_sync_events_total", map[string]string{"table": "public.projects"}); v != 2 {
		t.Fatalf(`herald_sync_events_total{table="public.projects"} = %v, want 2`, v)
	}
	if v := metric(t, srv.url(), "", "herald_sync_changes_total", map[string]string{"table": "public.tasks"}); v != 2 {
		t.Fatalf(`herald_sync_changes_total{table="public.tasks"} = %v, want 2`, v)
	}
	if v := metric(t, srv.url(), "", "herald_sync_state", nil); v != 0 {
		t.Fatalf("herald_sync_state = %v, want 0 (streaming)", v)
	}

	// The change API, given the same rows, gives the same data.
	code, res := apiCall(t, "POST", srv.url()+"/api/changes", apiKey, map[string]any{"table": "projects", "op": "update",
		"old": map[string]any{"id": 7, "name": "Apollo", "owner_id": 3, "password_hash": "x", "status": "draft"},
		"new": map[string]any{"id": 7, "name": "Apollo 2", "owner_id": 3, "password_hash": "z", "status": "draft"}}, nil)
	if code != 200 {
		t.Fatalf("POST /api/changes: %d %s", code, res)
	}
	ev = next(project, "project_7 from the change API")
	if _, raw2 := decode(ev); ev.name != "project_updated" || raw2 != raw {
		t.Fatalf("the change API gave %s\n%s\nthe replication path\n%s", ev.name, raw2, raw)
	}
}

// TestDataSyncExactlyOnceThroughKills: 4 writers make 10,000 updates over
// 100 rows (each raising the row's version by one); Herald is SIGKILLed
// twice mid-stream and restarted, PostgreSQL is restarted once. In the
// end each row's channel holds exactly the versions the database
// committed, 1 to its last, each once, in order.
func TestDataSyncExactlyOnceThroughKills(t *testing.T) {
	t.Parallel()
	const rows, updates, writers = 100, 10_000, 4
	pg := pgtest.Start(t)
	srv := startServer(t, "--config", writeConfig(t, countersSync(t, pg, rows)))

	// The slot exists once the source streams: a change committed before
	// it is not in the slot (the README says so), so the writers wait.
	waitStreaming(t, srv)

	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	var done atomic.Int64
	var wg sync.WaitGroup
	wg.Go(func() { writeCounters(ctx, pg, rows, updates, writers, &done) })
	// Faults while the writers write: two kills of Herald, a restart of
	// PostgreSQL, each once the writers have gone a little further.
	for _, at := range []int64{2000, 5000, 8000} {
		for done.Load() < at && ctx.Err() == nil {
			time.Sleep(10 * time.Millisecond) // waiting on the writers' progress
		}
		switch at {
		case 5000:
			pg.Stop(t)
			pg.Start(t)
		default:
			srv.kill()
			srv.restart()
		}
	}
	wg.Wait()
	if ctx.Err() != nil {
		t.Fatalf("the writers made %d of %d updates in time", done.Load(), updates)
	}
	checkCounters(t, srv.url(), pg, rows, updates)
}

// countersSync creates the counters table with rows rows at version 0 and
// returns the sync: section that publishes each update of a row to its
// channel counter_{id}.
func countersSync(t *testing.T, pg *pgtest.Cluster, rows int) string {
	t.Helper()
	var values []string
	for i := 1; i <= rows; i++ {
		values = append(values, fmt.Sprintf("(%d, 0)", i))
	}
	pg.Exec(t, `CREATE TABLE counters (id int PRIMARY KEY, version int NOT NULL);
		ALTER TABLE counters REPLICA IDENTITY FULL;
		INSERT INTO counters VALUES `+strings.Join(values, ", "))
	return fmt.Sprintf(`sync:
  postgres:
    dsn: %s
  tables:
    - table: counters
      on: [update]
      publish:
        - channel: "counter_{id}"
          event: counted
          data: {version: "{version}"}
`, pg.DSN())
}

// writeCounters makes updates updates over the counters' rows from
// writers connections at once, each raising a row's version by one and
// counted in done once committed; a writer reconnects while PostgreSQL
// restarts. It returns when all are made or ctx ends.
func writeCounters(ctx context.Context, pg *pgtest.Cluster, rows, updates, writers int, done *atomic.Int64) {
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			cc := &counterConn{pg: pg}
			defer cc.close()
			for i := w; i < updates && ctx.Err() == nil; i += writers {
				for ctx.Err() == nil { // retried while PostgreSQL restarts
					err := cc.raise(ctx, i%rows+1)
					if err == nil {
						done.Add(1)
						break
					}
					if errors.Is(err, errNoConnection) {
						time.Sleep(50 * time.Millisecond) // the database is restarting: nothing to await
					}
				}
			}
		})
	}
	wg.Wait()
}

// errNoConnection: PostgreSQL could not be reached (restarting).
var errNoConnection = errors.New("no connection to PostgreSQL")

// counterConn raises counters' versions on one connection, made again
// after PostgreSQL dropped it.
type counterConn struct {
	pg   *pgtest.Cluster
	conn *pgconn.PgConn
}

// raise raises row's version by one: nil once committed; errNoConnection
// when no connection could be made; another error when the update was
// cut (it may have committed or not: the database says which).
func (c *counterConn) raise(ctx context.Context, row int) error {
	if c.conn == nil {
		conn, err := pgconn.Connect(ctx, c.pg.DSN())
		if err != nil {
			return fmt.Errorf("%w: %v", errNoConnection, err)
		}
		c.conn = conn
	}
	q := fmt.Sprintf("UPDATE counters SET version = version + 1 WHERE id = %d", row)
	if _, err := c.conn.Exec(ctx, q).ReadAll(); err != nil {
		c.close()
		return err
	}
	return nil
}

func (c *counterConn) close() {
	if c.conn != nil {
		c.conn.Close(context.Background())
		c.conn = nil
	}
}

// checkCounters checks that each row's channel, read through base, holds
// exactly the versions the database committed, 1 to its last, each once,
// in order (waiting up to 2 minutes for the source to catch up).
func checkCounters(t *testing.T, base string, pg *pgtest.Cluster, rows, updates int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	final := map[int]int{}
	conn, err := pgconn.Connect(ctx, pg.DSN())
	if err != nil {
		t.Fatal(err)
	}
	res, err := conn.Exec(ctx, "SELECT id, version FROM counters").ReadAll()
	conn.Close(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	total := 0
	for _, row := range res[0].Rows {
		id, _ := strconv.Atoi(string(row[0]))
		v, _ := strconv.Atoi(string(row[1]))
		final[id] = v
		total += v
	}
	if total < updates {
		t.Fatalf("the database holds %d updates, want at least %d", total, updates)
	}
	for id := 1; id <= rows; id++ {
		channel := fmt.Sprintf("counter_%d", id)
		var got []int
		deadline := time.Now().Add(2 * time.Minute)
		for {
			got = got[:0]
			_, raw := apiCall(t, "GET", base+"/api/history?limit=1000&channel="+channel, apiKey, nil, nil)
			var page struct {
				Messages []struct {
					Data struct {
						Version int `json:"version"`
					} `json:"data"`
				} `json:"messages"`
			}
			if err := json.Unmarshal(raw, &page); err != nil {
				t.Fatalf("history of %s: %s", channel, raw)
			}
			for _, m := range page.Messages {
				got = append(got, m.Data.Version)
			}
			if len(got) >= final[id] || time.Now().After(deadline) {
				break
			}
			time.Sleep(50 * time.Millisecond) // the source catches up: polled
		}
		if len(got) != final[id] {
			t.Fatalf("%s holds %d events, the database committed %d versions: %v", channel, len(got), final[id], got)
		}
		for i, v := range got {
			if v != i+1 {
				t.Fatalf("%s: event %d has version %d, want %d (each once, in order): %v", channel, i, v, i+1, got)
			}
		}
	}
}

// waitStreaming waits until GET /api/sync says the PostgreSQL source
// streams: its slot exists, so every later commit reaches Herald.
func waitStreaming(t *testing.T, srv *server) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		_, raw := apiCall(t, "GET", srv.url()+"/api/sync", apiKey, nil, nil)
		if strings.Contains(string(raw), `"state":"streaming"`) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("GET /api/sync: %s, want streaming", raw)
		}
		time.Sleep(50 * time.Millisecond) // polled: a status, no event
	}
}
