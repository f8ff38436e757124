package datasync

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
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
	base := map[string]any{"table": t.Name, "op": c.Op, "key": key}
	if newRow != nil {
		base["new"] = newRow
	}
	if oldRow != nil {
		base["old"] = oldRow
	}
	if changes != nil {
		base["changes"] = changes
	}
	out := make([]Event, 0, len(t.Publish))
	for i, p := range t.Publish {
		channel, err := p.Channel.text(row)
		if err != nil {
			return nil, fmt.Errorf("datasync: %s publish[%d] channel %q: %w", t.Name, i, p.Channel.src, err)
		}
		data := maps.Clone(base)
		for k, tv := range p.Data {
			v, err := tv.value(row)
			if err != nil {
				return nil, fmt.Errorf("datasync: %s publish[%d] data.%s: %w", t.Name, i, k, err)
			}
			data[k] = v
		}
		raw, err := json.Marshal(data)
		if err != nil {
			return nil, fmt.Errorf("datasync: %s: %w", t.Name, err)
		}
		event := p.Event
		if event == "" {
			event = tableName(t.Name) + "_" + c.Op
		}
		out = append(out, Event{Channel: channel, Event: event, Data: raw})
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
		if json.Unmarshal(o, &oo) == nil && json.Unmarshal(n, &no) == nil && oo != nil && no != nil {
			d := diff(oo, no)
			oc, nc := map[string]json.RawMessage{}, map[string]json.RawMessage{}
			for k, c := range d {
				oc[k], nc[k] = c.Old, c.New
			}
			o, n = mustJSON(oc), mustJSON(nc)
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
	if bytes.Equal(bytes.TrimSpace(a), bytes.TrimSpace(b)) {
		return true
	}
	var x, y any
	if json.Unmarshal(a, &x) != nil || json.Unmarshal(b, &y) != nil {
		return false
	}
	return jsonEqual(x, y)
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

func mustJSON(v any) json.RawMessage {
	b, err := json.Marshal(v)
	if err != nil {
		panic(fmt.Sprintf("datasync: marshal %T: %v", v, err)) // maps of raw JSON always marshal
	}
	return b
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
