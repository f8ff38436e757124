package datasync

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/heraldrt/herald/server"
)

// Change is one row changed in a table: what the replication source
// decodes, or what POST /api/changes is given.
type Change struct {
	// Table is schema.table (or a table in public).
	Table string
	// Op is insert, update or delete.
	Op string
	// Old and New are the row before and after, column → JSON value. An
	// insert has no Old, a delete no New; Old may be missing for an
	// update when the table's replica identity does not give it.
	Old, New map[string]json.RawMessage
	// Key names the primary-key columns; nil takes the rule's.
	Key []string
}

// Event is a channel event a change becomes.
type Event struct {
	Channel string
	Event   string
	Data    json.RawMessage
}

// ErrNoRule is returned for a change of a table no rule names.
var ErrNoRule = errors.New("datasync: no sync rule for the table")

// Events returns the events a change becomes under its table's rule, in
// the rule's order: none when the rule does not publish the change's
// operation (or an update changed only omitted columns). Every event's
// data carries table, op, key, new and old (where known, without omitted
// columns), changes (each changed column as {"old","new"}; a JSON object
// column diffed one level deep: only its changed keys) and the rule's
// data fields.
func (r *Rules) Events(c Change) ([]Event, error) {
	t := r.Table(c.Table)
	if t == nil {
		return nil, fmt.Errorf("%w %q", ErrNoRule, c.Table)
	}
	if !slices.Contains(Ops(), c.Op) {
		return nil, fmt.Errorf("datasync: op %q: want insert, update or delete", c.Op)
	}
	switch {
	case c.Op == OpInsert && c.New == nil:
		return nil, errors.New("datasync: an insert needs new")
	case c.Op == OpUpdate && c.New == nil:
		return nil, errors.New("datasync: an update needs new")
	case c.Op == OpDelete && c.Old == nil:
		return nil, errors.New("datasync: a delete needs old")
	}
	if !slices.Contains(t.On, c.Op) {
		return nil, nil
	}
	oldRow, newRow := t.strip(c.Old), t.strip(c.New)
	var changes map[string]columnChange
	if c.Op == OpUpdate && oldRow != nil {
		if changes = diff(oldRow, newRow); len(changes) == 0 {
			return nil, nil // only omitted columns changed
		}
	}
	row := newRow
	if c.Op == OpDelete {
		row = oldRow
	}
	keyCols := c.Key
	if len(keyCols) == 0 {
		keyCols = t.Key
	}
	key := make(map[string]json.RawMessage, len(keyCols))
	for _, k := range keyCols {
		v, ok := row[k]
		if !ok {
			return nil, fmt.Errorf("datasync: %s: the row has no key column %q", t.Name, k)
		}
		key[k] = v
	}
	// The fields every event of the change carries, rendered once.
	base := []field{
		{"key", appendRow(nil, key)},
		{"op", appendString(nil, c.Op)},
		{"table", appendString(nil, t.Name)},
	}
	if newRow != nil {
		base = append(base, field{"new", appendRow(nil, newRow)})
	}
	if oldRow != nil {
		base = append(base, field{"old", appendRow(nil, oldRow)})
	}
	if changes != nil {
		base = append(base, field{"changes", appendChanges(nil, changes)})
	}
	out := make([]Event, 0, len(t.Publish))
	for i, p := range t.Publish {
		channel, err := p.Channel.text(row)
		if err != nil {
			return nil, fmt.Errorf("datasync: %s publish[%d] channel %q: %w", t.Name, i, p.Channel.src, err)
		}
		fields := slices.Clone(base)
		for k, tv := range p.Data { // never a key of base: the rule's compile refuses them
			v, err := tv.value(row)
			if err != nil {
				return nil, fmt.Errorf("datasync: %s publish[%d] data.%s: %w", t.Name, i, k, err)
			}
			fields = append(fields, field{k, appendRaw(nil, v)})
		}
		slices.SortFunc(fields, func(a, b field) int { return strings.Compare(a.key, b.key) })
		event := p.Event
		if event == "" {
			event = tableName(t.Name) + "_" + c.Op
		}
		out = append(out, Event{Channel: channel, Event: event, Data: appendObject(nil, fields)})
	}
	return out, nil
}

// tableName is a table's name without its schema.
func tableName(qualified string) string {
	return qualified[strings.LastIndex(qualified, ".")+1:]
}

