package datasync

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/heraldrt/herald/server"
)

// Source streams a PostgreSQL database's changes over logical
// replication (pgoutput) through the sync rules into the core. It
// confirms a WAL position to the database only once every event of the
// transactions before it is durable, and publishes each event
// idempotently on its change's WAL position and its place in the rule, so
// that after a restart of either side the changes Postgres sends again
// publish nothing twice.
//
// Goroutines: one, the replication loop, started by Start and ended by
// Stop; it reconnects with backoff (1 s doubling to 30 s) while the
// database is unreachable.
type Source struct {
	rules       *Rules
	dsn         string
	publication string
	slot        string
	srv         *server.Server
	logger      *slog.Logger

	cancel context.CancelFunc
	done   chan struct{}

	metrics *sourceMetrics

	mu sync.Mutex // guards st
	st SourceStatus
}

// SourceStatus is what GET /api/sync shows of the source.
type SourceStatus struct {
	// State is connecting, streaming, degraded (the last attempt failed:
	// LastError says why) or, on a cluster node that does not hold the
	// sync lease, standby (another node streams).
	State     string `json:"state"`
	LastError string `json:"last_error,omitempty"`
	// Confirmed is the WAL position confirmed to the database.
	Confirmed string `json:"confirmed_lsn,omitempty"`
	// Changes and Events count what was published since the start.
	Changes int64 `json:"changes"`
	Events  int64 `json:"events"`
	// SlotCreated, set when this process created the replication slot
	// (a first start, or a slot that had been dropped), is the time and
	// WAL position it starts at: nothing committed before it is streamed.
	SlotCreated string `json:"slot_created,omitempty"`
}

// NewSource returns a source for dsn, with publication and slot (default
// "herald"), publishing through srv.
func NewSource(rules *Rules, dsn, publication, slot string, srv *server.Server, logger *slog.Logger) *Source {
	if publication == "" {
		publication = "herald"
	}
	if slot == "" {
		slot = "herald"
	}
	if logger == nil {
		logger = slog.Default()
	}
	s := &Source{rules: rules, dsn: dsn, publication: publication, slot: slot, srv: srv, logger: logger,
		st: SourceStatus{State: "connecting"}}
	s.metrics = newSourceMetrics(s)
	return s
}

// Healthy returns nil while the source streams, and why it does not
// otherwise: GET /readyz reports it as degraded.
func (s *Source) Healthy() error {
	st := s.Status()
	switch st.State {
	case "streaming", stateStandby:
		return nil
	case "degraded":
		return fmt.Errorf("postgres: %s", st.LastError)
	}
	return fmt.Errorf("postgres: %s", st.State)
}

// Status returns the source's state.
func (s *Source) Status() SourceStatus {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.st
}

func (s *Source) setStatus(f func(*SourceStatus)) {
	s.mu.Lock()
	f(&s.st)
	s.mu.Unlock()
}

// Start runs the replication loop until Stop.
func (s *Source) Start() {
	ctx, cancel := context.WithCancel(context.Background())
	s.cancel, s.done = cancel, make(chan struct{})
	go func() {
		defer close(s.done)
		s.run(ctx)
	}()
}

// stateStandby is the state of a source that waits for its turn.
const stateStandby = "standby"

// Standby marks the source as waiting for Run: on a cluster only the node
// holding the sync lease streams (a replication slot takes one reader).
func (s *Source) Standby() {
	s.setStatus(func(st *SourceStatus) { *st = SourceStatus{State: stateStandby} })
}

// Run streams until ctx ends, on the caller's goroutine, then goes back to
// standby: a cluster node's term of the sync lease. What was not
// confirmed is sent again in the next term, here or on another node.
func (s *Source) Run(ctx context.Context) {
	s.setStatus(func(st *SourceStatus) { st.State, st.LastError = "connecting", "" })
	s.run(ctx)
	s.Standby()
}

// Stop ends the replication loop and waits for it.
func (s *Source) Stop() {
	if s.cancel == nil {
		return
	}
	s.cancel()
	<-s.done
}

func (s *Source) run(ctx context.Context) {
	wait := time.Second
	for {
		err := s.stream(ctx)
		if ctx.Err() != nil {
			return
		}
		s.setStatus(func(st *SourceStatus) { st.State, st.LastError = "degraded", err.Error() })
		s.metrics.errors.WithLabelValues("connection").Inc()
		s.logger.Warn("sync: postgres: replication stopped; retrying", "in", wait, "err", err)
		select {
		case <-time.After(wait):
		case <-ctx.Done():
			return
		}
		wait = min(2*wait, 30*time.Second)
	}
}

