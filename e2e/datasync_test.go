//go:build unix

package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

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

	deadline := time.Now().Add(30 * time.Second)
	for {
		_, raw := apiCall(t, "GET", srv.url()+"/api/sync", apiKey, nil, nil)
		if strings.Contains(string(raw), `"state":"streaming"`) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("GET /api/sync: %s, want streaming", raw)
		}
		time.Sleep(50 * time.Millisecond) // polled: a status, no event
	}

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
