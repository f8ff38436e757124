// Package jetstream is a store.Engine on NATS JetStream, for several
// Herald nodes sharing one replicated log.
//
// # Layout
//
// One stream (Options.Stream, default HERALD) holds every channel's log,
// a subject per channel: herald.log.<base64url of the name>. Each message
// carries its offset, record id, time and idempotency key in headers and
// the payload as its data. Key-value buckets hold each channel's epoch
// (<stream>_epochs), the idempotency keys (<stream>_idem) and the small
// state (<stream>_state).
//
// # Why offsets stay contiguous with many publishers
//
// A node appends offset n+1 to a channel with the header
// Nats-Expected-Last-Subject-Sequence naming the stream sequence of the
// channel's message n, as the node last saw it. The stream's leader checks
// that expectation and appends in one step of its replicated log, so of
// two nodes that both saw message n only one gets n+1 stored; the other is
// refused ("wrong last sequence"), reads the channel's last message again
// and tries n+2 on top of it. A leader change does not break this: the new
// leader's log holds every acknowledged message (a publish is acknowledged
// once a quorum of replicas has it), and it checks expectations against
// that log. Within a node, appends to one channel take a lock, so they do
// not race each other.
package jetstream

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/heraldrt/herald/store"
)

// Options are the engine's settings.
type Options struct {
	// URLs are the NATS servers, comma-separated (nats.Connect's form).
	URLs string
	// Stream names the stream. Default HERALD.
	Stream string
	// Replicas is the stream's and buckets' replica count. Default 1.
	Replicas int
	// Retention is each channel's retention. Default: keep everything.
	Retention func(channel string) store.Retention
	// IdempotencyTTL is how long an idempotency key is remembered.
	// Default 24h.
	IdempotencyTTL time.Duration
	// MaxRecordBytes bounds a record (payload, id and key). Default 1 MiB.
	MaxRecordBytes int
	// Now is the clock. Default time.Now.
	Now func() time.Time
	// TrimInterval is how often retention purges what channels no longer
	// keep: reads never show what retention by count dropped, and records
	// past their age go at the next round. Default 1m; negative: never
	// (Trim only).
	TrimInterval time.Duration
	// TrimGrace is how long a message stays after it was stored however
	// short its retention, so that every node's feed has reported it
	// before it is purged. Default 1m.
	TrimGrace time.Duration
	// LeaseTTL is how long a lease (Lead) holds without being renewed.
	// Default DefaultLeaseTTL.
	LeaseTTL time.Duration
	// Logger receives the connection's changes (lost, back, errors).
	// Default slog.Default().
	Logger *slog.Logger
}

func (o Options) withDefaults() Options {
	if o.Stream == "" {
		o.Stream = "HERALD"
	}
	if o.Replicas == 0 {
		o.Replicas = 1
	}
	if o.Retention == nil {
		o.Retention = func(string) store.Retention { return store.DefaultRetention }
	}
	if o.IdempotencyTTL == 0 {
		o.IdempotencyTTL = 24 * time.Hour
	}
	if o.MaxRecordBytes == 0 {
		o.MaxRecordBytes = 1 << 20
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.TrimInterval == 0 {
		o.TrimInterval = time.Minute
	}
	if o.TrimGrace == 0 {
		o.TrimGrace = time.Minute
	}
	if o.LeaseTTL == 0 {
		o.LeaseTTL = DefaultLeaseTTL
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	return o
}

// Message headers.
const (
	hdrOffset = "Herald-Offset"
	hdrID     = "Herald-Id"
	hdrTime   = "Herald-Time" // Unix nanoseconds of the record's Time
	hdrKey    = "Herald-Key"
)

// Engine is a store.Engine on JetStream.
type Engine struct {
	opts   Options
	nc     *nats.Conn
	js     jetstream.JetStream
	stream jetstream.Stream
	epochs jetstream.KeyValue
	idem   jetstream.KeyValue
	state  jetstream.KeyValue
	floors jetstream.KeyValue // per channel, the first offset kept when retention removed the head's record too
	prefix string             // subject prefix of the channels
	node   string             // this engine's id among the nodes (leases)

	mu       sync.Mutex
	closed   bool
	channels map[string]*channel
	tags     map[tagKey]any // this node's appends not yet fed
	inflight sync.WaitGroup // Appends under way, for Close
	feedSet  bool
	feedStop func()
	feedDone chan struct{}
	// feedClosed is closed once the feed's consumer has stopped.
	feedClosed <-chan struct{}
	// allFed, when set, is closed by the feed once tags is empty: Close
	// waits on it for this node's appends to be reported.
	allFed chan struct{}
	// trimStop ends the trimmer's goroutine (nil without one); trimDone
	// is closed as it returns.
	trimStop, trimDone chan struct{}
}

var (
	_ store.Engine       = (*Engine)(nil)
	_ store.RemoteReader = (*Engine)(nil)
)

// RemoteReads reports that reads take a round trip to NATS
// (store.RemoteReader).
func (e *Engine) RemoteReads() bool { return true }

// channel is what a node knows of one channel: the lock its appends take
// and where its log ended when last seen.
type channel struct {
	mu      sync.Mutex
	known   bool   // lastSeq and head are read
	lastSeq uint64 // stream sequence of the head's message (0: none)
	head    uint64
	epoch   string
	// fedEpoch is epoch as the feed reads it, guarded by Engine.mu (the
	// feed must not wait for c.mu, which an append holds while it waits
	// for its acknowledgement).
	fedEpoch string
	// lastKey and lastID are the head's idempotency key and record id:
	// an append whose outcome was unknown finds there that it was stored.
	lastKey, lastID string
}

type tagKey struct {
	channel string
	offset  uint64
}

// Open connects to NATS and makes the stream and buckets when missing. It
// waits for NATS and its JetStream until ctx ends, then returns the last
// error.
func Open(ctx context.Context, opts Options) (*Engine, error) {
	opts = opts.withDefaults()
	log := opts.Logger
	nc, err := nats.Connect(opts.URLs, nats.Name("herald"), nats.MaxReconnects(-1), nats.RetryOnFailedConnect(true),
		nats.DisconnectErrHandler(func(nc *nats.Conn, err error) {
			if !nc.IsClosed() {
				log.Warn("jetstream: disconnected from NATS; reconnecting", "err", err)
			}
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) {
			log.Info("jetstream: reconnected to NATS", "server", nc.ConnectedUrlRedacted())
		}),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
			log.Warn("jetstream: NATS", "err", err)
		}))
	if err != nil {
		return nil, fmt.Errorf("jetstream: connect to %s: %w", opts.URLs, err)
	}
	e := &Engine{opts: opts, nc: nc, prefix: "herald.log.", node: newEpoch() + newEpoch(), channels: map[string]*channel{}, tags: map[tagKey]any{}}
	// NATS may be starting too (a cluster's processes start together), or
	// electing its JetStream leaders: the set-up is tried again until ctx
	// ends.
	for delay := 100 * time.Millisecond; ; delay = min(2*delay, 2*time.Second) {
		// Making a replicated stream or bucket waits for its group to
		// elect a leader: seconds while the cluster itself is forming.
		attempt, cancel := context.WithTimeout(ctx, 15*time.Second)
		err = e.setup(attempt)
		cancel()
		if err == nil {
			break
		}
		if !nc.IsConnected() {
			err = fmt.Errorf("jetstream: no NATS server answers at %s (%w)", opts.URLs, err)
		}
		select {
		case <-ctx.Done():
			nc.Close()
			return nil, err
		case <-time.After(delay):
		}
		log.Info("jetstream: waiting for NATS JetStream", "urls", opts.URLs, "err", err)
	}
	if opts.TrimInterval > 0 {
		e.trimStop, e.trimDone = make(chan struct{}), make(chan struct{})
		go e.trimLoop()
	}
	return e, nil
}

