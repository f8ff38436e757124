package datasync

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
)

// row builds a row from column=JSON pairs.
func row(kv ...string) map[string]json.RawMessage {
	m := map[string]json.RawMessage{}
	for i := 0; i < len(kv); i += 2 {
		m[kv[i]] = json.RawMessage(kv[i+1])
	}
	return m
}

// projects is the seed's rule: project_{id} and the owner's notifications.
func projects(t *testing.T) *Rules {
	t.Helper()
	r, _, err := SyncConfig{Tables: []TableRule{{
		Table: "public.projects", Omit: []string{"password_hash"},
		Publish: []PublishRule{
			{Channel: "project_{id}", Event: "project_updated"},
			{Channel: "user_{owner_id}_notifications", Event: "project_notification",
				Data: map[string]string{"type": "project_updated", "project_name": "{name}", "owner": "{owner_id}"}},
		},
	}, {
		Table: "tasks", On: []string{OpInsert, OpDelete},
		Publish: []PublishRule{{Channel: "project_{project_id}_tasks"}},
	}}}.Compile(nil)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func TestEventsOfAChange(t *testing.T) {
	t.Parallel()
	r := projects(t)
	old := row("id", "7", "name", `"Apollo"`, "owner_id", "3", "status", `"draft"`, "password_hash", `"x"`,
		"settings", `{"theme":"dark","lang":"en","beta":true}`)
	updated := row("id", "7", "name", `"Apollo 2"`, "owner_id", "3", "status", `"draft"`, "password_hash", `"y"`,
		"settings", `{"lang":"en","beta":false,"theme":"dark"}`)
	cases := []struct {
		name   string
		change Change
		want   []string // channel event data
	}{
		{"an update: the changed columns, a JSON column one level deep, no omitted column",
			Change{Table: "projects", Op: OpUpdate, Old: old, New: updated},
			[]string{
				`project_7 project_updated {"changes":{"name":{"old":"Apollo","new":"Apollo 2"},"settings":{"old":{"beta":true},"new":{"beta":false}}},` +
					`"key":{"id":7},"new":{"id":7,"name":"Apollo 2","owner_id":3,"settings":{"lang":"en","beta":false,"theme":"dark"},"status":"draft"},` +
					`"old":{"id":7,"name":"Apollo","owner_id":3,"settings":{"theme":"dark","lang":"en","beta":true},"status":"draft"},"op":"update","table":"public.projects"}`,
				`user_3_notifications project_notification {"changes":{"name":{"old":"Apollo","new":"Apollo 2"},"settings":{"old":{"beta":true},"new":{"beta":false}}},` +
					`"key":{"id":7},"new":{"id":7,"name":"Apollo 2","owner_id":3,"settings":{"lang":"en","beta":false,"theme":"dark"},"status":"draft"},` +
					`"old":{"id":7,"name":"Apollo","owner_id":3,"settings":{"theme":"dark","lang":"en","beta":true},"status":"draft"},"op":"update",` +
					`"owner":3,"project_name":"Apollo 2","table":"public.projects","type":"project_updated"}`,
			}},
		{"an update of an omitted column only: nothing",
			Change{Table: "public.projects", Op: OpUpdate, Old: old, New: row("id", "7", "name", `"Apollo"`, "owner_id", "3", "status", `"draft"`,
				"password_hash", `"z"`, "settings", `{"theme":"dark","lang":"en","beta":true}`)},
			nil},
		{"an update without the old row (no replica identity full): no changes field",
			Change{Table: "projects", Op: OpUpdate, New: row("id", "7", "name", `"A"`, "owner_id", "3")},
			[]string{
				`project_7 project_updated {"key":{"id":7},"new":{"id":7,"name":"A","owner_id":3},"op":"update","table":"public.projects"}`,
				`user_3_notifications project_notification {"key":{"id":7},"new":{"id":7,"name":"A","owner_id":3},"op":"update","owner":3,"project_name":"A","table":"public.projects","type":"project_updated"}`,
			}},
		{"an insert, the default event name",
			Change{Table: "tasks", Op: OpInsert, New: row("id", `"t1"`, "project_id", "7", "title", `"write"`)},
			[]string{`project_7_tasks tasks_insert {"key":{"id":"t1"},"new":{"id":"t1","project_id":7,"title":"write"},"op":"insert","table":"public.tasks"}`}},
		{"a delete names its channel from the old row",
			Change{Table: "tasks", Op: OpDelete, Old: row("id", `"t1"`, "project_id", "8")},
			[]string{`project_8_tasks tasks_delete {"key":{"id":"t1"},"old":{"id":"t1","project_id":8},"op":"delete","table":"public.tasks"}`}},
		{"an operation the rule does not publish",
			Change{Table: "tasks", Op: OpUpdate, Old: row("id", "1"), New: row("id", "1", "project_id", "7")},
			nil},
		{"values equal as JSON are no change: 1 and 1.0, an escaped and a plain string, spacing",
			Change{Table: "projects", Op: OpUpdate, Old: old,
				New: row("id", "7.0", "name", `"\u0041pollo"`, "owner_id", "3", "status", `"draft"`, "password_hash", `"x"`,
					"settings", `{ "theme": "dark", "lang": "en", "beta": true }`)},
			nil},
		{"text with quotes and <, > and &: escaped as JSON needs, not for HTML; raw values compacted",
			Change{Table: "projects", Op: OpUpdate, Old: row("id", "7", "name", `"a"`, "owner_id", "3"),
				New: row("id", "7", "name", `"say \"hi\" <b> & go"`, "owner_id", "3", "note", "[ 1, 2 ]")},
			[]string{
				`project_7 project_updated {"changes":{"name":{"old":"a","new":"say \"hi\" <b> & go"},"note":{"old":null,"new":[1,2]}},` +
					`"key":{"id":7},"new":{"id":7,"name":"say \"hi\" <b> & go","note":[1,2],"owner_id":3},"old":{"id":7,"name":"a","owner_id":3},"op":"update","table":"public.projects"}`,
				`user_3_notifications project_notification {"changes":{"name":{"old":"a","new":"say \"hi\" <b> & go"},"note":{"old":null,"new":[1,2]}},` +
					`"key":{"id":7},"new":{"id":7,"name":"say \"hi\" <b> & go","note":[1,2],"owner_id":3},"old":{"id":7,"name":"a","owner_id":3},"op":"update",` +
					`"owner":3,"project_name":"say \"hi\" <b> & go","table":"public.projects","type":"project_updated"}`,
			}},
		{"a key given with the change",
			Change{Table: "tasks", Op: OpInsert, Key: []string{"project_id", "title"}, New: row("id", `"t2"`, "project_id", "7", "title", `"x"`)},
			[]string{`project_7_tasks tasks_insert {"key":{"project_id":7,"title":"x"},"new":{"id":"t2","project_id":7,"title":"x"},"op":"insert","table":"public.tasks"}`}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			evs, err := r.Events(tc.change)
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, ev := range evs {
				got = append(got, ev.Channel+" "+ev.Event+" "+string(ev.Data))
			}
			if strings.Join(got, "\n") != strings.Join(tc.want, "\n") {
				t.Fatalf("events\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(tc.want, "\n"))
			}
			for _, ev := range evs {
				if strings.Contains(string(ev.Data), "password_hash") {
					t.Fatalf("an omitted column in %s", ev.Data)
				}
			}
		})
	}
}

func TestEventsRefuseChangesTheyCannotMap(t *testing.T) {
	t.Parallel()
	r := projects(t)
	cases := []struct {
		change Change
		want   string
	}{
		{Change{Table: "users", Op: OpInsert, New: row("id", "1")}, `no sync rule for the table "users"`},
		{Change{Table: "projects", Op: "upsert", New: row("id", "1")}, `op "upsert"`},
		{Change{Table: "projects", Op: OpUpdate}, "an update needs new"},
		{Change{Table: "tasks", Op: OpDelete}, "a delete needs old"},
		{Change{Table: "projects", Op: OpInsert, New: row("name", `"x"`, "owner_id", "3")}, `no key column "id"`},
		{Change{Table: "projects", Op: OpInsert, New: row("id", "1", "owner_id", "null")}, `column "owner_id" is null`},
		{Change{Table: "projects", Op: OpInsert, New: row("id", "1", "owner_id", `{"a":1}`)}, `column "owner_id" holds an object`},
	}
	for _, tc := range cases {
		_, err := r.Events(tc.change)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: %v, want an error naming %q", tc.change, err, tc.want)
		}
	}
	if _, err := r.Events(Change{Table: "users", Op: OpInsert}); !errors.Is(err, ErrNoRule) {
		t.Errorf("an unknown table: %v, want ErrNoRule", err)
	}
}