// setup creates the publication (for the rules' tables) and the slot when
// they are missing.
func (s *Source) setup(ctx context.Context) error {
	conn, err := pgconn.Connect(ctx, s.dsn)
	if err != nil {
		return fmt.Errorf("connect: %w", err)
	}
	defer conn.Close(context.Background())
	if err := s.checkSchema(ctx, conn); err != nil {
		return err
	}
	var tables []string
	for _, t := range s.rules.Tables() {
		schema, name, _ := strings.Cut(t.Name, ".")
		tables = append(tables, quoteIdent(schema)+"."+quoteIdent(name))
	}
	res, err := conn.Exec(ctx, "SELECT 1 FROM pg_publication WHERE pubname = "+quoteLiteral(s.publication)).ReadAll()
	if err != nil {
		return fmt.Errorf("look up publication %s: %w", s.publication, err)
	}
	if len(res) == 0 || len(res[0].Rows) == 0 {
		q := fmt.Sprintf("CREATE PUBLICATION %s FOR TABLE %s", quoteIdent(s.publication), strings.Join(tables, ", "))
		if _, err := conn.Exec(ctx, q).ReadAll(); err != nil {
			return fmt.Errorf("create publication %s: %w", s.publication, err)
		}
	}
	res, err = conn.Exec(ctx, "SELECT 1 FROM pg_replication_slots WHERE slot_name = "+quoteLiteral(s.slot)).ReadAll()
	if err != nil {
		return fmt.Errorf("look up slot %s: %w", s.slot, err)
	}
	if len(res) == 0 || len(res[0].Rows) == 0 {
		q := fmt.Sprintf("SELECT lsn FROM pg_create_logical_replication_slot(%s, 'pgoutput')", quoteLiteral(s.slot))
		res, err := conn.Exec(ctx, q).ReadAll()
		if err != nil {
			return fmt.Errorf("create replication slot %s: %w", s.slot, err)
		}
		lsn := "?"
		if len(res) > 0 && len(res[0].Rows) > 0 && len(res[0].Rows[0]) > 0 {
			lsn = string(res[0].Rows[0][0])
		}
		// A new slot starts at the database's current position: what
		// changed before it (a first start, or a slot that was dropped)
		// is not sent.
		created := time.Now().UTC().Format(time.RFC3339) + " at " + lsn
		s.setStatus(func(st *SourceStatus) { st.SlotCreated = created })
		s.logger.Warn("sync: postgres: created the replication slot; changes from now on are published, earlier ones are not", "slot", s.slot, "lsn", lsn)
	}
	return nil
}

// checkSchema checks the rules against the database: every table exists,
// and every column a rule names (placeholders, key, omit) is one of its
// columns. A mistake is reported (degraded, with the message) until the
// configuration or the database is fixed.
func (s *Source) checkSchema(ctx context.Context, conn *pgconn.PgConn) error {
	var problems []string
	for _, t := range s.rules.Tables() {
		schema, name, _ := strings.Cut(t.Name, ".")
		q := fmt.Sprintf("SELECT column_name FROM information_schema.columns WHERE table_schema = %s AND table_name = %s",
			quoteLiteral(schema), quoteLiteral(name))
		res, err := conn.Exec(ctx, q).ReadAll()
		if err != nil {
			return fmt.Errorf("read the columns of %s: %w", t.Name, err)
		}
		cols := map[string]bool{}
		for _, row := range res[0].Rows {
			cols[string(row[0])] = true
		}
		if len(cols) == 0 {
			problems = append(problems, fmt.Sprintf("table %s does not exist (or this role cannot see it)", t.Name))
			continue
		}
		for _, col := range t.columns() {
			if !cols[col] {
				problems = append(problems, fmt.Sprintf("%s has no column %q (named in its sync rule)", t.Name, col))
			}
		}
	}
	if len(problems) > 0 {
		return fmt.Errorf("the sync rules do not match the database: %s", strings.Join(problems, "; "))
	}
	return nil
}