// trimLoop purges, every TrimInterval, what each channel's retention (by
// count and by age) no longer keeps, of what was stored more than
// TrimGrace ago. The
// Engine owns the goroutine; Close stops it.
func (e *Engine) trimLoop() {
	defer close(e.trimDone)
	tick := time.NewTicker(e.opts.TrimInterval)
	defer tick.Stop()
	for {
		select {
		case <-e.trimStop:
			return
		case <-tick.C:
		}
		ctx, cancel := context.WithTimeout(context.Background(), e.opts.TrimInterval)
		_ = e.trimRound(ctx)
		cancel()
	}
}

// trimRound applies retention to every channel once.
func (e *Engine) trimRound(ctx context.Context) error {
	// What the webhooks' router has not copied into the outbox yet stays.
	pin, err := e.routed(ctx)
	if err != nil {
		return err
	}
	lister, err := e.epochs.ListKeys(ctx)
	if err != nil {
		return err
	}
	for k := range lister.Keys() {
		name, ok := unkey(k)
		if !ok {
			continue
		}
		r := e.opts.Retention(name)
		if r.MaxCount < 1<<40 {
			if err := e.purgeOlder(ctx, name, uint64(r.MaxCount), pin); err != nil {
				return err
			}
		}
		if r.MaxAge > 0 {
			// Never younger than TrimGrace: every node's feed has had it.
			if err := e.purgeAged(ctx, name, e.opts.Now().Add(-max(r.MaxAge, e.opts.TrimGrace)), pin); err != nil {
				return err
			}
		}
	}
	return nil
}

// purgeOlder purges a channel's messages before the newest keep (at
// least the head's, which holds the offset), those stored more than
// TrimGrace ago and below stream sequence pin (0: any) only.
func (e *Engine) purgeOlder(ctx context.Context, ch string, keep, pin uint64) error {
	var c channel
	if err := e.refresh(ctx, ch, &c); err != nil || c.head == 0 {
		return err
	}
	keep = max(keep, 1)
	if c.head <= keep {
		return nil
	}
	cutoff := time.Now().Add(-e.opts.TrimGrace)
	for {
		m, off, err := e.next(ctx, ch, 1)
		if err != nil || m == nil || off > c.head-keep || !m.Time.Before(cutoff) || pinned(m.Sequence, pin) {
			return err
		}
		if err := e.stream.DeleteMsg(ctx, m.Sequence); err != nil {
			return fmt.Errorf("jetstream: trim %q: %w", ch, err)
		}
	}
}

// setup makes the stream and the buckets when missing (CreateOrUpdate:
// nodes starting together all ask, and agree). It keeps what an earlier
// attempt made: on a cluster starting for the first time each replicated
// stream elects its leader, and an attempt that times out after some of
// them goes on from there.
func (e *Engine) setup(ctx context.Context) error {
	var err error
	if e.js == nil {
		if e.js, err = jetstream.New(e.nc); err != nil {
			return fmt.Errorf("jetstream: %w", err)
		}
	}
	js := e.js
	if e.stream != nil {
		return e.buckets(ctx)
	}
	e.stream, err = js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name:     e.opts.Stream,
		Subjects: []string{e.prefix + ">"},
		Storage:  jetstream.FileStorage,
		Replicas: e.opts.Replicas,
		// Above claimLease: see reserve.
		Duplicates: dedupeWindow,
		// Reads go to the leader (no direct gets from replicas that may
		// lag): a record is visible as soon as its append is acknowledged.
		AllowDirect: false,
		// A batch's records of one channel are stored as one unit, so no
		// other node's record comes between them (appendAtomic).
		AllowAtomicPublish: true,
	})
	if err != nil {
		e.stream = nil
		return fmt.Errorf("jetstream: stream %s: %w", e.opts.Stream, err)
	}
	return e.buckets(ctx)
}

// buckets makes the key-value buckets that setup has not made yet.
func (e *Engine) buckets(ctx context.Context) error {
	for _, b := range []struct {
		name string
		kv   *jetstream.KeyValue
	}{{"epochs", &e.epochs}, {"idem", &e.idem}, {"floors", &e.floors}, {"state", &e.state}} {
		if *b.kv != nil {
			continue
		}
		kv, err := e.js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: e.opts.Stream + "_" + b.name, Storage: jetstream.FileStorage, Replicas: e.opts.Replicas})
		if err != nil {
			return fmt.Errorf("jetstream: bucket %s_%s: %w", e.opts.Stream, b.name, err)
		}
		*b.kv = kv
	}
	return nil
}

// subject is a channel's subject; key its name as a bucket key.
func (e *Engine) subject(ch string) string { return e.prefix + key(ch) }

func key(s string) string { return base64.RawURLEncoding.EncodeToString([]byte(s)) }

func unkey(k string) (string, bool) {
	b, err := base64.RawURLEncoding.DecodeString(k)
	return string(b), err == nil
}

func checkChannel(ch string) error {
	if len(ch) == 0 || len(ch) > 255 || strings.IndexByte(ch, 0) >= 0 {
		return fmt.Errorf("%w: %q", store.ErrBadChannel, ch)
	}
	return nil
}

// begin marks a call under way; it fails once Close began.
func (e *Engine) begin() error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		return store.ErrClosed
	}
	e.inflight.Add(1)
	return nil
}

func (e *Engine) channel(ch string) *channel {
	e.mu.Lock()
	defer e.mu.Unlock()
	c := e.channels[ch]
	if c == nil {
		c = &channel{}
		e.channels[ch] = c
	}
	return c
}

// epoch returns the channel's epoch, creating it when create is set.
func (e *Engine) epoch(ctx context.Context, ch string, create bool) (string, error) {
	k := key(ch)
	ent, err := e.epochs.Get(ctx, k)
	if err == nil {
		return string(ent.Value()), nil
	}
	if !errors.Is(err, jetstream.ErrKeyNotFound) {
		return "", fmt.Errorf("jetstream: epoch of %q: %w", ch, err)
	}
	if !create {
		return "", nil
	}
	ep := newEpoch()
	if _, err := e.epochs.Create(ctx, k, []byte(ep)); err != nil {
		if !isConflict(err) {
			return "", fmt.Errorf("jetstream: create the epoch of %q: %w", ch, err)
		}
		return e.epoch(ctx, ch, false) // another node made it first
	}
	return ep, nil
}

