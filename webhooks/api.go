package webhooks

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strconv"
	"time"

	"github.com/julienschmidt/httprouter"

	"github.com/heraldrt/herald/server"
)

// The API of the webhooks, for the API key (DESIGN §6):
//
//	GET  /api/webhooks                 every endpoint and how it is doing
//	GET  /api/webhooks/{name}/dead     its dead letters, paged (?after=&limit=)
//	POST /api/webhooks/{name}/replay   dead letters, or a time range of stored
//	                                   messages, back into its outbox
//	POST /api/webhooks/{name}/test     a signed test event, sent at once

// EndpointStatus is an endpoint as GET /api/webhooks shows it.
type EndpointStatus struct {
	Name     string   `json:"name"`
	URL      string   `json:"url"`
	Events   []string `json:"events"`
	Channels []string `json:"channels,omitempty"`
	Ordered  bool     `json:"ordered"`
	// Delivering is set on the node that delivers: on a cluster, the one
	// holding the webhooks lease (Breaker, LastSuccess and LastError are
	// that node's; Depth and Dead are the cluster's).
	Delivering bool `json:"delivering"`
	// Breaker is closed, half-open or open; Disabled is set after a 410.
	Breaker  string `json:"breaker"`
	Disabled bool   `json:"disabled"`
	// Depth is how many events wait; Dead how many were given up on.
	Depth       int64      `json:"depth"`
	Dead        int64      `json:"dead"`
	LastSuccess string     `json:"last_success,omitempty"`
	LastError   *LastError `json:"last_error,omitempty"`
}

// LastError is an endpoint's latest failed attempt.
type LastError struct {
	At      string `json:"at"`
	Status  int    `json:"status,omitempty"`
	Message string `json:"message"`
}

// Status returns every endpoint's status, in configuration order.
func (s *Service) Status() []EndpointStatus {
	out := make([]EndpointStatus, 0, len(s.workers))
	for _, w := range s.workers {
		st := w.status()
		e := EndpointStatus{Name: w.ep.Name, URL: w.ep.URLParsed.Redacted(), Events: w.ep.Events,
			Channels: w.ep.Channels, Ordered: w.ep.Ordered, Delivering: s.leading(), Breaker: s.sender.BreakerState(w.ep.Name), Disabled: st.disabled}
		if s.outbox != nil {
			e.Depth, e.Dead, _ = s.outbox.Depth(w.ep.Name)
		}
		if !st.lastSuccess.IsZero() {
			e.LastSuccess = st.lastSuccess.UTC().Format(timestampFormat)
		}
		if !st.lastErrorAt.IsZero() {
			e.LastError = &LastError{At: st.lastErrorAt.UTC().Format(timestampFormat), Status: st.lastStatus, Message: st.lastError}
		}
		out = append(out, e)
	}
	return out
}

// DeadLetter is a dead letter as the API shows it.
type DeadLetter struct {
	Seq    uint64          `json:"seq"`
	Died   string          `json:"died"`
	Reason string          `json:"reason"`
	Event  json.RawMessage `json:"event"`
}

// maxDeadPage bounds a page of dead letters.
const maxDeadPage = 1000

// DeadPage is one page of an endpoint's dead letters.
type DeadPage struct {
	DeadLetters []DeadLetter `json:"dead_letters"`
	// Next is the after of the following page (0 on the last one).
	Next uint64 `json:"next,omitempty"`
}

// Dead returns up to limit (1 to 1,000) dead letters of the endpoint
// after sequence after; another limit is a 400 error.
func (s *Service) Dead(ctx context.Context, name string, after uint64, limit int) (DeadPage, error) {
	w, err := s.worker(name)
	if err != nil {
		return DeadPage{}, err
	}
	if limit < 1 || limit > maxDeadPage {
		return DeadPage{}, server.Invalidf("limit %d: want 1 to %d", limit, maxDeadPage)
	}
	ds, err := s.outbox.ReadDead(ctx, w.ep.Name, after, limit+1)
	if err != nil {
		return DeadPage{}, err
	}
	page := DeadPage{DeadLetters: []DeadLetter{}}
	for i, d := range ds {
		if i == limit {
			page.Next = ds[i-1].Seq
			break
		}
		ev, err := decode(&d.Entry)
		body := json.RawMessage(`null`)
		if err == nil {
			body = mustJSON(wire{ID: ev.ID, Type: ev.Type, Timestamp: ev.Time.UTC().Format(timestampFormat), Data: dataOrNull(ev.Data)})
		}
		page.DeadLetters = append(page.DeadLetters, DeadLetter{Seq: d.Seq, Died: d.Died.UTC().Format(timestampFormat), Reason: d.Reason, Event: body})
	}
	return page, nil
}

