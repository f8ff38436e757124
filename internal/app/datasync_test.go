package app

import (
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/heraldrt/herald/datasync"
)

// TestChangeAPIIsServedWithSyncRules: with sync rules the App serves
// POST /api/changes and GET /api/sync; without them the routes do not
// exist; an unreachable postgres source is reported degraded, never fatal,
// and the App still stops.
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

	if code, body := apiRequest(t, http.MethodGet, "http://"+a.Addr()+"/readyz", ""); code != http.StatusOK || body != "{\"status\":\"ready\"}\n" {
		t.Fatalf("GET /readyz without a source: %d %s", code, body)
	}
	code, body = apiRequest(t, http.MethodGet, "http://"+a.Addr()+"/api/sync", "")
	if code != http.StatusOK || body != "{\"tables\":[\"public.projects\"]}\n" {
		t.Fatalf("GET /api/sync: %d %s", code, body)
	}

	cfg.Sync.Sync.Postgres.DSN = "postgres://herald:s3cret@127.0.0.1:notaport/app"
	if _, err := New(cfg, slog.New(slog.DiscardHandler)); err == nil || !strings.Contains(err.Error(), "sync.postgres.dsn") || strings.Contains(err.Error(), "s3cret") {
		t.Fatalf("a DSN that does not parse: %v, want a refusal naming sync.postgres.dsn, without the password", err)
	}
	cfg.Sync.Sync.Postgres.DSN = "postgres://herald@127.0.0.1:1/app?connect_timeout=1"
	down, err := New(cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		code, body = apiRequest(t, http.MethodGet, "http://"+down.Addr()+"/api/sync", "")
		if code == http.StatusOK && strings.Contains(body, `"state":"degraded"`) && strings.Contains(body, "connect") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("GET /api/sync with the database unreachable: %d %s", code, body)
		}
		time.Sleep(20 * time.Millisecond) // polled: a status, no event
	}
	// Ready, since it serves, but degraded, saying why.
	code, body = apiRequest(t, http.MethodGet, "http://"+down.Addr()+"/readyz", "")
	if code != http.StatusOK || !strings.Contains(body, `"status":"degraded"`) || !strings.Contains(body, `"sync":"postgres: connect`) {
		t.Fatalf("GET /readyz with the database unreachable: %d %s", code, body)
	}
	if err := down.Shutdown(); err != nil {
		t.Fatal(err)
	}
}