// refresh reads where the channel's log ends (c.mu held).
func (e *Engine) refresh(ctx context.Context, ch string, c *channel) error {
	m, err := e.stream.GetLastMsgForSubject(ctx, e.subject(ch))
	switch {
	case errors.Is(err, jetstream.ErrMsgNotFound):
		c.lastSeq, c.head, c.lastKey, c.lastID = 0, 0, "", ""
	case err != nil:
		return fmt.Errorf("jetstream: last message of %q: %w", ch, err)
	default:
		off, err := strconv.ParseUint(m.Header.Get(hdrOffset), 10, 64)
		if err != nil {
			return fmt.Errorf("jetstream: message %d of %q has no offset", m.Sequence, ch)
		}
		c.lastSeq, c.head = m.Sequence, off
		c.lastKey, c.lastID = m.Header.Get(hdrKey), m.Header.Get(hdrID)
	}
	c.known = true
	return nil
}

// Append stores rec (store.Engine).
func (e *Engine) Append(ctx context.Context, ch string, rec store.Record) (store.Appended, error) {
	if err := e.begin(); err != nil {
		return store.Appended{}, err
	}
	defer e.inflight.Done()
	res, err := e.append(ctx, ch, rec)
	return res, unavailable(ctx, err)
}

func (e *Engine) append(ctx context.Context, ch string, rec store.Record) (store.Appended, error) {
	if err := checkChannel(ch); err != nil {
		return store.Appended{}, err
	}
	if n := len(rec.Payload) + len(rec.ID) + len(rec.IdempotencyKey); n > e.opts.MaxRecordBytes {
		return store.Appended{}, fmt.Errorf("%w: %d bytes, the limit is %d", store.ErrTooLarge, n, e.opts.MaxRecordBytes)
	}
	if err := ctx.Err(); err != nil {
		return store.Appended{}, err
	}
	c := e.channel(ch)
	c.mu.Lock()
	defer c.mu.Unlock()
	return e.appendLocked(ctx, ch, c, rec)
}

// appendLocked appends rec to ch, whose lock the caller holds.
func (e *Engine) appendLocked(ctx context.Context, ch string, c *channel, rec store.Record) (store.Appended, error) {
	if rec.Time.IsZero() {
		rec.Time = e.opts.Now()
	}
	p, dup, err := e.prepare(ctx, ch, c, rec)
	if err != nil || dup != nil {
		return *dup, err
	}
	return e.publishOne(ctx, ch, c, p)
}

// pending is a record ready to be published: its idempotency key is
// claimed (idemKey, msgID set) or it has none.
type pending struct {
	i              int // its place in a batch
	rec            store.Record
	idemKey, msgID string
}

// prepare makes the channel's epoch when missing and claims rec's
// idempotency key (c.mu held). A key already stored gives its record,
// dup; an error gives a non-nil dup too (its zero value).
func (e *Engine) prepare(ctx context.Context, ch string, c *channel, rec store.Record) (pending, *store.Appended, error) {
	if c.epoch == "" {
		ep, err := e.epoch(ctx, ch, true)
		if err != nil {
			return pending{}, &store.Appended{}, err
		}
		c.epoch = ep
		e.mu.Lock()
		c.fedEpoch = ep // for the feed, which does not take c.mu
		e.mu.Unlock()
	}
	p := pending{rec: rec}
	if rec.IdempotencyKey != "" {
		p.idemKey = key(ch) + "." + key(rec.IdempotencyKey)
		dup, ok, id, err := e.reserve(ctx, p.idemKey)
		if err != nil || ok {
			return pending{}, &dup, err
		}
		p.msgID = id
	}
	return p, nil, nil
}

// message is rec as the message of offset off.
func (e *Engine) message(ch string, off uint64, p *pending) *nats.Msg {
	m := nats.NewMsg(e.subject(ch))
	m.Data = p.rec.Payload
	m.Header.Set(hdrOffset, strconv.FormatUint(off, 10))
	m.Header.Set(hdrID, p.rec.ID)
	m.Header.Set(hdrTime, strconv.FormatInt(p.rec.Time.UnixNano(), 10))
	if p.rec.IdempotencyKey != "" {
		m.Header.Set(hdrKey, p.rec.IdempotencyKey)
		// The stream's own deduplication: a record that a node stored
		// before it died holding the key (or whose answer was lost) is
		// answered as a duplicate instead of stored twice.
		m.Header.Set(jetstream.MsgIDHeader, p.msgID)
	}
	return m
}

// publishOne stores p's record at the channel's next offset (c.mu held).
func (e *Engine) publishOne(ctx context.Context, ch string, c *channel, p pending) (store.Appended, error) {
	rec, idemKey := p.rec, p.idemKey
	if !c.known {
		if err := e.refresh(ctx, ch, c); err != nil {
			// Nothing sent this time, but the claim may be one taken over
			// from a try that was: it keeps its deduplication id.
			return store.Appended{}, e.abandon(idemKey, err)
		}
	}
	for {
		off := c.head + 1
		m := e.message(ch, off, &p)
		tk := tagKey{ch, off}
		e.mu.Lock()
		e.tags[tk] = rec.Tag
		e.mu.Unlock()
		ack, err := e.js.PublishMsg(ctx, m, jetstream.WithExpectLastSequencePerSubject(c.lastSeq))
		if err != nil {
			e.mu.Lock()
			delete(e.tags, tk)
			e.mu.Unlock()
			conflict := isConflict(err)
			// Read where the log ends now: another node appended first, or
			// (the answer was lost: a timeout, a leader change) this very
			// record may be the head.
			if rerr := e.refresh(ctx, ch, c); rerr != nil {
				c.known = false
				return store.Appended{}, e.abandon(idemKey, fmt.Errorf("jetstream: append to %q: %w", ch, errors.Join(err, rerr)))
			}
			if rec.IdempotencyKey != "" && c.lastKey == rec.IdempotencyKey && c.lastID == rec.ID {
				res := store.Appended{Offset: c.head, Epoch: c.epoch, ID: rec.ID}
				e.remember(idemKey, res)
				return res, nil
			}
			if conflict {
				continue
			}
			// Not seen at the head, but the publish may still be stored
			// (a leader change can commit it after the read above).
			return store.Appended{}, e.abandon(idemKey, fmt.Errorf("jetstream: append to %q: %w", ch, err))
		}
		if ack.Duplicate {
			e.mu.Lock()
			delete(e.tags, tk)
			e.mu.Unlock()
			c.known = false // where the log ends is read again next time
			res, err := e.stored(ctx, ch, c.epoch, ack.Sequence, rec.ID)
			if err != nil {
				return store.Appended{}, e.abandon(idemKey, err)
			}
			e.remember(idemKey, res)
			return res, nil
		}
		c.lastSeq, c.head = ack.Sequence, off
		c.lastKey, c.lastID = rec.IdempotencyKey, rec.ID
		res := store.Appended{Offset: off, Epoch: c.epoch, ID: rec.ID}
		if idemKey != "" {
			e.remember(idemKey, res)
		}
		return res, nil
	}
}

