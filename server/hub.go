package server

import (
	"log/slog"
	"sync"
	"time"
)

// Lock order, outermost first (never take an outer lock while holding an
// inner one):
//
//	hub shard (hubShard.mu) → channel (channel.mu) → session (Session.mu) → queue (queue.mu)
//	registry (registry.mu) → Session.mu
//	any of them → an observer's queue (Observer.mu), which is held only
//	to append an event and takes no other lock
//
// No lock is held across I/O: store reads and network writes happen with
// none of them held. Helpers that expect a lock to be held end in "Locked".

// numShards spreads the channel registry so that subscribes and
// publishes on different channels rarely meet on one lock.
const numShards = 64

// hub is the registry of channels that have subscribers, and the fan-out.
type hub struct {
	shards     [numShards]hubShard
	maxPending int // bound of a catching-up subscription's buffer
	logger     *slog.Logger
	obs        *observers // told when a channel is occupied and vacated
	now        func() time.Time
}

type hubShard struct {
	mu       sync.RWMutex // guards channels and every channel's refs
	channels map[string]*channel
}

// channel is one channel with at least one subscriber (or one on the way).
type channel struct {
	name string
	refs int // guarded by the shard's mu

	mu   sync.Mutex // guards subs and the live state of each subscription
	subs []*subscription
}

func newHub(maxPending int, logger *slog.Logger, obs *observers, now func() time.Time) *hub {
	h := &hub{maxPending: maxPending, logger: logger, obs: obs, now: now}
	for i := range h.shards {
		h.shards[i].channels = make(map[string]*channel)
	}
	return h
}

func (h *hub) shard(name string) *hubShard {
	return &h.shards[fnv64a(name)%numShards]
}

// fnv64a is FNV-1a over a string without the allocation hash/fnv costs.
func fnv64a(s string) uint64 {
	const offset64, prime64 = 14695981039346656037, 1099511628211
	h := uint64(offset64)
	for i := 0; i < len(s); i++ {
		h ^= uint64(s[i])
		h *= prime64
	}
	return h
}

// acquire returns the channel, creating it, and takes a reference that
// release gives back. A channel created is occupied; it is told to the
// observers under the shard's lock, so that they hear of a channel's
// occupations and vacations in the order they happen.
func (h *hub) acquire(name string) *channel {
	sh := h.shard(name)
	sh.mu.Lock()
	c := sh.channels[name]
	if c == nil {
		c = &channel{name: name}
		sh.channels[name] = c
		if h.obs.want(ChannelOccupied) {
			h.obs.emit(Event{Kind: ChannelOccupied, At: h.now(), Channel: name})
		}
	}
	c.refs++
	sh.mu.Unlock()
	return c
}

// release drops a reference; the last one removes the channel.
func (h *hub) release(c *channel) {
	sh := h.shard(c.name)
	sh.mu.Lock()
	c.refs--
	if c.refs == 0 && sh.channels[c.name] == c {
		delete(sh.channels, c.name)
		if h.obs.want(ChannelVacated) {
			h.obs.emit(Event{Kind: ChannelVacated, At: h.now(), Channel: c.name})
		}
	}
	sh.mu.Unlock()
}

func (h *hub) lookup(name string) *channel {
	sh := h.shard(name)
	sh.mu.RLock()
	c := sh.channels[name]
	sh.mu.RUnlock()
	return c
}

// subscribers returns how many subscriptions a channel has now.
func (h *hub) subscribers(name string) int {
	c := h.lookup(name)
	if c == nil {
		return 0
	}
	c.mu.Lock()
	n := len(c.subs)
	c.mu.Unlock()
	return n
}

// add registers a subscription that starts catching up.
func (c *channel) add(sub *subscription) {
	c.mu.Lock()
	sub.index = len(c.subs)
	c.subs = append(c.subs, sub)
	c.mu.Unlock()
}

// remove unregisters a subscription.
func (c *channel) remove(sub *subscription) {
	c.mu.Lock()
	if i := sub.index; i >= 0 && i < len(c.subs) && c.subs[i] == sub {
		last := len(c.subs) - 1
		c.subs[i] = c.subs[last]
		c.subs[i].index = i
		c.subs[last] = nil
		c.subs = c.subs[:last]
		sub.index = -1
	}
	sub.pending = nil
	c.mu.Unlock()
}

// deliver fans a run of stored messages of one channel — consecutive
// offsets, ascending — out to the channel's subscribers. The caller
// guarantees that, per channel, runs come in offset order (the engine's
// commit feed does, by contract). It never blocks on a session: a full queue closes
// that session as a slow consumer.
func (h *hub) deliver(run []*Message) {
	c := h.lookup(run[0].Channel)
	if c == nil {
		return
	}
	first, last := run[0].Offset, run[len(run)-1].Offset
	c.mu.Lock()
	for _, sub := range c.subs {
		if !sub.live {
			// Catching up: park the run; the drainer merges it at the
			// hand-over. When the buffer is full, drop it all and let the
			// drainer read the store again: the log has every message.
			if !sub.overflow {
				if len(sub.pending)+len(run) <= h.maxPending {
					sub.pending = append(sub.pending, run...)
				} else {
					sub.overflow = true
					sub.pending = nil
				}
			}
			continue
		}
		if last <= sub.last {
			continue // already sent from the store at the hand-over
		}
		if sub.last+1 < first {
			// Cannot happen while the feed is ordered; never paper over it.
			h.logger.Error("offset gap in live delivery", "channel", c.name,
				"session", sub.sess.ID, "last", sub.last, "offset", first)
			sub.sess.fail(ReasonInternal)
			continue
		}
		fresh := run[sub.last+1-first:]
		sub.last = last
		sub.sess.pushRunLocked(fresh)
	}
	c.mu.Unlock()
}

// deliverEphemeral fans out a message that is not stored and has no
// offset: every subscriber gets it now, catching up or not — but one
// whose subscribe reply is not queued yet (it was not subscribed yet).
func (h *hub) deliverEphemeral(m *Message) {
	c := h.lookup(m.Channel)
	if c == nil {
		return
	}
	run := []*Message{m}
	c.mu.Lock()
	for _, sub := range c.subs {
		if sub.muted {
			continue // its subscribe reply is not queued yet; nothing may pass it
		}
		sub.sess.pushRunLocked(run)
	}
	c.mu.Unlock()
}
