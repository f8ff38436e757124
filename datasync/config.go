package datasync

import (
	"errors"
	"fmt"
	"net/url"
	"os"
	"regexp"
	"slices"
	"strings"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/heraldrt/herald/server"
)

// Config is the sync: section of the configuration file.
type Config struct {
	Sync SyncConfig `yaml:"sync"`
}

// SyncConfig is where changes come from and the rules that turn them
// into channel events.
type SyncConfig struct {
	// Postgres is the logical-replication source; empty when changes only
	// come through POST /api/changes.
	Postgres PostgresConfig `yaml:"postgres"`
	// Tables are the sync rules, one per table.
	Tables []TableRule `yaml:"tables"`
}

// PostgresConfig names the database and the replication objects.
type PostgresConfig struct {
	// DSN is a libpq connection string or URL. ${NAME} in it is replaced
	// by the environment variable NAME, so a password stays out of the
	// file.
	DSN string `yaml:"dsn"`
	// Publication and Slot are created when missing. Default "herald".
	Publication string `yaml:"publication"`
	Slot        string `yaml:"slot"`
}

// TableRule maps one table's changes to channel events.
type TableRule struct {
	// Table is schema.table; a name without a schema is in public.
	Table string `yaml:"table"`
	// On lists the operations that publish: insert, update, delete.
	// Default: all three.
	On []string `yaml:"on"`
	// Key names the primary-key columns, for the change API (the
	// replication source learns them from the database). Default [id].
	Key []string `yaml:"key"`
	// Omit lists columns never published (password_hash): not in new,
	// old, changes, nor a placeholder.
	Omit []string `yaml:"omit"`
	// Publish lists the events each change becomes.
	Publish []PublishRule `yaml:"publish"`
}

// PublishRule is one event a change becomes.
type PublishRule struct {
	// Channel is a channel name with {column} placeholders, filled from
	// the new row (the old row for a delete).
	Channel string `yaml:"channel"`
	// Event is the event name. Default "<table>_<op>" (projects_update).
	Event string `yaml:"event"`
	// Data adds fields to the event's data; a value that is one
	// placeholder ("{id}") is the column's JSON value, any other has its
	// placeholders replaced as text.
	Data map[string]string `yaml:"data"`
}

// The operations a rule reacts to.
const (
	OpInsert = "insert"
	OpUpdate = "update"
	OpDelete = "delete"
)

// Ops lists the operations.
func Ops() []string { return []string{OpInsert, OpUpdate, OpDelete} }

// reserved are the data fields every event carries; a rule's data may
// not set them.
func reserved() []string { return []string{"table", "op", "key", "new", "old", "changes"} }

var (
	tableRE       = regexp.MustCompile(`^[a-z_][a-z0-9_$]{0,62}(\.[a-z_][a-z0-9_$]{0,62})?$`)
	columnRE      = regexp.MustCompile(`^[a-z_][a-z0-9_$]{0,62}$`)
	slotRE        = regexp.MustCompile(`^[a-z0-9_]{1,63}$`)
	placeholderRE = regexp.MustCompile(`\{([^{}]*)\}`)
	envRE         = regexp.MustCompile(`\$\{([A-Za-z_][A-Za-z0-9_]*)\}`)
	eventRE       = regexp.MustCompile(`^[A-Za-z0-9_.:-]{1,64}$`)
)

// Rules are compiled sync rules, by table.
type Rules struct {
	tables map[string]*Table
	order  []string
}

// Table is one table's compiled rule.
type Table struct {
	Name    string // schema.table
	On      []string
	Key     []string
	Omit    []string
	Publish []*Publish
}

// Publish is a compiled publish rule.
type Publish struct {
	Channel template
	Event   string // "" means <table>_<op>
	Data    map[string]template
}