// stored is the answer for a record the stream already held at seq
// (its deduplication said so): a duplicate unless it is this very record
// (id), stored by an earlier try whose answer was lost.
func (e *Engine) stored(ctx context.Context, ch, epoch string, seq uint64, id string) (store.Appended, error) {
	m, err := e.stream.GetMsg(ctx, seq)
	if err != nil {
		return store.Appended{}, fmt.Errorf("jetstream: append to %q: read the stored duplicate: %w", ch, err)
	}
	off, err := strconv.ParseUint(m.Header.Get(hdrOffset), 10, 64)
	if err != nil {
		return store.Appended{}, fmt.Errorf("jetstream: message %d of %q has no offset", seq, ch)
	}
	storedID := m.Header.Get(hdrID)
	return store.Appended{Offset: off, Epoch: epoch, ID: storedID, Duplicate: storedID != id}, nil
}

// claimLease is how long a node's claim on an idempotency key holds while
// its append is under way. Past it, the node is taken for dead and
// another append with the key takes the claim over; the stream's
// deduplication (window dedupeWindow, well above the lease) answers it
// with the dead node's record if that was stored. Node clocks must agree
// to within a fraction of it.
const (
	claimLease   = 10 * time.Second
	dedupeWindow = 2 * time.Minute
)

// idemValue is an idempotency key's record in its bucket.
type idemValue struct {
	Pending bool      `json:"pending,omitempty"`
	Lease   time.Time `json:"lease,omitzero"`  // a pending claim's end
	Nonce   string    `json:"nonce,omitempty"` // a claim's deduplication id, with the key
	Offset  uint64    `json:"offset,omitempty"`
	Epoch   string    `json:"epoch,omitempty"`
	ID      string    `json:"id,omitempty"`
	Expires time.Time `json:"expires"`
}

// reserve claims an idempotency key for an append; ok reports a duplicate
// (dup is the first append's answer). A key claimed by an append under
// way elsewhere is waited for. msgID is what the append sends as the
// stream's deduplication id: new for a new claim, the dead node's for a
// claim taken over.
func (e *Engine) reserve(ctx context.Context, k string) (dup store.Appended, ok bool, msgID string, err error) {
	now := e.opts.Now()
	fresh := idemValue{Pending: true, Nonce: newEpoch(), Lease: now.Add(claimLease), Expires: now.Add(e.opts.IdempotencyTTL)}
	claim, _ := json.Marshal(fresh)
	fail := func(err error) (store.Appended, bool, string, error) {
		return store.Appended{}, false, "", fmt.Errorf("jetstream: idempotency key: %w", err)
	}
	for {
		ent, err := e.idem.Get(ctx, k)
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			if _, err := e.idem.Create(ctx, k, claim); err == nil {
				return store.Appended{}, false, k + "." + fresh.Nonce, nil
			} else if !isConflict(err) {
				return fail(err)
			}
			continue
		}
		if err != nil {
			return fail(err)
		}
		var v idemValue
		if err := json.Unmarshal(ent.Value(), &v); err != nil {
			return fail(err)
		}
		switch {
		case !v.Expires.After(e.opts.Now()):
			// Expired: the key is new again.
			if _, err := e.idem.Update(ctx, k, claim, ent.Revision()); err == nil {
				return store.Appended{}, false, k + "." + fresh.Nonce, nil
			}
		case !v.Pending:
			return store.Appended{Offset: v.Offset, Epoch: v.Epoch, ID: v.ID, Duplicate: true}, true, "", nil
		case !v.Lease.After(e.opts.Now()):
			// Its node died holding it: take the claim over, with its
			// deduplication id. If that node stored the record, the
			// stream's deduplication says so.
			taken := fresh
			taken.Nonce = v.Nonce
			b, _ := json.Marshal(taken)
			if _, err := e.idem.Update(ctx, k, b, ent.Revision()); err == nil {
				return store.Appended{}, false, k + "." + v.Nonce, nil
			}
		default:
			select { // another append holds it: wait for its answer
			case <-ctx.Done():
				return store.Appended{}, false, "", ctx.Err()
			case <-time.After(5 * time.Millisecond):
			}
		}
	}
}

// remember records the answer of the append that held key k.
func (e *Engine) remember(k string, res store.Appended) {
	v, _ := json.Marshal(idemValue{Offset: res.Offset, Epoch: res.Epoch, ID: res.ID, Expires: e.opts.Now().Add(e.opts.IdempotencyTTL)})
	_, _ = e.idem.Put(context.Background(), k, v)
}

