package server

import (
	"context"
	"encoding/json"
	"net/http"
	"strconv"
	"strings"

	"github.com/julienschmidt/httprouter"

	"github.com/heraldrt/herald/protocol"
)

// History paging limits.
const (
	defaultHistoryLimit = 100
	maxHistoryLimit     = 1000
	maxChannelsLimit    = 1000
)

// Routes registers the server API (DESIGN §4) and the health endpoints,
// and makes r answer what no route takes with the same JSON errors as
// the rest: a 404 naming the method and path, a 405 naming the methods
// the path takes (with Allow). OPTIONS requests are not answered by r:
// CORS, in front of it, answers the preflights of allowed origins; any
// other OPTIONS request is a 405.
func (s *Server) Routes(r *httprouter.Router) {
	r.NotFound = http.HandlerFunc(s.handleNotFound)
	r.MethodNotAllowed = http.HandlerFunc(s.handleMethodNotAllowed)
	r.HandleOPTIONS = false
	r.HandlerFunc(http.MethodPost, "/api/publish", s.handlePublish)
	r.HandlerFunc(http.MethodGet, "/api/history", s.handleHistory)
	r.HandlerFunc(http.MethodGet, "/api/channels", s.handleChannels)
	r.HandlerFunc(http.MethodPost, "/api/grants", s.handlePostGrant)
	r.HandlerFunc(http.MethodDelete, "/api/grants", s.handleDeleteGrant)
	r.HandlerFunc(http.MethodGet, "/api/grants", s.handleListGrants)
	r.HandlerFunc(http.MethodGet, "/api/presence", s.handlePresence)
	r.HandlerFunc(http.MethodPost, "/api/signal", s.handleSignal)
	r.GET("/api/users/:id", s.handleUser)
	r.HandlerFunc(http.MethodPost, "/api/broadcast", s.handleBroadcast)
	r.HandlerFunc(http.MethodPost, "/api/disconnect", s.handleDisconnect)
	r.HandlerFunc(http.MethodPost, "/api/ban", s.handleBan)
	r.HandlerFunc(http.MethodDelete, "/api/ban", s.handleUnban)
	r.Handler(http.MethodGet, "/metrics", s.MetricsHandler())
	r.HandlerFunc(http.MethodGet, "/healthz", s.handleHealthz)
	r.HandlerFunc(http.MethodGet, "/readyz", s.handleReadyz)
}

func (s *Server) handleNotFound(w http.ResponseWriter, r *http.Request) {
	s.WriteError(w, r, newError(http.StatusNotFound, ErrNotFound, "no route for %s %s", r.Method, r.URL.Path))
}

// handleMethodNotAllowed answers a path that exists for other methods.
// The router has set Allow; the message names the same methods, but
// OPTIONS, which only CORS preflights use.
func (s *Server) handleMethodNotAllowed(w http.ResponseWriter, r *http.Request) {
	var methods []string
	for m := range strings.SplitSeq(w.Header().Get("Allow"), ", ") {
		if m != "" && m != http.MethodOptions {
			methods = append(methods, m)
		}
	}
	s.WriteError(w, r, newError(http.StatusMethodNotAllowed, ErrMethodNotAllowed,
		"%s %s is not allowed; use %s", r.Method, r.URL.Path, orList(methods)))
}

// orList joins words as "a", "a or b", "a, b or c".
func orList(words []string) string {
	if len(words) < 2 {
		return strings.Join(words, "")
	}
	return strings.Join(words[:len(words)-1], ", ") + " or " + words[len(words)-1]
}

// apiIdentity authenticates an /api/* request; every one needs
// credentials.
func (s *Server) apiIdentity(w http.ResponseWriter, r *http.Request) (Identity, bool) {
	id, err := s.Authenticate(r)
	if err == nil && id.Anonymous {
		err = unauthorizedf("the API needs credentials: Authorization: Bearer <API key or user token>")
	}
	if err != nil {
		s.WriteError(w, r, err)
		return Identity{}, false
	}
	return id, true
}

func (s *Server) handlePublish(w http.ResponseWriter, r *http.Request) {
	id, ok := s.apiIdentity(w, r)
	if !ok {
		return
	}
	done, err := s.enterUser(id)
	if err != nil {
		s.WriteError(w, r, err)
		return
	}
	defer done()
	var req PublishRequest
	if err := s.decodeBody(w, r, &req); err != nil {
		s.WriteError(w, r, err)
		return
	}
	res, err := s.Publish(r.Context(), id, req)
	if err != nil {
		s.WriteError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, res, s.logger)
}

// HistoryPage is the answer of GET /api/history (the wire shape, whose
// home is protocol).
type HistoryPage = protocol.HistoryPage

func (s *Server) handleHistory(w http.ResponseWriter, r *http.Request) {
	id, ok := s.apiIdentity(w, r)
	if !ok {
		return
	}
	q := r.URL.Query()
	channel := q.Get("channel")
	since, err := uintParam(q.Get("since"), "since", 0, 0)
	if err != nil {
		s.WriteError(w, r, err)
		return
	}
	limit, err := uintParam(q.Get("limit"), "limit", defaultHistoryLimit, maxHistoryLimit)
	if err != nil {
		s.WriteError(w, r, err)
		return
	}
	page, err := s.History(r.Context(), id, channel, since, int(limit))
	if err != nil {
		s.WriteError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, page, s.logger)
}

