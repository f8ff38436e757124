package httpapi

import (
	"net/http"
	"time"

	"github.com/heraldrt/herald/server"
)

// userRequest is the body of the moderation routes.
type userRequest struct {
	User     string `json:"user"`
	Duration string `json:"duration,omitempty"`
}

// readUserRequest reads the body of a moderation route, for the API key;
// what names the action in a refusal.
func (a *API) readUserRequest(w http.ResponseWriter, r *http.Request, what string) (userRequest, bool) {
	var req userRequest
	if !a.system(w, r, what) {
		return req, false
	}
	err := a.decodeBody(w, r, &req)
	if err == nil && req.User == "" {
		err = server.Invalidf("user is required")
	}
	if err != nil {
		a.fail(w, r, err)
		return req, false
	}
	return req, true
}

// disconnect serves POST /api/disconnect: closes every session of a user.
func (a *API) disconnect(w http.ResponseWriter, r *http.Request) {
	req, ok := a.readUserRequest(w, r, "disconnecting users")
	if !ok {
		return
	}
	n, err := a.srv.Moderation().Disconnect(req.User)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	a.writeJSON(w, http.StatusOK, map[string]any{"user": req.User, "sessions_closed": n})
}

// ban serves POST /api/ban: refuses a user for a duration.
func (a *API) ban(w http.ResponseWriter, r *http.Request) {
	req, ok := a.readUserRequest(w, r, "banning users")
	if !ok {
		return
	}
	d, err := time.ParseDuration(req.Duration)
	if err != nil {
		a.fail(w, r, server.Invalidf("duration %q: want a duration such as 10m or 24h", req.Duration))
		return
	}
	until, err := a.srv.Moderation().Ban(r.Context(), req.User, d)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	a.writeJSON(w, http.StatusOK, map[string]any{"user": req.User, "until": until.Format(server.TimeFormat)})
}

// unban serves DELETE /api/ban: lifts a ban.
func (a *API) unban(w http.ResponseWriter, r *http.Request) {
	req, ok := a.readUserRequest(w, r, "lifting bans")
	if !ok {
		return
	}
	if err := a.srv.Moderation().Unban(r.Context(), req.User); err != nil {
		a.fail(w, r, err)
		return
	}
	a.writeJSON(w, http.StatusOK, map[string]any{"user": req.User, "banned": false})
}