// stream replicates until an error or ctx's end.
func (s *Source) stream(ctx context.Context) error {
	if err := s.setup(ctx); err != nil {
		return err
	}
	conn, err := pgconn.Connect(ctx, withReplication(s.dsn))
	if err != nil {
		return fmt.Errorf("connect for replication: %w", err)
	}
	defer conn.Close(context.Background())
	err = pglogrepl.StartReplication(ctx, conn, s.slot, 0, pglogrepl.StartReplicationOptions{
		PluginArgs: []string{"proto_version '1'", "publication_names " + quoteLiteral(s.publication)}})
	if err != nil {
		return fmt.Errorf("start replication: %w", err)
	}
	s.setStatus(func(st *SourceStatus) { st.State, st.LastError = "streaming", "" })
	s.logger.Info("sync: postgres: streaming", "slot", s.slot, "publication", s.publication)

	relations := map[uint32]*pglogrepl.RelationMessage{}
	var confirmed pglogrepl.LSN
	var pending []pendingEvent // the transaction's events, published at its commit
	var changes int64
	nextStatus := time.Now().Add(10 * time.Second)
	report := func() error {
		nextStatus = time.Now().Add(10 * time.Second)
		return pglogrepl.SendStandbyStatusUpdate(ctx, conn, pglogrepl.StandbyStatusUpdate{
			WALWritePosition: confirmed, WALFlushPosition: confirmed, WALApplyPosition: confirmed})
	}
	for {
		if time.Now().After(nextStatus) {
			if err := report(); err != nil {
				return fmt.Errorf("send status: %w", err)
			}
		}
		rctx, cancel := context.WithDeadline(ctx, nextStatus)
		raw, err := conn.ReceiveMessage(rctx)
		cancel()
		if err != nil {
			if pgconn.Timeout(err) && ctx.Err() == nil {
				continue
			}
			return fmt.Errorf("receive: %w", err)
		}
		if e, ok := raw.(*pgproto3.ErrorResponse); ok {
			return fmt.Errorf("the database: %s", e.Message)
		}
		msg, ok := raw.(*pgproto3.CopyData)
		if !ok || len(msg.Data) == 0 {
			continue
		}
		switch msg.Data[0] {
		case pglogrepl.PrimaryKeepaliveMessageByteID:
			ka, err := pglogrepl.ParsePrimaryKeepaliveMessage(msg.Data[1:])
			if err != nil {
				return fmt.Errorf("keepalive: %w", err)
			}
			s.metrics.sawWAL(uint64(ka.ServerWALEnd))
			if ka.ReplyRequested {
				nextStatus = time.Time{}
			}
		case pglogrepl.XLogDataByteID:
			xld, err := pglogrepl.ParseXLogData(msg.Data[1:])
			if err != nil {
				return fmt.Errorf("xlog data: %w", err)
			}
			s.metrics.sawWAL(uint64(xld.ServerWALEnd))
			lm, err := pglogrepl.Parse(xld.WALData)
			if err != nil {
				return fmt.Errorf("decode: %w", err)
			}
			switch m := lm.(type) {
			case *pglogrepl.RelationMessage:
				relations[m.RelationID] = m
			case *pglogrepl.BeginMessage:
				pending = pending[:0]
			case *pglogrepl.InsertMessage, *pglogrepl.UpdateMessage, *pglogrepl.DeleteMessage:
				c, err := toChange(relations, lm)
				if err != nil {
					return err
				}
				evs, err := s.rules.Events(c)
				if errors.Is(err, ErrNoRule) {
					continue // a table of the publication no rule names
				}
				if err != nil {
					s.metrics.errors.WithLabelValues("unmapped").Inc()
					s.logger.Error("sync: postgres: a change maps to no event", "table", c.Table, "op", c.Op, "lsn", xld.WALStart, "err", err)
					continue
				}
				changes++
				table := s.rules.Table(c.Table).Name
				s.metrics.changes.WithLabelValues(table).Inc()
				s.metrics.events.WithLabelValues(table).Add(float64(len(evs)))
				for i, ev := range evs {
					pending = append(pending, pendingEvent{ev: ev, key: fmt.Sprintf("pg:%s:%d", xld.WALStart, i)})
				}
			case *pglogrepl.CommitMessage:
				if err := s.publish(ctx, pending); err != nil {
					return err
				}
				n := int64(len(pending))
				pending = pending[:0]
				confirmed = m.TransactionEndLSN
				s.metrics.committed(uint64(confirmed), m.CommitTime)
				s.setStatus(func(st *SourceStatus) {
					st.Confirmed, st.Changes, st.Events = confirmed.String(), st.Changes+changes, st.Events+n
				})
				changes = 0
				if err := report(); err != nil {
					return fmt.Errorf("send status: %w", err)
				}
			}
		}
	}
}

// pendingEvent is an event of the transaction being read, with its
// idempotency key.
type pendingEvent struct {
	ev  Event
	key string
}