// ReplayRequest is the body of POST /api/webhooks/{name}/replay: either
// Dead (queue dead letters again, up to Limit, default all) or From and
// To (queue again the endpoint's messages stored in that time range, from
// what the channels still keep).
type ReplayRequest struct {
	Dead  bool   `json:"dead"`
	Limit int    `json:"limit"`
	From  string `json:"from"`
	To    string `json:"to"`
}

// Replay queues events for the endpoint again and says how many.
func (s *Service) Replay(ctx context.Context, srv *server.Server, name string, req ReplayRequest) (int, error) {
	w, err := s.worker(name)
	if err != nil {
		return 0, err
	}
	switch {
	case req.Dead && (req.From != "" || req.To != ""):
		return 0, server.Invalidf("replay either dead letters (dead) or a time range (from, to), not both")
	case req.Dead:
		return s.replayDead(ctx, w, req.Limit)
	case req.From == "" || req.To == "":
		return 0, server.Invalidf(`replay needs "dead": true, or "from" and "to" (RFC 3339 times)`)
	}
	from, err := time.Parse(time.RFC3339Nano, req.From)
	if err != nil {
		return 0, server.Invalidf("from %q: want an RFC 3339 time such as 2026-12-05T10:00:00Z", req.From)
	}
	to, err := time.Parse(time.RFC3339Nano, req.To)
	if err != nil {
		return 0, server.Invalidf("to %q: want an RFC 3339 time such as 2026-12-05T11:00:00Z", req.To)
	}
	if !from.Before(to) {
		return 0, server.Invalidf("from %s is not before to %s", req.From, req.To)
	}
	if !w.wantsMessages {
		return 0, server.Invalidf("endpoint %q takes no message events: there is nothing stored to replay", name)
	}
	return s.replayRange(ctx, srv, w, from, to)
}

func (s *Service) replayDead(ctx context.Context, w *worker, limit int) (int, error) {
	// Revived letters that fail again come back as dead letters with new,
	// higher sequences: revive at most what was dead when the replay
	// began (the lowest sequences come first), so a replay into a failing
	// endpoint ends.
	_, dead, err := s.outbox.Depth(w.ep.Name)
	if err != nil {
		return 0, err
	}
	if limit <= 0 || int64(limit) > dead {
		limit = int(dead)
	}
	n := 0
	var after uint64
	for n < limit {
		ds, err := s.outbox.ReadDead(ctx, w.ep.Name, after, min(1000, limit-n))
		if err != nil || len(ds) == 0 {
			return n, err
		}
		if err := s.outbox.Revive(ctx, w.ep.Name, ds); err != nil {
			return n, err
		}
		n += len(ds)
		after = ds[len(ds)-1].Seq
	}
	return n, nil
}

// replayRange queues the endpoint's messages stored between from and to,
// channel by channel, from what the channels keep.
func (s *Service) replayRange(ctx context.Context, srv *server.Server, w *worker, from, to time.Time) (int, error) {
	system := server.Identity{System: true}
	limit := uint64(server.MaxHistoryLimit)
	n := 0
	after := ""
	for {
		list, err := srv.Channels(ctx, system, after, &limit)
		if err != nil {
			return n, err
		}
		for _, ch := range list.Channels {
			k, err := s.replayChannel(ctx, srv, w, ch.Channel, from, to)
			n += k
			if err != nil {
				return n, err
			}
		}
		if list.Next == "" {
			return n, nil
		}
		after = list.Next
	}
}

func (s *Service) replayChannel(ctx context.Context, srv *server.Server, w *worker, channel string, from, to time.Time) (int, error) {
	if !w.ep.Wants(EventMessage, channel, "") && len(w.ep.MessageEvents) == 0 {
		return 0, nil
	}
	system := server.Identity{System: true}
	limit := uint64(server.MaxHistoryLimit)
	n := 0
	var since uint64
	for {
		page, err := srv.History(ctx, system, server.HistoryRequest{Channel: channel, Since: since, Limit: &limit})
		if err != nil {
			return n, err
		}
		var batch []Entry
		for _, raw := range page.Messages {
			var m struct {
				ID     string `json:"id"`
				Event  string `json:"event"`
				Offset uint64 `json:"offset"`
				Time   string `json:"time"`
			}
			if err := json.Unmarshal(raw, &m); err != nil {
				continue
			}
			at, err := time.Parse(time.RFC3339Nano, m.Time)
			if err != nil || at.Before(from) || !at.Before(to) || !w.ep.Wants(EventMessage, channel, m.Event) {
				continue
			}
			batch = append(batch, Entry{Time: at, Channel: channel, Offset: m.Offset, Epoch: page.Epoch, Payload: raw})
		}
		if len(batch) > 0 {
			if err := s.outbox.Enqueue(ctx, map[string][]Entry{w.ep.Name: batch}); err != nil {
				return n, err
			}
			n += len(batch)
		}
		if len(page.Messages) == 0 || page.Next <= since {
			return n, nil
		}
		since = page.Next
	}
}