// abandon gives up an append that failed, and returns err. Its outcome
// may be unknown — its publish sent and perhaps stored, the answer lost
// (a timeout, a leader change), by this try or by an earlier one whose
// claim this one took over — so the claim is never given back: it stays,
// with its deduplication id, but its lease ends now. The client's retry
// takes it over at once and sends the same id, and the stream answers
// with the stored record if a try was stored, instead of storing it
// twice (as a new claim with a new id would). If the bucket cannot be
// reached either, the claim keeps its lease, and the retry takes it over
// when that ends. (A retry must come within the stream's deduplication
// window, dedupeWindow.)
func (e *Engine) abandon(k string, err error) error {
	if k == "" {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	ent, gerr := e.idem.Get(ctx, k)
	if gerr != nil {
		return err
	}
	var v idemValue
	if json.Unmarshal(ent.Value(), &v) != nil || !v.Pending {
		return err
	}
	v.Lease = e.opts.Now()
	b, _ := json.Marshal(v)
	_, _ = e.idem.Update(ctx, k, b, ent.Revision())
	return err
}

// AppendBatch appends each record (store.Engine): a channel's records in
// their order, channels side by side.
func (e *Engine) AppendBatch(ctx context.Context, recs []store.ChannelRecord) ([]store.BatchAppended, error) {
	res, err := e.appendBatch(ctx, recs)
	return res, unavailable(ctx, err)
}

func (e *Engine) appendBatch(ctx context.Context, recs []store.ChannelRecord) ([]store.BatchAppended, error) {
	if err := e.begin(); err != nil {
		return nil, err
	}
	defer e.inflight.Done()
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	out := make([]store.BatchAppended, len(recs))
	byChannel := map[string][]int{}
	var order []string
	for i, r := range recs {
		if _, ok := byChannel[r.Channel]; !ok {
			order = append(order, r.Channel)
		}
		byChannel[r.Channel] = append(byChannel[r.Channel], i)
	}
	var wg sync.WaitGroup
	for _, ch := range order {
		wg.Go(func() {
			// The channel's records go in one after another under its lock:
			// no other call's record comes between them.
			if err := checkChannel(ch); err != nil {
				for _, i := range byChannel[ch] {
					out[i].Err = err
				}
				return
			}
			c := e.channel(ch)
			c.mu.Lock()
			defer c.mu.Unlock()
			var run []pending
			keys := map[string]bool{}
			repeated := false
			for _, i := range byChannel[ch] {
				rec := recs[i].Record
				if n := len(rec.Payload) + len(rec.ID) + len(rec.IdempotencyKey); n > e.opts.MaxRecordBytes {
					out[i].Err = fmt.Errorf("%w: %d bytes, the limit is %d", store.ErrTooLarge, n, e.opts.MaxRecordBytes)
					continue
				}
				if rec.Time.IsZero() {
					rec.Time = e.opts.Now()
				}
				if k := rec.IdempotencyKey; k != "" {
					repeated = repeated || keys[k]
					keys[k] = true
				}
				run = append(run, pending{i: i, rec: rec})
			}
			if repeated {
				// A key twice in one batch: the second is answered with
				// the first's record, so they go one after the other.
				for _, p := range run {
					res, err := e.appendLocked(ctx, ch, c, p.rec)
					out[p.i] = store.BatchAppended{Appended: res, Err: err}
				}
				return
			}
			e.appendRun(ctx, ch, c, run, out)
		})
	}
	wg.Wait()
	return out, nil
}

// maxAtomic is how many records go in one atomic batch: the server's
// default bound.
const maxAtomic = 1000

// appendRun stores a batch's records of one channel (c.mu held), whose
// idempotency keys differ, answering each in out: their keys are
// claimed, then they are published as atomic batches, so no other node's
// record comes between them.
func (e *Engine) appendRun(ctx context.Context, ch string, c *channel, run []pending, out []store.BatchAppended) {
	var todo []pending
	for _, p := range run {
		q, dup, err := e.prepare(ctx, ch, c, p.rec)
		if err != nil || dup != nil {
			out[p.i] = store.BatchAppended{Appended: *dup, Err: err}
			continue
		}
		q.i = p.i
		todo = append(todo, q)
	}
	for len(todo) > 0 {
		chunk := todo[:min(len(todo), maxAtomic)]
		todo = todo[len(chunk):]
		if len(chunk) > 1 {
			err := e.appendAtomic(ctx, ch, c, chunk, out)
			if err == nil {
				continue
			}
			if !errors.Is(err, errNotAtomic) {
				for _, p := range chunk {
					out[p.i].Err = e.abandon(p.idemKey, err)
				}
				continue
			}
			e.opts.Logger.Debug("jetstream: a batch goes record by record", "channel", ch, "err", err)
		}
		for _, p := range chunk {
			res, err := e.publishOne(ctx, ch, c, p)
			out[p.i] = store.BatchAppended{Appended: res, Err: err}
		}
	}
}

// errNotAtomic is an atomic batch the stream refused as such (a server
// without atomic batches, too many under way, a record whose
// deduplication id is stored already): nothing of it is stored, and its
// records go one by one.
var errNotAtomic = errors.New("jetstream: not stored as an atomic batch")

// appendAtomic stores chunk's records at the channel's next offsets as
// one atomic batch (c.mu held), answering each in out. The first message
// expects the channel's last sequence, as a single append does: if
// another node appended first, nothing is stored and the batch is tried
// again after the new head.
func (e *Engine) appendAtomic(ctx context.Context, ch string, c *channel, chunk []pending, out []store.BatchAppended) error {
	n := len(chunk)
	last := &chunk[n-1]
	for {
		if !c.known {
			if err := e.refresh(ctx, ch, c); err != nil {
				return fmt.Errorf("jetstream: append to %q: %w", ch, err)
			}
		}
		batchID := newEpoch() + newEpoch()
		msgs := make([]*nats.Msg, n)
		e.mu.Lock()
		for j := range chunk {
			off := c.head + 1 + uint64(j)
			m := e.message(ch, off, &chunk[j])
			m.Header.Set("Nats-Batch-Id", batchID)
			m.Header.Set("Nats-Batch-Sequence", strconv.Itoa(j+1))
			msgs[j] = m
			e.tags[tagKey{ch, off}] = chunk[j].rec.Tag
		}
		e.mu.Unlock()
		msgs[0].Header.Set(jetstream.ExpectedLastSubjSeqHeader, strconv.FormatUint(c.lastSeq, 10))
		msgs[n-1].Header.Set("Nats-Batch-Commit", "1")
		head := c.head
		untag := func() {
			e.mu.Lock()
			for j := range chunk {
				delete(e.tags, tagKey{ch, head + 1 + uint64(j)})
			}
			e.mu.Unlock()
		}
		var err error
		for _, m := range msgs[:n-1] {
			if err = e.nc.PublishMsg(m); err != nil {
				break
			}
		}
		var ack *jetstream.PubAck
		if err == nil {
			ack, err = e.js.PublishMsg(ctx, msgs[n-1])
		}
		if err != nil {
			untag()
			var apiErr *jetstream.APIError
			conflict := isConflict(err)
			if !conflict && errors.As(err, &apiErr) {
				return fmt.Errorf("%w: %w", errNotAtomic, err)
			}
			// Read where the log ends now: another node appended first,
			// or (the answer was lost) this very batch is the head.
			if rerr := e.refresh(ctx, ch, c); rerr != nil {
				c.known = false
				return fmt.Errorf("jetstream: append to %q: %w", ch, errors.Join(err, rerr))
			}
			if c.lastID == last.rec.ID && c.head >= uint64(n) {
				e.answer(c, chunk, out)
				return nil
			}
			if conflict {
				continue
			}
			return fmt.Errorf("jetstream: append to %q: %w", ch, err)
		}
		c.lastSeq, c.head = ack.Sequence, c.head+uint64(n)
		c.lastKey, c.lastID = last.rec.IdempotencyKey, last.rec.ID
		e.answer(c, chunk, out)
		return nil
	}
}

// answer answers chunk's records, the last ones of the channel's log.
func (e *Engine) answer(c *channel, chunk []pending, out []store.BatchAppended) {
	first := c.head - uint64(len(chunk)) + 1
	for j, p := range chunk {
		res := store.Appended{Offset: first + uint64(j), Epoch: c.epoch, ID: p.rec.ID}
		if p.idemKey != "" {
			e.remember(p.idemKey, res)
		}
		out[p.i] = store.BatchAppended{Appended: res}
	}
}

// Head returns the channel's epoch and head, creating its epoch
// (store.Engine).
func (e *Engine) Head(ctx context.Context, ch string) (store.Position, error) {
	var res store.Position
	err := retryRead(ctx, func() (err error) {
		res, err = e.head(ctx, ch)
		return err
	})
	return res, unavailable(ctx, err)
}

func (e *Engine) head(ctx context.Context, ch string) (store.Position, error) {
	if err := e.begin(); err != nil {
		return store.Position{}, err
	}
	defer e.inflight.Done()
	if err := checkChannel(ch); err != nil {
		return store.Position{}, err
	}
	ep, err := e.epoch(ctx, ch, true)
	if err != nil {
		return store.Position{}, err
	}
	var c channel
	if err := e.refresh(ctx, ch, &c); err != nil {
		return store.Position{}, err
	}
	return store.Position{Epoch: ep, Head: c.head}, nil
}

// firstKept returns the first kept message of a channel at or after
// stream sequence from, or nil.
func (e *Engine) next(ctx context.Context, ch string, from uint64) (*jetstream.RawStreamMsg, uint64, error) {
	m, err := e.stream.GetMsg(ctx, from, jetstream.WithGetMsgSubject(e.subject(ch)))
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return nil, 0, nil
	}
	if err != nil {
		return nil, 0, fmt.Errorf("jetstream: read %q: %w", ch, err)
	}
	off, err := strconv.ParseUint(m.Header.Get(hdrOffset), 10, 64)
	if err != nil {
		return nil, 0, fmt.Errorf("jetstream: message %d of %q has no offset", m.Sequence, ch)
	}
	return m, off, nil
}

