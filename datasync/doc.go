// Package datasync turns database changes into channel events (DESIGN.md
// §6, "Data sync"): sync rules map a table's inserts, updates and deletes
// to events on channels named from the row, each carrying the table, the
// operation, the key, the new and old rows and what changed (Rules.Events).
// Changes come from POST /api/changes (backends that hold both records:
// Xano, n8n, Make, an ORM hook), idempotent on the caller's key, answered
// once the events are durable; the PostgreSQL logical-replication source
// is built on the same rules.
//
// The folder is datasync, not sync as DESIGN.md names it, so that it does
// not shadow the standard library's sync package in the files that import
// both. It is built beside the core and imports server only.
package datasync
