package server

import (
	"context"
	"fmt"
	"time"

	"github.com/heraldrt/herald/protocol"
	"github.com/heraldrt/herald/store"
)

// maxIdempotencyKey bounds an idempotency key, in bytes.
const maxIdempotencyKey = 128

// PublishRequest is one message to publish: the wire shape of POST
// /api/publish, whose home is protocol. Who publishes is Publish's
// Identity argument.
type PublishRequest = protocol.PublishRequest

// PublishResult is the acknowledgement of a publish. For a stored message
// it is sent only once the message is durable.
type PublishResult = protocol.PublishResult

// checkSender checks the sessions a publish names — the sender's and the
// excluded one — and applies exclude_sender. A user may name only sessions
// of its own, open or not: an id that is not the caller's is refused the
// same way whether or not it exists.
func checkSender(ids sessionIDs, id Identity, req *PublishRequest) error {
	if req.ExcludeSender {
		switch {
		case req.Session == "":
			return invalidf("exclude_sender needs session: the id of the publishing session (from herald.connected, the WebSocket connected push or a poll answer)")
		case req.ExcludeSession != "" && req.ExcludeSession != req.Session:
			return invalidf("exclude_sender excludes session %q; exclude_session names another: give one of them", req.Session)
		}
		req.ExcludeSession = req.Session
	}
	if id.System {
		return nil
	}
	if req.Session != "" && !ids.owns(id, req.Session) {
		return forbiddenf(req.Channel, "session must be one of your own sessions")
	}
	if req.ExcludeSession != "" && !ids.owns(id, req.ExcludeSession) {
		return forbiddenf(req.Channel, "exclude_session must be one of your own sessions")
	}
	return nil
}

// Publish runs the publish pipeline: validate, authorise, store (group
// commit), and — through the store's commit feed — fan out. It returns
// once the message is durable.
func (s *Server) Publish(ctx context.Context, id Identity, req PublishRequest) (PublishResult, error) {
	if err := ValidateChannel(req.Channel); err != nil {
		return PublishResult{}, err
	}
	event, err := validateEvent(req.Event)
	if err != nil {
		return PublishResult{}, err
	}
	if len(req.IdempotencyKey) > maxIdempotencyKey {
		return PublishResult{}, invalidf("idempotency_key is %d bytes long, the limit is %d", len(req.IdempotencyKey), maxIdempotencyKey)
	}
	if req.Ephemeral && req.IdempotencyKey != "" {
		return PublishResult{}, invalidf("idempotency_key has no meaning on an ephemeral message")
	}
	// Permission and rate first: a refused publish costs no more than it
	// must (a flood is mostly refusals).
	cr := s.rules.lookup(req.Channel)
	if err := s.authorize(id, ActionPublish, &cr); err != nil {
		return PublishResult{}, err
	}
	if err := s.limits.allowPublish(id, &cr, s.now()); err != nil {
		return PublishResult{}, err
	}
	data, err := compactData(req.Data, s.cfg.Limits.MaxDataBytes)
	if err != nil {
		return PublishResult{}, err
	}
	if err := checkSender(s.ids, id, &req); err != nil {
		return PublishResult{}, err
	}

	now := s.now()
	msgID := newMessageID(now)
	var from *protocol.Sender
	if !id.System && !id.Anonymous {
		from = &protocol.Sender{User: id.User, Session: req.Session}
	}
	exclude := req.ExcludeSession
	if req.Ephemeral {
		exclude = "" // not stored; the live message carries it
	}
	payload, err := encodePayload(msgID, event, data, now, from, exclude)
	if err != nil {
		return PublishResult{}, err
	}

	if req.Ephemeral {
		_, _, tail, _ := decodePayload(payload)
		s.stats.published.Inc()
		m := &Message{
			at:             time.Now(),
			Channel:        req.Channel,
			Event:          event,
			Raw:            buildEnvelope(req.Channel, 0, "", tail),
			excludeSession: req.ExcludeSession,
		}
		s.hub.deliverEphemeral(m)
		return PublishResult{Channel: req.Channel, ID: msgID, Ephemeral: true}, nil
	}

	rec := store.Record{ID: msgID, Time: now, Payload: payload, IdempotencyKey: req.IdempotencyKey}
	start := time.Now()
	res, err := s.engine.Append(ctx, req.Channel, rec)
	if err != nil {
		return PublishResult{}, fmt.Errorf("publish to %q: %w", req.Channel, err)
	}
	s.stats.appendTime.Observe(time.Since(start).Seconds())
	if !res.Duplicate {
		s.stats.published.Inc()
	}
	return PublishResult{
		Channel:   req.Channel,
		Offset:    res.Offset,
		Epoch:     res.Epoch,
		ID:        res.ID,
		Duplicate: res.Duplicate,
	}, nil
}