// Read returns kept records after an offset (store.Engine).
func (e *Engine) Read(ctx context.Context, ch string, after uint64, limit int) (store.Page, error) {
	var res store.Page
	err := retryRead(ctx, func() (err error) {
		res, err = e.read(ctx, ch, after, limit)
		return err
	})
	return res, unavailable(ctx, err)
}

func (e *Engine) read(ctx context.Context, ch string, after uint64, limit int) (store.Page, error) {
	if err := e.begin(); err != nil {
		return store.Page{}, err
	}
	defer e.inflight.Done()
	if err := checkChannel(ch); err != nil {
		return store.Page{}, err
	}
	if limit <= 0 || limit > 1000 {
		limit = 1000
	}
	ep, err := e.epoch(ctx, ch, false)
	if err != nil {
		return store.Page{}, err
	}
	if ep == "" {
		return store.Page{First: 1}, nil
	}
	var c channel
	if err := e.refresh(ctx, ch, &c); err != nil {
		return store.Page{}, err
	}
	page := store.Page{Epoch: ep, Head: c.head, First: c.head + 1}
	if e.opts.Retention(ch).MaxCount == 0 {
		page.Trimmed = after+1 < page.First && after < page.Head
		return page, nil // keeps nothing: the head's message only holds the offset
	}
	first, firstOff, err := e.next(ctx, ch, 1)
	if err != nil || first == nil {
		return page, err
	}
	floor, err := e.floor(ctx, ch)
	if err != nil {
		return store.Page{}, err
	}
	page.First = max(firstOff, floor)
	// Retention by count holds at once, whatever has been purged yet: the
	// messages go later (Trim), once every node's feed has had them.
	if r := e.opts.Retention(ch); r.MaxCount < 1<<40 {
		page.First = max(page.First, c.head-min(c.head, uint64(r.MaxCount))+1)
	}
	if after >= c.head || page.First > c.head {
		page.Trimmed = after+1 < page.First && after < page.Head
		return page, nil
	}
	page.Trimmed = after+1 < page.First
	after = max(after, page.First-1)
	if after+1 < firstOff {
		after = firstOff - 1
	}
	// The stream sequence to start from: the first kept message, or the
	// one of offset after+1, found by bisecting the sequences between.
	seq := first.Sequence
	if after+1 > firstOff {
		lo, hi := first.Sequence, c.lastSeq // the message of offset after+1 is in (lo, hi]
		for lo+1 < hi {
			mid := lo + (hi-lo)/2
			m, off, err := e.next(ctx, ch, mid)
			if err != nil {
				return store.Page{}, err
			}
			if m == nil || off > after+1 {
				hi = mid
			} else if off == after+1 {
				lo, hi = m.Sequence-1, m.Sequence
			} else {
				lo = m.Sequence
			}
		}
		seq = hi
	}
	if want := min(uint64(limit), c.head-after); want > readByConsumer {
		entries, err := e.readConsumer(ctx, ch, seq, after, c.head, int(want))
		if err != nil {
			return store.Page{}, err
		}
		page.Entries = entries
		return page, nil
	}
	for len(page.Entries) < limit {
		m, off, err := e.next(ctx, ch, seq)
		if err != nil {
			return store.Page{}, err
		}
		if m == nil || off > c.head {
			break
		}
		if off > after {
			t, _ := strconv.ParseInt(m.Header.Get(hdrTime), 10, 64)
			page.Entries = append(page.Entries, store.Entry{Offset: off, Time: time.Unix(0, t), Payload: m.Data})
		}
		seq = m.Sequence + 1
	}
	return page, nil
}

// readByConsumer is the page size from which Read fetches through a
// consumer (one request for the page) rather than a request per message.
const readByConsumer = 16

// readConsumer reads up to want messages of ch from stream sequence seq,
// keeping those in (after, head].
func (e *Engine) readConsumer(ctx context.Context, ch string, seq, after, head uint64, want int) ([]store.Entry, error) {
	out := make([]store.Entry, 0, want)
	err := consume(ctx, e.stream, e.subject(ch), seq, want, 2*time.Second, func(m jetstream.Msg) bool {
		h := m.Headers()
		off, err := strconv.ParseUint(h.Get(hdrOffset), 10, 64)
		if err != nil {
			return true
		}
		if off > head {
			return false // appended after the read began: beyond the page
		}
		if off > after && len(out) < want {
			t, _ := strconv.ParseInt(h.Get(hdrTime), 10, 64)
			out = append(out, store.Entry{Offset: off, Time: time.Unix(0, t), Payload: m.Data()})
		}
		return len(out) < want
	})
	if err != nil {
		return nil, fmt.Errorf("jetstream: read %q: %w", ch, err)
	}
	return out, nil
}

// consume calls fn with the messages of subject from stream sequence seq,
// in order, until fn returns false or none is left, fetching want at a
// time. It
// reads through a consumer of its own: a plain ephemeral one, in memory,
// deleted once read (and by the server after InactiveThreshold should
// the delete be lost); an ordered consumer would recreate itself without
// end when the server refuses, holding the reader with it. Each fetch
// waits up to wait for its messages (0: takes what is there).
func consume(ctx context.Context, stream jetstream.Stream, subject string, seq uint64, want int, wait time.Duration, fn func(jetstream.Msg) bool) error {
	cons, err := stream.CreateConsumer(ctx, jetstream.ConsumerConfig{
		FilterSubject: subject, DeliverPolicy: jetstream.DeliverByStartSequencePolicy, OptStartSeq: seq,
		AckPolicy: jetstream.AckNonePolicy, MemoryStorage: true, Replicas: 1, InactiveThreshold: 30 * time.Second})
	if err != nil {
		return err
	}
	defer func() {
		dctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_ = stream.DeleteConsumer(dctx, cons.CachedInfo().Name)
		cancel()
	}()
	for {
		var batch jetstream.MessageBatch
		if wait > 0 {
			w := wait
			if d, ok := ctx.Deadline(); ok {
				w = min(w, max(time.Until(d), 10*time.Millisecond))
			}
			batch, err = cons.Fetch(want, jetstream.FetchMaxWait(w))
		} else {
			batch, err = cons.FetchNoWait(want)
		}
		if err != nil {
			return err
		}
		n, more := 0, true
		for m := range batch.Messages() {
			n++
			if more {
				more = fn(m)
			}
		}
		if err := batch.Error(); err != nil && !errors.Is(err, jetstream.ErrNoMessages) {
			return err
		}
		if n == 0 || !more || ctx.Err() != nil {
			return ctx.Err() // nothing more (trimmed meanwhile), or fn has what it wants
		}
	}
}

// Channels lists the channels created, by name (store.Engine).
func (e *Engine) Channels(ctx context.Context, after string, limit int) ([]store.ChannelInfo, error) {
	if err := e.begin(); err != nil {
		return nil, err
	}
	defer e.inflight.Done()
	if limit <= 0 || limit > 1000 {
		limit = 1000
	}
	lister, err := e.epochs.ListKeys(ctx)
	if err != nil {
		return nil, fmt.Errorf("jetstream: list channels: %w", err)
	}
	var names []string
	for k := range lister.Keys() {
		if name, ok := unkey(k); ok && name > after {
			names = append(names, name)
		}
	}
	slices.Sort(names)
	if len(names) > limit {
		names = names[:limit]
	}
	out := make([]store.ChannelInfo, 0, len(names))
	for _, name := range names {
		p, err := e.Read(ctx, name, 1<<63, 1)
		if err != nil {
			return nil, err
		}
		out = append(out, store.ChannelInfo{Name: name, Epoch: p.Epoch, Head: p.Head, First: p.First})
	}
	return out, nil
}

