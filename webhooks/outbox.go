package webhooks

import (
	"context"
	"crypto/rand"
	"encoding/base32"
	"encoding/json"
	"fmt"
	"time"

	"github.com/heraldrt/herald/server"
)

// Outbox is the durable queue deliveries come from: one queue per
// endpoint, named as it. The composition root gives the engine's (the
// Badger store keeps a message's entries in the same commit as the
// message); tests give one in memory.
type Outbox interface {
	// Enqueue adds entries to queues (by name), durably, in order per
	// queue; the entries' Seq are assigned.
	Enqueue(ctx context.Context, entries map[string][]Entry) error
	// Read returns up to limit entries of the queue after seq after, in
	// order.
	Read(ctx context.Context, queue string, after uint64, limit int) ([]Entry, error)
	// Remove deletes delivered entries; Bury moves entries to the queue's
	// dead letters with a reason. Each entry is removed or buried once.
	Remove(ctx context.Context, queue string, seqs []uint64) error
	Bury(ctx context.Context, queue string, entries []Entry, reason string) error
	// ReadDead returns up to limit dead letters after seq after; Revive
	// queues dead letters again at the queue's end.
	ReadDead(ctx context.Context, queue string, after uint64, limit int) ([]DeadEntry, error)
	Revive(ctx context.Context, queue string, dead []DeadEntry) error
	// Depth returns how many entries wait in the queue, and how many dead
	// letters it has.
	Depth(queue string) (depth, dead int64, err error)
}

// Entry is one queued event: a stored message (Channel, Offset, Epoch and
// its stored Payload) or a life event (Offset 0, Payload its JSON).
type Entry struct {
	Seq     uint64
	Time    time.Time
	Channel string
	Offset  uint64
	Epoch   string
	Payload []byte
}

// DeadEntry is an entry given up on, with when and why.
type DeadEntry struct {
	Entry
	Died   time.Time
	Reason string
}

// isMessage tells a stored message's entry from a life event's.
func (e *Entry) isMessage() bool { return e.Offset > 0 }

// life is a life event as queued: the payload of its entry.
type life struct {
	ID        string          `json:"id"`
	Type      string          `json:"type"`
	User      string          `json:"user,omitempty"`
	Session   string          `json:"session,omitempty"`
	Channel   string          `json:"channel,omitempty"`
	Transport string          `json:"transport,omitempty"`
	Reason    string          `json:"reason,omitempty"`
	State     json.RawMessage `json:"state,omitempty"`
}

// lifeData is a life event's data as endpoints get it.
type lifeData struct {
	User      string          `json:"user,omitempty"`
	Session   string          `json:"session,omitempty"`
	Channel   string          `json:"channel,omitempty"`
	Transport string          `json:"transport,omitempty"`
	Reason    string          `json:"reason,omitempty"`
	State     json.RawMessage `json:"state,omitempty"`
}

// envelopeHead is what an event needs of a message's envelope.
type envelopeHead struct {
	ID    string          `json:"id"`
	Event string          `json:"event"`
	Data  json.RawMessage `json:"data"`
	From  *struct {
		User    string `json:"user"`
		Session string `json:"session"`
	} `json:"from"`
}

// decode turns a queued entry into the event endpoints are told of.
func decode(e *Entry) (Event, error) {
	if e.isMessage() {
		if len(e.Payload) > 0 && e.Payload[0] == '{' {
			return decodeEnvelope(e)
		}
		// Queued with its message, the entry holds the stored payload:
		// its fields are found without decoding JSON.
		m, err := server.StoredMessage(e.Channel, e.Offset, e.Epoch, e.Payload)
		if err != nil {
			return Event{}, fmt.Errorf("webhooks: entry %d: %w", e.Seq, err)
		}
		f, err := server.ParseStored(e.Payload)
		if err != nil {
			return Event{}, fmt.Errorf("webhooks: entry %d: %w", e.Seq, err)
		}
		ev := Event{ID: f.ID, Type: EventMessage, Time: e.Time, Channel: e.Channel, Name: f.Event, Data: m.Raw, MessageData: f.Data}
		if f.From != nil {
			ev.User, ev.Session = f.From.User, f.From.Session
		}
		return ev, nil
	}
	var l life
	if err := json.Unmarshal(e.Payload, &l); err != nil {
		return Event{}, fmt.Errorf("webhooks: entry %d: %w", e.Seq, err)
	}
	data, err := json.Marshal(lifeData{User: l.User, Session: l.Session, Channel: l.Channel,
		Transport: l.Transport, Reason: l.Reason, State: l.State})
	if err != nil {
		return Event{}, err
	}
	return Event{ID: l.ID, Type: l.Type, Time: e.Time, Channel: l.Channel, User: l.User, Session: l.Session, Data: data}, nil
}

// decodeEnvelope turns an entry replayed from the history, which holds
// the message's envelope, into its event.
func decodeEnvelope(e *Entry) (Event, error) {
	var head envelopeHead
	if err := json.Unmarshal(e.Payload, &head); err != nil {
		return Event{}, fmt.Errorf("webhooks: entry %d: envelope: %w", e.Seq, err)
	}
	ev := Event{ID: head.ID, Type: EventMessage, Time: e.Time, Channel: e.Channel, Name: head.Event, Data: e.Payload, MessageData: head.Data}
	if head.From != nil {
		ev.User, ev.Session = head.From.User, head.From.Session
	}
	return ev, nil
}

// newEventID returns a fresh life event id: "evt_" and 20 random base32
// characters.
func newEventID() string {
	var b [15]byte
	_, _ = rand.Read(b[:]) // crypto/rand never fails on supported platforms
	return "evt_" + base32.StdEncoding.WithPadding(base32.NoPadding).EncodeToString(b[:])
}

// lifeTypes pairs the core's life events with the endpoint event types
// they become. Connect and disconnect follow the user's presence (first
// session opened, last one gone past the grace), so a quick reconnect
// fires neither; join and leave are the core's debounced ones too.
func lifeTypes() []struct {
	kind server.EventKind
	typ  string
} {
	return []struct {
		kind server.EventKind
		typ  string
	}{
		{server.UserOnline, EventConnect}, {server.UserOffline, EventDisconnect},
		{server.UserJoined, EventJoin}, {server.UserLeft, EventLeave}, {server.StateChanged, EventState},
		{server.ChannelOccupied, EventOccupied}, {server.ChannelVacated, EventVacated},
	}
}

// lifeType returns the endpoint event type of a core life event.
func lifeType(k server.EventKind) (string, bool) {
	for _, p := range lifeTypes() {
		if p.kind == k {
			return p.typ, true
		}
	}
	return "", false
}

// lifeKinds are the core events that become endpoint events.
func lifeKinds() []server.EventKind {
	var out []server.EventKind
	for _, p := range lifeTypes() {
		out = append(out, p.kind)
	}
	return out
}