// publish makes a transaction's events durable, in order, a core batch at
// a time; a repeat after a restart is answered as a duplicate.
func (s *Source) publish(ctx context.Context, events []pendingEvent) error {
	system := server.Identity{System: true}
	for len(events) > 0 {
		n := min(len(events), s.srv.Config().Limits.MaxBatchMessages)
		reqs := make([]server.PublishRequest, n)
		for i, p := range events[:n] {
			reqs[i] = server.PublishRequest{Channel: p.ev.Channel, Event: p.ev.Event, Data: p.ev.Data, IdempotencyKey: p.key}
		}
		out, err := s.srv.PublishBatch(ctx, system, reqs)
		if err != nil {
			return fmt.Errorf("publish: %w", err)
		}
		for i, o := range out {
			if o.Err != nil {
				// A row that makes a bad channel name cannot be published;
				// it is logged and skipped so that the stream goes on.
				s.metrics.errors.WithLabelValues("refused").Inc()
				s.logger.Error("sync: postgres: an event was refused", "channel", reqs[i].Channel, "event", reqs[i].Event, "err", o.Err)
			}
		}
		events = events[n:]
	}
	return nil
}

// toChange turns a decoded insert, update or delete into a Change, with
// the relation's key columns and the values as JSON.
func toChange(relations map[uint32]*pglogrepl.RelationMessage, m pglogrepl.Message) (Change, error) {
	var rel uint32
	var op string
	var oldT, newT *pglogrepl.TupleData
	switch m := m.(type) {
	case *pglogrepl.InsertMessage:
		rel, op, newT = m.RelationID, OpInsert, m.Tuple
	case *pglogrepl.UpdateMessage:
		rel, op, newT = m.RelationID, OpUpdate, m.NewTuple
		if m.OldTupleType == pglogrepl.UpdateMessageTupleTypeOld {
			oldT = m.OldTuple // REPLICA IDENTITY FULL: the whole old row
		}
	case *pglogrepl.DeleteMessage:
		rel, op, oldT = m.RelationID, OpDelete, m.OldTuple
	}
	r, ok := relations[rel]
	if !ok {
		return Change{}, fmt.Errorf("sync: postgres: a change of relation %d before its description", rel)
	}
	// The key is the rule's (default id): with REPLICA IDENTITY FULL the
	// relation marks every column as its identity.
	c := Change{Table: r.Namespace + "." + r.RelationName, Op: op}
	c.Old, c.New = tupleRow(r, oldT), tupleRow(r, newT)
	return c, nil
}

// tupleRow returns a tuple's columns as JSON values (nil for no tuple).
// An unchanged TOASTed value (not sent) is left out.
func tupleRow(r *pglogrepl.RelationMessage, t *pglogrepl.TupleData) map[string]json.RawMessage {
	if t == nil {
		return nil
	}
	row := make(map[string]json.RawMessage, len(t.Columns))
	for i, c := range t.Columns {
		if i >= len(r.Columns) {
			break
		}
		switch c.DataType {
		case pglogrepl.TupleDataTypeNull:
			row[r.Columns[i].Name] = json.RawMessage("null")
		case pglogrepl.TupleDataTypeText:
			row[r.Columns[i].Name] = textValue(r.Columns[i].DataType, string(c.Data))
		}
	}
	return row
}

// Type OIDs whose text is JSON as it is, or becomes a JSON number or
// boolean.
const (
	oidBool    = 16
	oidInt8    = 20
	oidInt2    = 21
	oidInt4    = 23
	oidJSON    = 114
	oidFloat4  = 700
	oidFloat8  = 701
	oidNumeric = 1700
	oidJSONB   = 3802
)

// textValue turns a column's text into JSON: numbers and booleans as
// such, json and jsonb as they are, anything else as a string.
func textValue(oid uint32, s string) json.RawMessage {
	switch oid {
	case oidBool:
		return json.RawMessage(strconv.FormatBool(s == "t"))
	case oidInt2, oidInt4, oidInt8:
		return json.RawMessage(s)
	case oidFloat4, oidFloat8, oidNumeric:
		if _, err := strconv.ParseFloat(s, 64); err == nil && !strings.ContainsAny(s, "IN") {
			return json.RawMessage(s) // not NaN or Infinity, which JSON has no number for
		}
	case oidJSON, oidJSONB:
		if json.Valid([]byte(s)) {
			return json.RawMessage(s)
		}
	}
	b, _ := json.Marshal(s) // a string always marshals
	return b
}

func withReplication(dsn string) string {
	if strings.Contains(dsn, "://") {
		if strings.Contains(dsn, "?") {
			return dsn + "&replication=database"
		}
		return dsn + "?replication=database"
	}
	return dsn + " replication=database"
}

func quoteIdent(s string) string   { return `"` + strings.ReplaceAll(s, `"`, `""`) + `"` }
func quoteLiteral(s string) string { return "'" + strings.ReplaceAll(s, "'", "''") + "'" }