// strip returns row without the omitted columns (nil for nil).
func (t *Table) strip(row map[string]json.RawMessage) map[string]json.RawMessage {
	if row == nil {
		return nil
	}
	out := make(map[string]json.RawMessage, len(row))
	for k, v := range row {
		if !slices.Contains(t.Omit, k) {
			out[k] = v
		}
	}
	return out
}

// columnChange is one changed column.
type columnChange struct {
	Old json.RawMessage `json:"old"`
	New json.RawMessage `json:"new"`
}

// diff returns the columns whose values differ between old and new (a
// column missing on one side counts as null there). A column holding a
// JSON object on both sides is diffed one level deep: its change lists
// only the keys that differ.
func diff(old, new map[string]json.RawMessage) map[string]columnChange {
	out := map[string]columnChange{}
	if old == nil {
		return out
	}
	for col := range merged(old, new) {
		o, n := orNull(old[col]), orNull(new[col])
		if sameJSON(o, n) {
			continue
		}
		var oo, no map[string]json.RawMessage
		if isObject(o) && isObject(n) && json.Unmarshal(o, &oo) == nil && json.Unmarshal(n, &no) == nil && oo != nil && no != nil {
			d := diff(oo, no)
			oc, nc := map[string]json.RawMessage{}, map[string]json.RawMessage{}
			for k, c := range d {
				oc[k], nc[k] = c.Old, c.New
			}
			o, n = appendRow(nil, oc), appendRow(nil, nc)
		}
		out[col] = columnChange{Old: o, New: n}
	}
	return out
}

func merged(a, b map[string]json.RawMessage) map[string]bool {
	out := make(map[string]bool, len(a)+len(b))
	for k := range a {
		out[k] = true
	}
	for k := range b {
		out[k] = true
	}
	return out
}

func orNull(v json.RawMessage) json.RawMessage {
	if len(bytes.TrimSpace(v)) == 0 {
		return json.RawMessage("null")
	}
	return v
}

// sameJSON compares two JSON values: equal texts, or equal once decoded
// (so key order and spacing do not count).
func sameJSON(a, b json.RawMessage) bool {
	a, b = bytes.TrimSpace(a), bytes.TrimSpace(b)
	if bytes.Equal(a, b) {
		return true
	}
	if plainString(a) && plainString(b) {
		return false // strings without escapes: equal only as texts
	}
	if isNumber(a) && isNumber(b) {
		x, errX := strconv.ParseFloat(string(a), 64)
		y, errY := strconv.ParseFloat(string(b), 64)
		if errX == nil && errY == nil {
			return x == y // as encoding/json compares them: float64
		}
	}
	var x, y any
	if json.Unmarshal(a, &x) != nil || json.Unmarshal(b, &y) != nil {
		return false
	}
	return jsonEqual(x, y)
}

// isObject reports whether a JSON value is an object.
func isObject(v json.RawMessage) bool {
	v = bytes.TrimSpace(v)
	return len(v) > 0 && v[0] == '{'
}

// plainString reports whether a JSON value is a string without escapes.
func plainString(v json.RawMessage) bool {
	return len(v) >= 2 && v[0] == '"' && v[len(v)-1] == '"' && bytes.IndexByte(v, '\\') < 0
}

// isNumber reports whether a JSON value is a number.
func isNumber(v json.RawMessage) bool {
	return len(v) > 0 && (v[0] == '-' || v[0] >= '0' && v[0] <= '9')
}

func jsonEqual(x, y any) bool {
	switch xv := x.(type) {
	case map[string]any:
		yv, ok := y.(map[string]any)
		if !ok || len(xv) != len(yv) {
			return false
		}
		for k, v := range xv {
			w, ok := yv[k]
			if !ok || !jsonEqual(v, w) {
				return false
			}
		}
		return true
	case []any:
		yv, ok := y.([]any)
		if !ok || len(xv) != len(yv) {
			return false
		}
		for i := range xv {
			if !jsonEqual(xv[i], yv[i]) {
				return false
			}
		}
		return true
	}
	return x == y
}

// publishRequests turns events into the core's publish requests, each
// idempotent on key and the event's place (so a retried change publishes
// nothing twice).
func publishRequests(events []Event, key string) []server.PublishRequest {
	out := make([]server.PublishRequest, len(events))
	for i, ev := range events {
		out[i] = server.PublishRequest{Channel: ev.Channel, Event: ev.Event, Data: ev.Data}
		if key != "" {
			out[i].IdempotencyKey = fmt.Sprintf("%s#%d", key, i)
		}
	}
	return out
}