// TestResult is the answer of POST /api/webhooks/{name}/test.
type TestResult struct {
	Delivered bool   `json:"delivered"`
	Status    int    `json:"status,omitempty"`
	Error     string `json:"error,omitempty"`
	ID        string `json:"id"`
}

// Test sends the endpoint a signed event of type "test" at once, outside
// its outbox. A delivered test re-enables an endpoint disabled by a 410.
func (s *Service) Test(ctx context.Context, name string) (TestResult, error) {
	w, err := s.worker(name)
	if err != nil {
		return TestResult{}, err
	}
	now := s.opts.Now()
	ev := Event{ID: newEventID(), Type: "test", Time: now,
		Data: mustJSON(map[string]string{"endpoint": name, "message": "a test event from Herald"})}
	body, err := w.ep.Render([]Event{ev})
	if err != nil {
		return TestResult{}, err
	}
	a := s.sender.Send(ctx, w.ep, ev.ID, now, body)
	res := TestResult{Delivered: a.Outcome == Delivered, Status: a.Status, ID: ev.ID}
	if a.Err != nil {
		res.Error = a.Err.Error()
	}
	if res.Delivered {
		w.enable()
	}
	return res, nil
}

// Routes registers the API on r. srv authenticates the requests (the API
// key only) and answers errors as the rest of the API does.
func (s *Service) Routes(r *httprouter.Router, srv *server.Server) {
	h := handlers{svc: s, srv: srv}
	r.GET("/api/webhooks", h.list)
	r.GET("/api/webhooks/:name/dead", h.dead)
	r.POST("/api/webhooks/:name/replay", h.replay)
	r.POST("/api/webhooks/:name/test", h.test)
}

type handlers struct {
	svc *Service
	srv *server.Server
}

func (h handlers) fail(w http.ResponseWriter, r *http.Request, err error) {
	server.WriteError(w, r, err, h.svc.opts.Logger)
}

// system lets the API key through and answers everyone else.
func (h handlers) system(w http.ResponseWriter, r *http.Request) bool {
	return h.srv.RequireSystem(w, r, "managing webhooks")
}

func (h handlers) list(w http.ResponseWriter, r *http.Request, _ httprouter.Params) {
	if h.system(w, r) {
		server.WriteJSON(w, map[string]any{"webhooks": h.svc.Status()})
	}
}

func (h handlers) dead(w http.ResponseWriter, r *http.Request, ps httprouter.Params) {
	if !h.system(w, r) {
		return
	}
	q := r.URL.Query()
	var after uint64
	limit := 100
	if v := q.Get("after"); v != "" {
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			h.fail(w, r, server.Invalidf("after %q: want a dead letter's seq", v))
			return
		}
		after = n
	}
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > maxDeadPage {
			h.fail(w, r, server.Invalidf("limit %q: want 1 to %d", v, maxDeadPage))
			return
		}
		limit = n
	}
	page, err := h.svc.Dead(r.Context(), ps.ByName("name"), after, limit)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	server.WriteJSON(w, page)
}

func (h handlers) replay(w http.ResponseWriter, r *http.Request, ps httprouter.Params) {
	if !h.system(w, r) {
		return
	}
	var req ReplayRequest
	body, err := io.ReadAll(io.LimitReader(r.Body, 64<<10))
	if err == nil && len(bytes.TrimSpace(body)) > 0 {
		dec := json.NewDecoder(bytes.NewReader(body))
		dec.DisallowUnknownFields()
		err = dec.Decode(&req)
		if err != nil {
			err = server.Invalidf("replay body: %v", err)
		}
	}
	if err != nil {
		h.fail(w, r, err)
		return
	}
	n, err := h.svc.Replay(r.Context(), h.srv, ps.ByName("name"), req)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	server.WriteJSON(w, map[string]any{"endpoint": ps.ByName("name"), "queued": n})
}

func (h handlers) test(w http.ResponseWriter, r *http.Request, ps httprouter.Params) {
	if !h.system(w, r) {
		return
	}
	res, err := h.svc.Test(r.Context(), ps.ByName("name"))
	if err != nil {
		h.fail(w, r, err)
		return
	}
	server.WriteJSON(w, res)
}