// columns lists every column the rule names: key, omit, placeholders.
func (t *Table) columns() []string {
	out := slices.Concat(t.Key, t.Omit)
	for _, p := range t.Publish {
		out = append(out, p.Channel.columns()...)
		for _, d := range p.Data {
			out = append(out, d.columns()...)
		}
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// Tables returns the configured tables, in configuration order.
func (r *Rules) Tables() []*Table {
	out := make([]*Table, len(r.order))
	for i, name := range r.order {
		out[i] = r.tables[name]
	}
	return out
}

// Table returns the rule of a table (schema.table, or a name in public),
// or nil.
func (r *Rules) Table(name string) *Table {
	if r == nil {
		return nil
	}
	return r.tables[qualify(name)]
}

// qualify puts a table without a schema in public.
func qualify(name string) string {
	if !strings.Contains(name, ".") {
		return "public." + name
	}
	return name
}

// Compile checks the section and returns its rules and its DSN with the
// environment's values put in, or every problem at once, each a
// *server.ConfigError keyed by its setting (sync.tables[1].publish[0].channel)
// so that it is shown with its line. getenv reads the variables the DSN
// names (nil: os.LookupEnv).
func (c SyncConfig) Compile(getenv func(string) (string, bool)) (*Rules, string, error) {
	if getenv == nil {
		getenv = os.LookupEnv
	}
	var errs []error
	bad := func(key, format string, args ...any) {
		errs = append(errs, &server.ConfigError{Keys: []string{"sync." + key}, Err: fmt.Errorf("sync."+key+": "+format, args...)})
	}
	dsn := envRE.ReplaceAllStringFunc(c.Postgres.DSN, func(m string) string {
		name := m[2 : len(m)-1]
		v, ok := getenv(name)
		if !ok {
			bad("postgres.dsn", "the environment variable %s is not set", name)
		}
		return v
	})
	if dsn != "" {
		if _, err := pgconn.ParseConfig(dsn); err != nil {
			// The driver's message may quote the DSN: never its password.
			bad("postgres.dsn", "not a PostgreSQL connection string or URL (postgres://user:password@host:5432/db): %s", redact(err.Error(), dsn))
		}
	}
	for _, f := range []struct{ key, v string }{{"postgres.publication", c.Postgres.Publication}, {"postgres.slot", c.Postgres.Slot}} {
		if f.v != "" && !slotRE.MatchString(f.v) {
			bad(f.key, "%q: want 1 to 63 lower-case letters, digits or _", f.v)
		}
	}
	if dsn != "" && len(c.Tables) == 0 {
		bad("tables", "a postgres source needs at least one table rule")
	}
	r := &Rules{tables: map[string]*Table{}}
	for i, tc := range c.Tables {
		t, problems := compileTable(i, tc)
		errs = append(errs, problems...)
		if t == nil {
			continue
		}
		if _, dup := r.tables[t.Name]; dup {
			bad(fmt.Sprintf("tables[%d].table", i), "%s has a rule already", t.Name)
			continue
		}
		r.tables[t.Name] = t
		r.order = append(r.order, t.Name)
	}
	if len(errs) > 0 {
		return nil, "", errors.Join(errs...)
	}
	return r, dsn, nil
}

func compileTable(i int, c TableRule) (*Table, []error) {
	var errs []error
	bad := func(key, format string, args ...any) {
		k := fmt.Sprintf("tables[%d]", i)
		if key != "" {
			k += "." + key
		}
		errs = append(errs, &server.ConfigError{Keys: []string{"sync." + k}, Err: fmt.Errorf("sync."+k+": "+format, args...)})
	}
	if !tableRE.MatchString(c.Table) {
		bad("table", "table %q: want a lower-case table name, schema.table or table (in public)", c.Table)
	}
	t := &Table{Name: qualify(c.Table), On: c.On, Key: c.Key, Omit: c.Omit}
	if len(t.On) == 0 {
		t.On = Ops()
	}
	for j, op := range c.On {
		if !slices.Contains(Ops(), op) {
			bad(fmt.Sprintf("on[%d]", j), "%q: want insert, update or delete", op)
		}
	}
	if len(t.Key) == 0 {
		t.Key = []string{"id"}
	}
	for j, col := range slices.Concat(t.Key, t.Omit) {
		if !columnRE.MatchString(col) {
			bad("", "column %q (key or omit, #%d): want a lower-case column name", col, j)
		}
	}
	for _, k := range t.Key {
		if slices.Contains(t.Omit, k) {
			bad("omit", "%q is a key column: it cannot be omitted", k)
		}
	}
	if len(c.Publish) == 0 {
		bad("publish", "publish is required: the events a change of %s becomes", c.Table)
	}
	for j, pc := range c.Publish {
		at := fmt.Sprintf("publish[%d]", j)
		p := &Publish{Event: pc.Event, Data: map[string]template{}}
		var err error
		if p.Channel, err = parseTemplate(pc.Channel); err != nil || pc.Channel == "" {
			bad(at+".channel", "channel %q: %v", pc.Channel, orRequired(err))
		}
		for _, col := range p.Channel.columns() {
			if slices.Contains(t.Omit, col) {
				bad(at+".channel", "{%s} is an omitted column", col)
			}
		}
		if pc.Event != "" && (!eventRE.MatchString(pc.Event) || strings.HasPrefix(pc.Event, "herald.")) {
			bad(at+".event", "event %q: want 1 to 64 of A-Z a-z 0-9 _ . : - and no herald. prefix", pc.Event)
		}
		for k, v := range pc.Data {
			if slices.Contains(reserved(), k) {
				bad(at+".data."+k, "%q is a field every event carries (%s)", k, strings.Join(reserved(), ", "))
				continue
			}
			tv, err := parseTemplate(v)
			if err != nil {
				bad(at+".data."+k, "%q: %v", v, err)
				continue
			}
			for _, col := range tv.columns() {
				if slices.Contains(t.Omit, col) {
					bad(at+".data."+k, "{%s} is an omitted column", col)
				}
			}
			p.Data[k] = tv
		}
		t.Publish = append(t.Publish, p)
	}
	if len(errs) > 0 {
		return nil, errs
	}
	return t, nil
}

// redact removes dsn, and any password in it, from msg.
func redact(msg, dsn string) string {
	msg = strings.ReplaceAll(msg, dsn, "…")
	if u, err := url.Parse(dsn); err == nil && u.User != nil {
		if p, ok := u.User.Password(); ok && p != "" {
			msg = strings.ReplaceAll(msg, p, "…")
		}
	}
	return msg
}

func orRequired(err error) error {
	if err == nil {
		return errors.New("required")
	}
	return err
}
