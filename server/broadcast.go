package server

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"slices"
	"strings"
	"sync"

	"github.com/heraldrt/herald/protocol"
)

// userChannelPrefix starts every user's system channel: where the server
// sends a user what is addressed to them as a user, not to a channel (a
// broadcast to every connected user). Stored like any channel, so a
// client resumes it like any channel.
const userChannelPrefix = "herald.user."

// UserChannel returns the system channel of user: herald.user.<id> when
// the id is a valid channel name part, else herald.user.x<hash of the id>.
// herald.connected (SSE) and the connected push (WebSocket) carry it.
func UserChannel(user string) string {
	if user == "" {
		return ""
	}
	safe := len(userChannelPrefix)+len(user) <= MaxChannelLen
	for i := 0; i < len(user) && safe; i++ {
		safe = isChannelByte(user[i])
	}
	if safe {
		return userChannelPrefix + user
	}
	sum := sha256.Sum256([]byte(user))
	return userChannelPrefix + "x" + hex.EncodeToString(sum[:16])
}

// userChannelDecision decides on system channels before the rules: a user
// may subscribe to and read their own; only the API key publishes. It
// reports whether channel is a system channel.
func userChannelDecision(id Identity, action Action, channel string) (isSystem bool, err error) {
	if !strings.HasPrefix(channel, userChannelPrefix) {
		return false, nil
	}
	if id.System {
		return true, nil
	}
	if action != ActionPublish && id.User != "" && channel == UserChannel(id.User) {
		return true, nil
	}
	return true, denied(id, action, channel)
}

// BroadcastRequest publishes one message to many channels, or to every
// connected user (on their system channels), optionally only to users
// whose token attributes match Filter.
type BroadcastRequest struct {
	Channels []string          `json:"channels,omitempty"`
	Users    bool              `json:"users,omitempty"`
	Filter   map[string]string `json:"filter,omitempty"`
	Event    string            `json:"event,omitempty"`
	Data     json.RawMessage   `json:"data"`
}

// BroadcastResult lists each channel's acknowledgement (or error).
type BroadcastResult struct {
	Results []BroadcastOne `json:"results"`
}

// BroadcastOne is one channel's outcome.
type BroadcastOne struct {
	PublishResult
	Error *protocol.ErrorDetail `json:"error,omitempty"`
}

// maxBroadcastChannels bounds the channels of one broadcast call.
const maxBroadcastChannels = 1000

// Broadcast publishes a message to every channel of the request (each in
// its own log, each authorised), or to the system channel of every
// connected user matching the filter (the API key only). Channels are
// published concurrently, so one group commit carries many of them.
func (s *Server) Broadcast(ctx context.Context, id Identity, req BroadcastRequest) (BroadcastResult, error) {
	channels := req.Channels
	switch {
	case req.Users && len(channels) > 0:
		return BroadcastResult{}, invalidf("broadcast to channels or to users, not both")
	case req.Users:
		if !id.System {
			return BroadcastResult{}, newError(http.StatusForbidden, ErrForbidden, "a broadcast to every user needs the API key")
		}
		for _, u := range s.sessions.users(req.Filter) {
			channels = append(channels, UserChannel(u))
		}
		slices.Sort(channels)
	case len(req.Filter) > 0:
		return BroadcastResult{}, invalidf("filter applies to a broadcast to users (\"users\": true)")
	case len(channels) == 0:
		return BroadcastResult{}, invalidf("name the channels, or set \"users\": true")
	}
	if len(channels) > maxBroadcastChannels {
		return BroadcastResult{}, invalidf("%d channels in one broadcast, the limit is %d", len(channels), maxBroadcastChannels)
	}
	out := BroadcastResult{Results: make([]BroadcastOne, len(channels))}
	var wg sync.WaitGroup
	sem := make(chan struct{}, 64)
	for i, ch := range channels {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			res, err := s.Publish(ctx, id, PublishRequest{Channel: ch, Event: req.Event, Data: req.Data})
			out.Results[i] = BroadcastOne{PublishResult: res}
			if err != nil {
				e := AsError(err)
				out.Results[i].Channel = ch
				out.Results[i].Error = &protocol.ErrorDetail{Code: e.Code, Message: e.Message, Channel: e.Channel}
			}
		}()
	}
	wg.Wait()
	return out, nil
}