func TestSyncConfigIsCheckedWhole(t *testing.T) {
	t.Parallel()
	good := func() TableRule {
		return TableRule{Table: "projects", Publish: []PublishRule{{Channel: "project_{id}"}}}
	}
	cases := []struct {
		name string
		edit func(*SyncConfig)
		key  string
		want string
	}{
		{"bad table", func(c *SyncConfig) { c.Tables[0].Table = "Projects!" }, "sync.tables[0].table", "want a lower-case table name"},
		{"bad op", func(c *SyncConfig) { c.Tables[0].On = []string{"upsert"} }, "sync.tables[0].on[0]", "want insert, update or delete"},
		{"no publish", func(c *SyncConfig) { c.Tables[0].Publish = nil }, "sync.tables[0].publish", "publish is required"},
		{"no channel", func(c *SyncConfig) { c.Tables[0].Publish[0].Channel = "" }, "sync.tables[0].publish[0].channel", "required"},
		{"bad placeholder", func(c *SyncConfig) { c.Tables[0].Publish[0].Channel = "project_{Id!}" }, "sync.tables[0].publish[0].channel", "names a column"},
		{"unbalanced", func(c *SyncConfig) { c.Tables[0].Publish[0].Channel = "project_{id" }, "sync.tables[0].publish[0].channel", "unbalanced"},
		{"omitted placeholder", func(c *SyncConfig) { c.Tables[0].Omit = []string{"id"}; c.Tables[0].Key = []string{"uid"} }, "sync.tables[0].publish[0].channel", "omitted column"},
		{"omitted key", func(c *SyncConfig) { c.Tables[0].Omit = []string{"id"} }, "sync.tables[0].omit", "key column"},
		{"reserved data", func(c *SyncConfig) { c.Tables[0].Publish[0].Data = map[string]string{"changes": "x"} }, "sync.tables[0].publish[0].data.changes", "every event carries"},
		{"bad event", func(c *SyncConfig) { c.Tables[0].Publish[0].Event = "herald.x" }, "sync.tables[0].publish[0].event", "no herald. prefix"},
		{"twice", func(c *SyncConfig) { c.Tables = append(c.Tables, good()) }, "sync.tables[1].table", "public.projects has a rule already"},
		{"dsn variable", func(c *SyncConfig) { c.Postgres.DSN = "postgres://herald:${NO_SUCH_VAR}@127.0.0.1/app" }, "sync.postgres.dsn", "NO_SUCH_VAR is not set"},
		{"bad slot", func(c *SyncConfig) { c.Postgres.Slot = "Herald-1" }, "sync.postgres.slot", "lower-case letters"},
		{"bad dsn", func(c *SyncConfig) { c.Postgres.DSN = "postgres://herald:s3cret@127.0.0.1:notaport/app" }, "sync.postgres.dsn", "not a PostgreSQL connection string"},
		{"source without tables", func(c *SyncConfig) { c.Postgres.DSN = "postgres://127.0.0.1/app"; c.Tables = nil }, "sync.tables", "at least one table rule"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			c := SyncConfig{Tables: []TableRule{good()}}
			tc.edit(&c)
			_, _, err := c.Compile(func(string) (string, bool) { return "", false })
			if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), tc.key) {
				t.Fatalf("%v, want %s: …%s", err, tc.key, tc.want)
			}
			if strings.Contains(err.Error(), "s3cret") {
				t.Fatalf("the error shows the password: %v", err)
			}
		})
	}
	_, dsn, err := SyncConfig{Postgres: PostgresConfig{DSN: "postgres://herald:${PG_PASS}@127.0.0.1/app"}, Tables: []TableRule{good()}}.
		Compile(func(k string) (string, bool) { return map[string]string{"PG_PASS": "s3cret"}[k], k == "PG_PASS" })
	if err != nil || dsn != "postgres://herald:s3cret@127.0.0.1/app" {
		t.Fatalf("dsn %q, %v", dsn, err)
	}
}