// Trim applies retention r to channel now: by count, and by age on the
// records' own times (the engine's clock).
func (e *Engine) Trim(ctx context.Context, ch string, r store.Retention) error {
	if err := e.begin(); err != nil {
		return err
	}
	defer e.inflight.Done()
	keep := uint64(r.MaxCount)
	if keep == 0 {
		keep = 1
	}
	if r.MaxCount < 1<<40 {
		if err := e.stream.Purge(ctx, jetstream.WithPurgeSubject(e.subject(ch)), jetstream.WithPurgeKeep(keep)); err != nil {
			return fmt.Errorf("jetstream: trim %q: %w", ch, err)
		}
	}
	if r.MaxAge <= 0 {
		return nil
	}
	return e.purgeAged(ctx, ch, e.opts.Now().Add(-r.MaxAge), 0)
}

// purgeAged purges the records of ch older than cutoff, one sequence at a
// time from the oldest, keeping the head's message (it holds the
// offset): when the head's record is too old as well, a floor hides it.
// Messages from stream sequence pin on stay (0: none does).
func (e *Engine) purgeAged(ctx context.Context, ch string, cutoff time.Time, pin uint64) error {
	var c channel
	if err := e.refresh(ctx, ch, &c); err != nil {
		return err
	}
	for {
		m, off, err := e.next(ctx, ch, 1)
		if err != nil || m == nil {
			return err
		}
		t, _ := strconv.ParseInt(m.Header.Get(hdrTime), 10, 64)
		if !time.Unix(0, t).Before(cutoff) || pinned(m.Sequence, pin) {
			return nil
		}
		if off >= c.head {
			return e.setFloor(ctx, ch, c.head+1)
		}
		if err := e.stream.DeleteMsg(ctx, m.Sequence); err != nil {
			return fmt.Errorf("jetstream: trim %q: %w", ch, err)
		}
	}
}

// pinned reports a message the trimmer keeps for the webhooks' router.
func pinned(seq, pin uint64) bool { return pin > 0 && seq >= pin }

// floor returns the first offset retention left a channel beyond what
// its messages show (0: none).
func (e *Engine) floor(ctx context.Context, ch string) (uint64, error) {
	ent, err := e.floors.Get(ctx, key(ch))
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("jetstream: floor of %q: %w", ch, err)
	}
	return strconv.ParseUint(string(ent.Value()), 10, 64)
}

func (e *Engine) setFloor(ctx context.Context, ch string, f uint64) error {
	if _, err := e.floors.Put(ctx, key(ch), []byte(strconv.FormatUint(f, 10))); err != nil {
		return fmt.Errorf("jetstream: floor of %q: %w", ch, err)
	}
	return nil
}

// Feed sets the receiver of the commit feed (store.Engine): an ordered
// consumer of the stream from its end, so every node reports every
// record, in stream order (per channel, offset order).
func (e *Engine) Feed(receive func([]store.Committed)) error {
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		return store.ErrClosed
	}
	if e.feedSet {
		e.mu.Unlock()
		return fmt.Errorf("jetstream: %w", store.ErrFeedSet)
	}
	e.feedSet = true
	e.mu.Unlock()
	ctx := context.Background()
	cons, err := e.js.OrderedConsumer(ctx, e.opts.Stream, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{e.prefix + ">"}, DeliverPolicy: jetstream.DeliverNewPolicy})
	if err != nil {
		return fmt.Errorf("jetstream: feed: %w", err)
	}
	done := make(chan struct{})
	batch := make([]store.Committed, 0, 1)
	cc, err := cons.Consume(func(m jetstream.Msg) {
		subj := m.Subject()
		name, ok := unkey(strings.TrimPrefix(subj, e.prefix))
		if !ok {
			return
		}
		h := m.Headers()
		off, err := strconv.ParseUint(h.Get(hdrOffset), 10, 64)
		if err != nil {
			return
		}
		t, _ := strconv.ParseInt(h.Get(hdrTime), 10, 64)
		c := e.channel(name)
		e.mu.Lock()
		ep := c.fedEpoch
		e.mu.Unlock()
		if ep == "" {
			ep, _ = e.epoch(ctx, name, false)
			e.mu.Lock()
			c.fedEpoch = ep
			e.mu.Unlock()
		}
		e.mu.Lock()
		tk := tagKey{name, off}
		tag := e.tags[tk]
		delete(e.tags, tk)
		if len(e.tags) == 0 && e.allFed != nil {
			close(e.allFed)
			e.allFed = nil
		}
		e.mu.Unlock()
		batch = append(batch[:0], store.Committed{Channel: name, Offset: off, Epoch: ep, Record: store.Record{
			ID: h.Get(hdrID), Time: time.Unix(0, t), Payload: m.Data(), IdempotencyKey: h.Get(hdrKey), Tag: tag}})
		receive(batch)
	})
	if err != nil {
		return fmt.Errorf("jetstream: feed: %w", err)
	}
	e.mu.Lock()
	e.feedStop = func() { cc.Drain(); <-cc.Closed(); close(done) }
	e.feedDone = done
	e.feedClosed = cc.Closed()
	e.mu.Unlock()
	return nil
}

// PutState stores value under key (store.Engine).
func (e *Engine) PutState(ctx context.Context, k string, value []byte) error {
	if err := e.begin(); err != nil {
		return err
	}
	defer e.inflight.Done()
	if len(k) < 1 || len(k) > 1024 {
		return fmt.Errorf("jetstream: state key of %d bytes: want 1 to 1,024", len(k))
	}
	if _, err := e.state.Put(ctx, key(k), value); err != nil {
		return fmt.Errorf("jetstream: put state: %w", err)
	}
	return nil
}

// CreateState stores value under key unless the key holds a value
// already, and returns the value the key holds after the call: of nodes
// starting at once, all end up with the first one's.
func (e *Engine) CreateState(ctx context.Context, k string, value []byte) ([]byte, error) {
	if err := e.begin(); err != nil {
		return nil, err
	}
	defer e.inflight.Done()
	if _, err := e.state.Create(ctx, key(k), value); err == nil {
		return value, nil
	} else if !isConflict(err) {
		return nil, fmt.Errorf("jetstream: create state: %w", err)
	}
	ent, err := e.state.Get(ctx, key(k))
	if err != nil {
		return nil, fmt.Errorf("jetstream: create state: %w", err)
	}
	return ent.Value(), nil
}

// GetState returns the value under key (store.Engine).
func (e *Engine) GetState(ctx context.Context, k string) ([]byte, bool, error) {
	if err := e.begin(); err != nil {
		return nil, false, err
	}
	defer e.inflight.Done()
	ent, err := e.state.Get(ctx, key(k))
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, fmt.Errorf("jetstream: get state: %w", err)
	}
	return ent.Value(), true, nil
}

