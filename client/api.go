package client

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/heraldrt/herald/protocol"
)

// The server API (README, "Server API"), one method per route. Each
// answers the server's error as an *APIError.

// Publish sends one message with POST /api/publish and returns its
// acknowledgement, which for a stored message comes once it is durable.
// A repeated req.IdempotencyKey (within the server's window) returns the
// first result with Duplicate set and stores nothing, so a publish whose
// answer was lost can be sent again safely.
func (c *Client) Publish(ctx context.Context, req protocol.PublishRequest) (protocol.PublishResult, error) {
	var res protocol.PublishResult
	err := c.Call(ctx, http.MethodPost, "api/publish", nil, req, &res)
	return res, err
}

// PublishBatch sends many messages, to one channel or many, in one POST
// /api/publish and returns one result per message, in order, once every
// stored one is durable; the server commits them together, with one disk
// sync. Each message is judged on its own: one the server refused (a bad
// channel, no permission, its rate limit) has its Error set and stops
// nothing. The error is for the request as a whole — an *APIError when
// the server refused the batch (empty, over limits.max_batch_messages or
// limits.max_body_bytes), nothing of it published.
func (c *Client) PublishBatch(ctx context.Context, msgs []protocol.PublishRequest) ([]protocol.BatchPublishResult, error) {
	var res protocol.BatchPublishResponse
	if err := c.Call(ctx, http.MethodPost, "api/publish", nil, protocol.BatchPublishRequest{Messages: msgs}, &res); err != nil {
		return nil, err
	}
	if len(res.Results) != len(msgs) {
		return nil, fmt.Errorf("client: POST /api/publish answered %d results for %d messages", len(res.Results), len(msgs))
	}
	return res.Results, nil
}

// History reads one page of a channel's stored messages with GET
// /api/history: those after since (exclusive; 0 reads from the oldest
// kept), ascending, at most limit (0: the server's default, 100; at most
// 1,000). The page's Next is the since of the following page.
func (c *Client) History(ctx context.Context, channel string, since uint64, limit int) (protocol.HistoryPage, error) {
	q := url.Values{"channel": {channel}, "since": {strconv.FormatUint(since, 10)}}
	if limit > 0 {
		q.Set("limit", strconv.Itoa(limit))
	}
	var page protocol.HistoryPage
	err := c.Call(ctx, http.MethodGet, "api/history", q, nil, &page)
	return page, err
}

// Presence returns the members of a presence channel with GET
// /api/presence (stats: the counts only).
func (c *Client) Presence(ctx context.Context, channel string, stats bool) (protocol.Presence, error) {
	q := url.Values{"channel": {channel}}
	if stats {
		q.Set("stats", "true")
	}
	var p protocol.Presence
	err := c.Call(ctx, http.MethodGet, "api/presence", q, nil, &p)
	return p, err
}

// Signal sets (or, with a null or empty State, clears) the caller's
// short-lived state in a presence channel with POST /api/signal: a user
// token only, in a channel the user is in.
func (c *Client) Signal(ctx context.Context, req protocol.SignalRequest) error {
	return c.Call(ctx, http.MethodPost, "api/signal", nil, req, nil)
}

// Grant gives g.User the actions g.Actions (all four when empty) on
// g.Channel, a channel or a prefix ending in *, with POST /api/grants
// (the API key only), and returns the grant as stored.
func (c *Client) Grant(ctx context.Context, g protocol.Grant) (protocol.Grant, error) {
	var out protocol.Grant
	err := c.Call(ctx, http.MethodPost, "api/grants", nil, g, &out)
	return out, err
}

// RevokeGrant takes the actions g.Actions (all when empty) away with
// DELETE /api/grants and returns what is left. Live subscriptions the
// change ends get herald.unsubscribed.
func (c *Client) RevokeGrant(ctx context.Context, g protocol.Grant) (protocol.Grant, error) {
	var out protocol.Grant
	err := c.Call(ctx, http.MethodDelete, "api/grants", nil, g, &out)
	return out, err
}

// Ban ends every session of user and refuses the user's tokens for d
// (POST /api/ban, the API key only); it returns when the ban ends.
func (c *Client) Ban(ctx context.Context, user string, d time.Duration) (time.Time, error) {
	var out struct {
		Until string `json:"until"`
	}
	if err := c.Call(ctx, http.MethodPost, "api/ban", nil, map[string]string{"user": user, "duration": d.String()}, &out); err != nil {
		return time.Time{}, err
	}
	until, err := time.Parse(time.RFC3339Nano, out.Until)
	if err != nil {
		return time.Time{}, fmt.Errorf("the ban's end %q: %w", out.Until, err)
	}
	return until, nil
}

// Unban lifts user's ban (DELETE /api/ban, the API key only).
func (c *Client) Unban(ctx context.Context, user string) error {
	return c.Call(ctx, http.MethodDelete, "api/ban", nil, map[string]string{"user": user}, nil)
}

// Disconnect closes every session of user, who may reconnect (POST
// /api/disconnect, the API key only), and returns how many were open.
func (c *Client) Disconnect(ctx context.Context, user string) (int, error) {
	var out struct {
		SessionsClosed int `json:"sessions_closed"`
	}
	err := c.Call(ctx, http.MethodPost, "api/disconnect", nil, map[string]string{"user": user}, &out)
	return out.SessionsClosed, err
}
