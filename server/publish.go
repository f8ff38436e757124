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

// PublishOutcome is one message's answer in a batch: its result, or why
// it was refused or not stored.
type PublishOutcome struct {
	Result PublishResult
	Err    error
}

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

// prepared is a message that passed the publish pipeline up to the store:
// checked, allowed, counted against its rate limit, and encoded.
type prepared struct {
	channel string
	id      string // the message id
	event   string
	payload []byte // the stored payload (see encodePayload)
	at      time.Time
	idemKey string
	// exclude is the session an ephemeral message passes over (a stored
	// one carries it in its payload).
	exclude   string
	ephemeral bool
}

// prepare runs the publish pipeline's checks on one message: validate,
// authorise, rate-limit, then encode. Permission and rate come before the
// data is read: a refused publish costs no more than it must (a flood is
// mostly refusals).
func (s *Server) prepare(id Identity, req PublishRequest) (prepared, error) {
	if err := ValidateChannel(req.Channel); err != nil {
		return prepared{}, err
	}
	event, err := validateEvent(req.Event)
	if err != nil {
		return prepared{}, err
	}
	if len(req.IdempotencyKey) > maxIdempotencyKey {
		return prepared{}, invalidf("idempotency_key is %d bytes long, the limit is %d", len(req.IdempotencyKey), maxIdempotencyKey)
	}
	if req.Ephemeral && req.IdempotencyKey != "" {
		return prepared{}, invalidf("idempotency_key has no meaning on an ephemeral message")
	}
	cr := s.rules.lookup(req.Channel)
	if err := s.authorize(id, ActionPublish, &cr); err != nil {
		return prepared{}, err
	}
	if err := s.limits.allowPublish(id, &cr, s.now()); err != nil {
		return prepared{}, err
	}
	data, err := compactData(req.Data, s.cfg.Limits.MaxDataBytes)
	if err != nil {
		return prepared{}, err
	}
	if err := checkSender(s.ids, id, &req); err != nil {
		return prepared{}, err
	}

	now := s.now()
	p := prepared{
		channel:   req.Channel,
		id:        newMessageID(now),
		event:     event,
		at:        now,
		idemKey:   req.IdempotencyKey,
		ephemeral: req.Ephemeral,
	}
	var from *protocol.Sender
	if !id.System && !id.Anonymous {
		from = &protocol.Sender{User: id.User, Session: req.Session}
	}
	stored := req.ExcludeSession
	if req.Ephemeral {
		stored = "" // not stored; the live message carries it
		p.exclude = req.ExcludeSession
	}
	if p.payload, err = encodePayload(p.id, event, data, now, from, stored); err != nil {
		return prepared{}, err
	}
	return p, nil
}

// deliverEphemeral fans out a prepared ephemeral message at once.
func (s *Server) deliverEphemeral(p prepared) PublishResult {
	_, _, tail, _ := decodePayload(p.payload)
	s.stats.published.Inc()
	s.hub.deliverEphemeral(&Message{
		at:             time.Now(),
		Channel:        p.channel,
		Event:          p.event,
		Raw:            buildEnvelope(p.channel, 0, "", tail),
		excludeSession: p.exclude,
	})
	return PublishResult{Channel: p.channel, ID: p.id, Ephemeral: true}
}

func (p prepared) record() store.Record {
	return store.Record{ID: p.id, Time: p.at, Payload: p.payload, IdempotencyKey: p.idemKey}
}

func (s *Server) stored(channel string, res store.Appended) PublishResult {
	if !res.Duplicate {
		s.stats.published.Inc()
	}
	return PublishResult{Channel: channel, Offset: res.Offset, Epoch: res.Epoch, ID: res.ID, Duplicate: res.Duplicate}
}

// Publish runs the publish pipeline: validate, authorise, store (group
// commit), and — through the store's commit feed — fan out. It returns
// once the message is durable.
func (s *Server) Publish(ctx context.Context, id Identity, req PublishRequest) (PublishResult, error) {
	p, err := s.prepare(id, req)
	if err != nil {
		return PublishResult{}, err
	}
	if p.ephemeral {
		return s.deliverEphemeral(p), nil
	}
	start := time.Now()
	res, err := s.engine.Append(ctx, p.channel, p.record())
	if err != nil {
		return PublishResult{}, fmt.Errorf("publish to %q: %w", p.channel, err)
	}
	s.stats.appendTime.Observe(time.Since(start).Seconds())
	return s.stored(p.channel, res), nil
}

// PublishBatch publishes many messages, to one channel or many, and
// answers each in order once every stored one is durable. Each message
// goes through the publish pipeline on its own: one refused (a bad
// channel, no permission, its rate limit, too large) gets its error and
// stops nothing. The messages accepted for storage are committed together
// (store.Engine.AppendBatch): durable all at once, in their order per
// channel, or, should the commit fail, none of them. Ephemeral messages
// are delivered as they pass the pipeline. The call itself is refused —
// nothing published — only for an empty list or one over
// limits.max_batch_messages.
func (s *Server) PublishBatch(ctx context.Context, id Identity, reqs []PublishRequest) ([]PublishOutcome, error) {
	if len(reqs) == 0 {
		return nil, invalidf("messages is empty: give at least one message")
	}
	if limit := s.cfg.Limits.MaxBatchMessages; len(reqs) > limit {
		return nil, tooLargef("%d messages in one request, the limit is %d (limits.max_batch_messages)", len(reqs), limit)
	}
	out := make([]PublishOutcome, len(reqs))
	recs := make([]store.ChannelRecord, 0, len(reqs))
	index := make([]int, 0, len(reqs)) // out's index of each record
	for i, req := range reqs {
		p, err := s.prepare(id, req)
		switch {
		case err != nil:
			out[i].Err = err
		case p.ephemeral:
			out[i].Result = s.deliverEphemeral(p)
		default:
			recs = append(recs, store.ChannelRecord{Channel: p.channel, Record: p.record()})
			index = append(index, i)
		}
	}
	if len(recs) == 0 {
		return out, nil
	}
	start := time.Now()
	res, err := s.engine.AppendBatch(ctx, recs)
	if err != nil {
		for _, i := range index {
			out[i].Err = fmt.Errorf("publish to %q: %w", reqs[i].Channel, err)
		}
		return out, nil
	}
	s.stats.appendTime.Observe(time.Since(start).Seconds())
	for j, i := range index {
		if err := res[j].Err; err != nil {
			out[i].Err = fmt.Errorf("publish to %q: %w", reqs[i].Channel, err)
			continue
		}
		out[i].Result = s.stored(reqs[i].Channel, res[j].Appended)
	}
	return out, nil
}
