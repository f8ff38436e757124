package server

import (
	"context"
	"encoding/json"
	"net/http"

	"github.com/heraldrt/herald/protocol"
)

// History paging limits, the same on every transport and in the API.
const (
	// DefaultHistoryLimit is a history page's size when none is asked.
	DefaultHistoryLimit = 100
	// MaxHistoryLimit bounds a history page, and a page of the channel list.
	MaxHistoryLimit = 1000
)

// HistoryRequest asks for one page of a channel's stored messages.
type HistoryRequest struct {
	Channel string
	// Since is the last offset the client holds: the page starts after it
	// (0: at the oldest message kept).
	Since uint64
	// Limit bounds the page: 1 to MaxHistoryLimit, nil for
	// DefaultHistoryLimit.
	Limit *uint64
}

// HistoryPage is one page of a channel's history: the wire shape, whose
// home is protocol.
type HistoryPage = protocol.HistoryPage

// pageLimit checks a page size asked for, of at most max.
func pageLimit(limit *uint64, max uint64) (int, error) {
	switch {
	case limit == nil:
		return DefaultHistoryLimit, nil
	case *limit == 0:
		return 0, invalidf("limit must be at least 1")
	case *limit > max:
		return 0, invalidf("limit %d is over the limit of %d", *limit, max)
	}
	return int(*limit), nil
}

// History reads one page of a channel's stored messages after since,
// checked against the rule's history action.
func (s *Server) History(ctx context.Context, id Identity, req HistoryRequest) (HistoryPage, error) {
	limit, err := pageLimit(req.Limit, MaxHistoryLimit)
	if err != nil {
		return HistoryPage{}, err
	}
	channel, since := req.Channel, req.Since
	if err := ValidateChannel(channel); err != nil {
		return HistoryPage{}, err
	}
	cr := s.rules.lookup(channel)
	if err := s.authorize(id, ActionHistory, &cr); err != nil {
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

// ChannelStatus is one stored channel, as the channel list shows it.
type ChannelStatus struct {
	Channel     string `json:"channel"`
	Epoch       string `json:"epoch"`
	Head        uint64 `json:"head"`
	First       uint64 `json:"first"`
	Subscribers int    `json:"subscribers"`
}

// ChannelList is one page of the stored channels, by name.
type ChannelList struct {
	Channels []ChannelStatus `json:"channels"`
	// Next is the after of the following page ("" on the last one).
	Next string `json:"next,omitempty"`
}

// Channels lists the stored channels after the name after, with their
// heads and how many subscribers each has now: for the API key only.
// limit is 1 to MaxHistoryLimit, nil for DefaultHistoryLimit.
func (s *Server) Channels(ctx context.Context, id Identity, after string, limit *uint64) (ChannelList, error) {
	if !id.System {
		return ChannelList{}, newError(http.StatusForbidden, ErrForbidden, "listing channels needs the API key")
	}
	n, err := pageLimit(limit, MaxHistoryLimit)
	if err != nil {
		return ChannelList{}, err
	}
	infos, err := s.engine.Channels(ctx, after, n)
	if err != nil {
		return ChannelList{}, err
	}
	out := ChannelList{Channels: make([]ChannelStatus, 0, len(infos))}
	for _, c := range infos {
		out.Channels = append(out.Channels, ChannelStatus{
			Channel: c.Name, Epoch: c.Epoch, Head: c.Head, First: c.First,
			Subscribers: s.hub.subscribers(c.Name),
		})
	}
	if len(infos) == n {
		out.Next = infos[len(infos)-1].Name
	}
	return out, nil
}
