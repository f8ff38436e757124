package app

import (
	"log/slog"
	"net/http"
	"strings"
	"testing"

	"github.com/heraldrt/herald/datasync"
)

// TestChangeAPIIsServedWithSyncRules: with sync rules the App serves
// POST /api/changes; without them the route does not exist; a postgres
// source, not in this build, is refused at start-up with its key.
func TestChangeAPIIsServedWithSyncRules(t *testing.T) {
	t.Parallel()
	cfg := testConfig()
	cfg.Sync.Sync.Tables = []datasync.TableRule{{Table: "projects", Publish: []datasync.PublishRule{{Channel: "project_{id}"}}}}
	a, err := New(cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer a.Shutdown()
	code, body := apiRequest(t, http.MethodPost, "http://"+a.Addr()+"/api/changes", `{"table":"projects","op":"insert","new":{"id":7,"name":"Apollo"}}`)
	if code != http.StatusOK || !strings.Contains(body, `"channel":"project_7","offset":1`) {
		t.Fatalf("POST /api/changes: %d %s", code, body)
	}

	plain, err := New(testConfig(), slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer plain.Shutdown()
	if code, body := apiRequest(t, http.MethodPost, "http://"+plain.Addr()+"/api/changes", `{}`); code != http.StatusNotFound {
		t.Fatalf("without sync rules: %d %s", code, body)
	}

	cfg.Sync.Sync.Postgres.DSN = "postgres://127.0.0.1/app"
	if _, err := New(cfg, slog.New(slog.DiscardHandler)); err == nil || !strings.Contains(err.Error(), "sync.postgres") {
		t.Fatalf("a postgres source: %v, want a refusal naming sync.postgres", err)
	}
}