// History reads one page of a channel's stored messages after since.
func (s *Server) History(ctx context.Context, id Identity, channel string, since uint64, limit int) (HistoryPage, error) {
	if err := ValidateChannel(channel); err != nil {
		return HistoryPage{}, err
	}
	if err := s.authorize(id, ActionHistory, channel); err != nil {
		return HistoryPage{}, err
	}
	page, err := s.engine.Read(ctx, channel, since, limit)
	if err != nil {
		return HistoryPage{}, err
	}
	if page.Epoch == "" { // first use: give the channel its epoch
		pos, err := s.engine.Head(ctx, channel)
		if err != nil {
			return HistoryPage{}, err
		}
		page.Epoch, page.Head = pos.Epoch, pos.Head
	}
	// since 0 asks for all that is kept: no reset, however much was trimmed.
	out := HistoryPage{Channel: channel, Epoch: page.Epoch, Head: page.Head, Next: since,
		Reset: page.Trimmed && since > 0, Messages: make([]json.RawMessage, 0, len(page.Entries))}
	if page.Trimmed {
		out.Next = page.First - 1
	}
	for _, e := range page.Entries {
		m, err := newMessage(channel, e.Offset, page.Epoch, e.Payload)
		if err != nil {
			return HistoryPage{}, err
		}
		out.Messages = append(out.Messages, m.Raw)
		out.Next = e.Offset
	}
	return out, nil
}

// ChannelStatus is one row of GET /api/channels.
type ChannelStatus struct {
	Channel     string `json:"channel"`
	Epoch       string `json:"epoch"`
	Head        uint64 `json:"head"`
	First       uint64 `json:"first"`
	Subscribers int    `json:"subscribers"`
}

func (s *Server) handleChannels(w http.ResponseWriter, r *http.Request) {
	id, ok := s.apiIdentity(w, r)
	if !ok {
		return
	}
	if !id.System {
		s.WriteError(w, r, newError(http.StatusForbidden, ErrForbidden, "listing channels needs the API key"))
		return
	}
	q := r.URL.Query()
	limit, err := uintParam(q.Get("limit"), "limit", defaultHistoryLimit, maxChannelsLimit)
	if err != nil {
		s.WriteError(w, r, err)
		return
	}
	infos, err := s.engine.Channels(r.Context(), q.Get("after"), int(limit))
	if err != nil {
		s.WriteError(w, r, err)
		return
	}
	out := struct {
		Channels []ChannelStatus `json:"channels"`
		Next     string          `json:"next,omitempty"`
	}{Channels: make([]ChannelStatus, 0, len(infos))}
	for _, c := range infos {
		out.Channels = append(out.Channels, ChannelStatus{
			Channel: c.Name, Epoch: c.Epoch, Head: c.Head, First: c.First,
			Subscribers: s.hub.subscribers(c.Name),
		})
	}
	if len(infos) == int(limit) {
		out.Next = infos[len(infos)-1].Name
	}
	writeJSON(w, http.StatusOK, out, s.logger)
}

func (s *Server) handlePresence(w http.ResponseWriter, r *http.Request) {
	id, ok := s.apiIdentity(w, r)
	if !ok {
		return
	}
	q := r.URL.Query()
	stats := false
	switch v := q.Get("stats"); v {
	case "", "0", "false":
	case "1", "true":
		stats = true
	default:
		s.WriteError(w, r, invalidf("stats %q: want true or false", v))
		return
	}
	info, err := s.Presence(id, q.Get("channel"), stats)
	if err != nil {
		s.WriteError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, info, s.logger)
}

func (s *Server) handleSignal(w http.ResponseWriter, r *http.Request) {
	id, ok := s.apiIdentity(w, r)
	if !ok {
		return
	}
	var req SignalRequest
	if err := s.decodeBody(w, r, &req); err != nil {
		s.WriteError(w, r, err)
		return
	}
	if err := s.Signal(id, req); err != nil {
		s.WriteError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"channel": req.Channel, "ok": true}, s.logger)
}

func (s *Server) handleUser(w http.ResponseWriter, r *http.Request, ps httprouter.Params) {
	id, ok := s.apiIdentity(w, r)
	if !ok {
		return
	}
	st, err := s.User(r.Context(), id, ps.ByName("id"))
	if err != nil {
		s.WriteError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, st, s.logger)
}

func (s *Server) handleHealthz(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok"}, s.logger)
}

func (s *Server) handleReadyz(w http.ResponseWriter, r *http.Request) {
	if !s.Ready() {
		s.WriteError(w, r, ErrShuttingDown)
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "ready"}, s.logger)
}

// uintParam parses an optional non-negative integer query parameter;
// max 0 means unbounded.
func uintParam(v, name string, def, max uint64) (uint64, error) {
	if v == "" {
		return def, nil
	}
	n, err := strconv.ParseUint(v, 10, 64)
	if err != nil {
		return 0, invalidf("%s %q is not a non-negative integer", name, v)
	}
	if n == 0 && def > 0 {
		return 0, invalidf("%s must be at least 1", name)
	}
	if max > 0 && n > max {
		return 0, invalidf("%s %d is over the limit of %d", name, n, max)
	}
	return n, nil
}