// DeleteState removes key (store.Engine).
func (e *Engine) DeleteState(ctx context.Context, k string) error {
	if err := e.begin(); err != nil {
		return err
	}
	defer e.inflight.Done()
	if err := e.state.Purge(ctx, key(k)); err != nil && !errors.Is(err, jetstream.ErrKeyNotFound) {
		return fmt.Errorf("jetstream: delete state: %w", err)
	}
	return nil
}

var _ store.StateWatcher = (*Engine)(nil)

// WatchState reports every change to the keys with prefix, whichever
// node made it (store.StateWatcher). The watch is a JetStream consumer
// that follows the bucket from now on; it survives reconnections.
func (e *Engine) WatchState(prefix string, fn func(k string, value []byte, deleted bool)) (stop func(), err error) {
	if err := e.begin(); err != nil {
		return nil, err
	}
	defer e.inflight.Done()
	w, err := e.state.WatchAll(context.Background(), jetstream.UpdatesOnly())
	if err != nil {
		return nil, fmt.Errorf("jetstream: watch state: %w", err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for ent := range w.Updates() {
			if ent == nil {
				continue
			}
			name, ok := unkey(ent.Key())
			if !ok || !strings.HasPrefix(name, prefix) {
				continue
			}
			fn(name, ent.Value(), ent.Operation() != jetstream.KeyValuePut)
		}
	}()
	return func() { _ = w.Stop(); <-done }, nil
}

var _ store.Bus = (*Engine)(nil)

// busSubject is a bus topic's subject: plain NATS, outside the stream's
// subjects, so nothing of it is stored.
func (e *Engine) busSubject(topic string) string {
	return "herald.bus." + e.opts.Stream + "." + key(topic)
}

// Broadcast sends data to every node listening on topic (store.Bus).
func (e *Engine) Broadcast(topic string, data []byte) error {
	if err := e.nc.Publish(e.busSubject(topic), data); err != nil {
		return fmt.Errorf("jetstream: broadcast %s: %w", topic, err)
	}
	return nil
}

// Listen calls fn with every broadcast on topic (store.Bus).
func (e *Engine) Listen(topic string, fn func(data []byte)) (stop func(), err error) {
	if err := e.begin(); err != nil {
		return nil, err
	}
	defer e.inflight.Done()
	ch := make(chan *nats.Msg, 256)
	sub, err := e.nc.ChanSubscribe(e.busSubject(topic), ch)
	if err != nil {
		return nil, fmt.Errorf("jetstream: listen %s: %w", topic, err)
	}
	quit, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case m := <-ch:
				fn(m.Data)
			case <-quit:
				return
			}
		}
	}()
	return func() { _ = sub.Unsubscribe(); close(quit); <-done }, nil
}

// ScanState calls fn for the keys with prefix, in order (store.Engine).
func (e *Engine) ScanState(ctx context.Context, prefix string, fn func(string, []byte) error) error {
	if err := e.begin(); err != nil {
		return err
	}
	defer e.inflight.Done()
	lister, err := e.state.ListKeys(ctx)
	if err != nil {
		return fmt.Errorf("jetstream: scan state: %w", err)
	}
	var keys []string
	for k := range lister.Keys() {
		if name, ok := unkey(k); ok && strings.HasPrefix(name, prefix) {
			keys = append(keys, name)
		}
	}
	slices.Sort(keys)
	for _, k := range keys {
		ent, err := e.state.Get(ctx, key(k))
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			continue
		}
		if err != nil {
			return fmt.Errorf("jetstream: scan state: %w", err)
		}
		if err := fn(k, ent.Value()); err != nil {
			return err
		}
	}
	return nil
}

// Healthy reports whether the engine can serve: nil while connected to
// NATS, else what it is doing about it (for /readyz).
func (e *Engine) Healthy() error {
	switch st := e.nc.Status(); st {
	case nats.CONNECTED:
		return nil
	case nats.RECONNECTING, nats.CONNECTING:
		return fmt.Errorf("not connected to NATS (%s): reconnecting", e.opts.URLs)
	default:
		return fmt.Errorf("not connected to NATS (%s): %s", e.opts.URLs, strings.ToLower(st.String()))
	}
}

// Close waits for the calls under way, stops the feed once it has
// reported them, and disconnects (store.Engine).
func (e *Engine) Close() error {
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		return nil
	}
	e.closed = true
	e.mu.Unlock()
	e.inflight.Wait()
	if e.trimStop != nil {
		close(e.trimStop)
		<-e.trimDone
	}
	if e.feedStop != nil && e.nc.IsConnected() {
		e.waitFed()
		e.feedStop()
	}
	// Away from NATS the feed can neither report anything more nor
	// drain: closing the connection ends it.
	e.nc.Close()
	if e.feedStop != nil {
		select {
		case <-e.feedClosed:
		case <-time.After(5 * time.Second):
		}
	}
	return nil
}

// waitFed waits until the feed has reported this node's appends, or 5 s
// (a record whose stream the feed cannot read any more is not waited for
// forever).
func (e *Engine) waitFed() {
	e.mu.Lock()
	if len(e.tags) == 0 {
		e.mu.Unlock()
		return
	}
	done := make(chan struct{})
	e.allFed = done
	e.mu.Unlock()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
	}
}

// newEpoch is a fresh epoch: 6 random bytes in lowercase hex, as the
// Badger store makes them.
func newEpoch() string {
	var b [6]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// retryRead runs read again while it fails the way a busy or re-forming
// cluster makes requests fail for a moment (no responders, a timeout):
// up to five tries over about 1.5 s, within ctx. Reads change nothing,
// so trying again is safe.
func retryRead(ctx context.Context, read func() error) error {
	delay := 50 * time.Millisecond
	for try := 1; ; try++ {
		err := read()
		if err == nil || try == 5 || ctx.Err() != nil || !transient(err) {
			return err
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(delay):
		}
		delay *= 2
	}
}

// transient reports a request that failed for want of an answer, not
// for what it asked.
func transient(err error) bool {
	return errors.Is(err, nats.ErrNoResponders) || errors.Is(err, nats.ErrTimeout) ||
		errors.Is(err, jetstream.ErrNoStreamResponse) || errors.Is(err, context.DeadlineExceeded) ||
		errors.Is(err, nats.ErrConnectionReconnecting)
}

// unavailable marks err, an error of NATS (not of the caller's input nor
// of its ctx), as store.ErrUnavailable: the caller may try again, and the
// API answers 503.
func unavailable(ctx context.Context, err error) error {
	if err == nil || ctx.Err() != nil || errors.Is(err, store.ErrClosed) || errors.Is(err, store.ErrBadChannel) ||
		errors.Is(err, store.ErrTooLarge) || errors.Is(err, store.ErrUnavailable) {
		return err
	}
	return fmt.Errorf("%w: %w", store.ErrUnavailable, err)
}

// isConflict reports an optimistic-concurrency refusal: a publish whose
// expected last sequence was not the stream's (another node appended
// first), or a key created or updated by someone else meanwhile. A
// single-replica stream reports it with one error code, a replicated one
// with another.
func isConflict(err error) bool {
	if errors.Is(err, jetstream.ErrKeyExists) || errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
		return true
	}
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) && (apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence ||
		apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant)
}
