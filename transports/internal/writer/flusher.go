package writer

import (
	"math"
	"net"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/heraldrt/herald/server"
)

// Flusher writes the connections of one transport. No connection has a
// writer goroutine of its own: a connection's session wakes its Stream
// (server.Session.Notify) when it has something to send or closes, and a
// few shard loops — one per CPU, each running only while its streams have
// work — take turns on the streams that are due: drain the session, frame
// what it had into the loop's one buffer, and hand it to the socket in one
// write that never waits. A fan-out of one message to a thousand streams
// then costs a thousand writes and one wake-up, not a thousand wake-ups of
// a thousand goroutines and their timers.
//
// A socket whose buffer is full (a slow reader, or a burst bigger than
// the buffer) cannot wait on the loop: what it did not take is copied
// aside and a goroutine of the stream's own finishes the write within the
// write timeout — a reader that cannot take it is dropped as a slow
// consumer — and gives the stream back to its loop. So a slow reader never
// slows the others, and nobody holds a buffer while idle. Where a socket
// cannot be written without waiting (not a Unix TCP socket) every write
// takes that path.
//
// Under load a stream writes as its session's pacing says
// (server.Session.Pacing): a channel's batch rule, or else at most one
// write per Coalesce, so that what arrives meanwhile shares the write.
// After a quiet spell the first write goes at once, and a write of a big
// batch (a catch-up page) does not hold back the next. Heartbeats (an SSE
// comment, a WebSocket ping) come from one timer per shard that looks
// over its streams a few times per heartbeat interval.
type Flusher struct {
	group  *Group
	opts   Options
	shards []shard
	next   atomic.Uint64
	start  time.Time // the streams' clocks count from here
}

// DefaultCoalesce is the longest a message waits to share a write, unless
// a transport's options say otherwise.
const DefaultCoalesce = 5 * time.Millisecond

// Options tunes a Flusher. Zero fields take the defaults. The heartbeat is
// the transport's to choose (SSE's comment interval, WebSocket's ping
// interval), so it has none here.
type Options struct {
	// Coalesce is the longest a message waits to share a write, when no
	// batch rule applies. Default DefaultCoalesce.
	Coalesce time.Duration
	// Heartbeat is the quiet time after which a stream gets a
	// TurnHeartbeat (a comment on SSE, a ping on WebSocket); 0 for none.
	// A stream's heartbeat comes within the last quarter of the interval.
	Heartbeat time.Duration
	// Steady makes the heartbeat come every Heartbeat whether or not the
	// stream wrote meanwhile (WebSocket pings, which the peer must answer
	// even while data flows).
	Steady bool
	// WriteTimeout bounds a write the socket could not take at once; a
	// client that does not take it in time is dropped. Default 10s.
	WriteTimeout time.Duration
	// Linger is how long an idle shard loop waits for more before it ends.
	// Default 100ms.
	Linger time.Duration
	// BigWrite is the write size, in items, after which a stream does not
	// wait before its next write. Default 256.
	BigWrite int
	// Shards is the number of shard loops. Default GOMAXPROCS.
	Shards int
	// Expire closes a stream (reason client_gone) whose client has not
	// been heard from (Stream.Touch) for this long; 0 for never. It is
	// checked with the heartbeats, so it needs Heartbeat.
	Expire time.Duration
}

// TurnKind says why a turn runs.
type TurnKind uint8

const (
	// TurnWrite: drain the session and frame what it has (maybe nothing).
	TurnWrite TurnKind = iota
	// TurnHeartbeat: the heartbeat is due; frame it, with what is queued.
	TurnHeartbeat
	// TurnClose: the session is closed; frame its last items and the
	// reason if the client is to be told. The connection is closed after.
	TurnClose
)

// Turn is what a Framer works with: why the turn runs, the buffer to
// append the frames to, and a scratch slice to drain the session into.
// Both belong to the shard loop and are reused for the next stream, so a
// Framer keeps neither (and clears the items it drained).
type Turn struct {
	Kind  TurnKind
	Buf   []byte
	Items []server.Item
}

// Framer is a transport's wire format as the Flusher drives it: Frame
// drains the session (server.Session.Drain into t.Items) and appends its
// frames to t.Buf, reporting how many items it framed. It runs on one
// goroutine at a time per stream, never while another write of the
// stream is under way.
type Framer interface {
	Frame(t *Turn) int
}

// NewFlusher returns a flusher whose goroutines group owns.
func NewFlusher(group *Group, opts Options) *Flusher {
	if opts.Coalesce == 0 {
		opts.Coalesce = DefaultCoalesce
	}
	if opts.WriteTimeout == 0 {
		opts.WriteTimeout = 10 * time.Second
	}
	if opts.Linger == 0 {
		opts.Linger = 100 * time.Millisecond
	}
	if opts.BigWrite == 0 {
		opts.BigWrite = 256
	}
	if opts.Shards <= 0 {
		opts.Shards = runtime.GOMAXPROCS(0)
	}
	f := &Flusher{group: group, opts: opts, start: time.Now()}
	f.shards = make([]shard, opts.Shards)
	for i := range f.shards {
		f.shards[i] = shard{f: f, kick: make(chan struct{}, 1)}
	}
	return f
}

// since returns t on the streams' clock.
func (f *Flusher) since(t time.Time) int64 { return int64(t.Sub(f.start)) }

// at returns a time on the streams' clock as a time.Time.
func (f *Flusher) at(ns int64) time.Time { return f.start.Add(time.Duration(ns)) }

// beatTick is how often a shard looks for streams whose heartbeat is due.
func (f *Flusher) beatTick() time.Duration { return max(f.opts.Heartbeat/4, time.Millisecond) }

// shard is one loop and the streams it writes.
type shard struct {
	f    *Flusher
	kick chan struct{} // one slot: the loop has something new to look at

	mu      sync.Mutex // guards the fields below and every stream's state
	ready   []*Stream  // streams marked since the loop last looked
	running bool       // the loop is running
	streams []*Stream  // every open stream, for heartbeats
	beat    *time.Timer
	spare   []*Stream
	turn    Turn // the loop's, between runs
}

// Stream is one connection written by a Flusher.
type Stream struct {
	sh      *shard
	sess    *server.Session
	conn    net.Conn
	raw     rawWriter // without one, every write goes through the slow path
	framer  Framer
	onClose func()

	// The stream's state, guarded by sh.mu.
	index   int  // in sh.streams
	listed  bool // in sh.ready, or held by the loop for its pacing
	held    bool // held by the loop: a mark kicks the loop to look again
	blocked bool // a write of its own owns the connection
	again   bool // marked while blocked
	beating bool // the heartbeat is due
	expired bool // the client has not been heard from for Expire
	closed  bool

	// Clocks (Flusher.since), atomic so the heartbeat scan reads them.
	lastWrite atomic.Int64 // any bytes written
	lastBeat  atomic.Int64 // the last heartbeat turn
	lastSeen  atomic.Int64 // the client was last heard from (Touch)
	// The writer's, read and written by the one goroutine taking turns.
	lastData int64 // the last write of items, for the pacing
	lastSize int   // items in it
}

// Start registers a stream on conn for sess, written with framer, and
// hooks it to the session. onClose, if not nil, runs just before the
// connection is closed. It reports false, registering nothing, when the
// group no longer takes goroutines (shutting down).
func (f *Flusher) Start(sess *server.Session, conn net.Conn, framer Framer, onClose func()) (*Stream, bool) {
	if f.group.isClosing() {
		return nil, false
	}
	sh := &f.shards[f.next.Add(1)%uint64(len(f.shards))]
	st := &Stream{sh: sh, sess: sess, conn: conn, raw: newRawWriter(conn), framer: framer, onClose: onClose}
	now := f.since(time.Now())
	st.lastWrite.Store(now)
	st.lastBeat.Store(now)
	st.lastSeen.Store(now)
	st.lastData = math.MinInt64 / 2 // long ago: the first write goes at once
	sh.mu.Lock()
	st.index = len(sh.streams)
	sh.streams = append(sh.streams, st)
	if f.opts.Heartbeat > 0 && len(sh.streams) == 1 {
		if sh.beat == nil {
			sh.beat = time.AfterFunc(f.beatTick(), sh.scan)
		} else {
			sh.beat.Reset(f.beatTick())
		}
	}
	sh.mu.Unlock()
	sess.Notify(st.Wake)
	return st, true
}

// Wake asks for a turn: the session has something, or the transport has
// frames of its own to send (a WebSocket pong). It never blocks and takes
// only the shard's lock, so the core may call it under its own locks.
func (st *Stream) Wake() {
	st.sh.mu.Lock()
	st.sh.markLocked(st)
	st.sh.mu.Unlock()
}

// Touch notes that the client was heard from (Options.Expire).
func (st *Stream) Touch() { st.lastSeen.Store(st.sh.f.since(time.Now())) }

// Closed reports whether the stream has closed its connection.
func (st *Stream) Closed() bool {
	st.sh.mu.Lock()
	defer st.sh.mu.Unlock()
	return st.closed
}

// markLocked puts st on the ready list and makes sure the loop runs.
func (sh *shard) markLocked(st *Stream) {
	switch {
	case st.closed:
		return
	case st.blocked:
		st.again = true
		return
	case st.listed:
		if st.held {
			sh.kickLoop() // a batch rule's size may be reached
		}
		return
	}
	st.listed = true
	sh.ready = append(sh.ready, st)
	if !sh.running {
		sh.running = true
		if !sh.f.group.Go(sh.loop) {
			// Shutting down: the core has closed every session already and
			// the process is about to exit; nothing is left to write with.
			sh.running = false
		}
		return
	}
	if len(sh.ready) == 1 {
		sh.kickLoop()
	}
}

func (sh *shard) kickLoop() {
	select {
	case sh.kick <- struct{}{}:
	default:
	}
}

// loop takes turns on the marked streams that are due, holds the others
// until they are, and ends after Linger without work.
func (sh *shard) loop() {
	f := sh.f
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	defer timer.Stop()
	sh.mu.Lock()
	t := sh.turn
	sh.turn = Turn{}
	batch := sh.spare
	sh.mu.Unlock()
	var held, keep []*Stream
	for {
		sh.mu.Lock()
		batch, sh.ready = sh.ready, batch[:0]
		sh.mu.Unlock()
		now := time.Now()
		wait := time.Duration(-1)
		keep = keep[:0]
		turns := 0
		for _, list := range [2][]*Stream{held, batch} {
			for _, st := range list {
				if turns++; turns%yieldEvery == 0 {
					// Let the publishers and the store run between writes:
					// messages they commit meanwhile join the next pass.
					runtime.Gosched()
				}
				if w := st.take(&t, now); w > 0 {
					keep = append(keep, st)
					if wait < 0 || w < wait {
						wait = w
					}
				}
			}
		}
		clear(batch)
		clear(held)
		held, keep = keep, held[:0]
		if cap(t.Buf) > 1<<20 {
			t.Buf = nil // a catch-up burst: do not keep its buffer
		}
		if len(held) > 0 {
			timer.Reset(wait)
			select {
			case <-sh.kick:
				timer.Stop()
			case <-timer.C:
			}
			continue
		}
		timer.Reset(f.opts.Linger)
		select {
		case <-sh.kick:
			timer.Stop()
			continue
		case <-timer.C:
		}
		sh.mu.Lock()
		if len(sh.ready) > 0 {
			sh.mu.Unlock()
			continue
		}
		sh.running = false
		clear(t.Items)
		sh.turn = Turn{Buf: t.Buf[:0], Items: t.Items[:0]}
		sh.spare = batch[:0]
		sh.mu.Unlock()
		return
	}
}

// yieldEvery is how many turns a loop takes before it lets other
// goroutines run: a pass over thousands of streams would otherwise hold
// its CPU for the scheduler's whole time slice (10ms) at once.
const yieldEvery = 32

// take runs st's turn when it is due, and otherwise returns how long
// until it is (the loop holds it meanwhile).
func (st *Stream) take(t *Turn, now time.Time) time.Duration {
	sh, f := st.sh, st.sh.f
	sh.mu.Lock()
	if st.closed || st.blocked {
		st.again = st.again || st.blocked
		st.listed, st.held = false, false
		sh.mu.Unlock()
		return 0
	}
	beating, expired := st.beating, st.expired
	sh.mu.Unlock()
	if expired {
		st.sess.Close(server.ReasonClientGone) // silent too long: the close turn below ends it
	}
	kind := TurnWrite
	select {
	case <-st.sess.Done():
		kind = TurnClose
	default:
		if beating {
			kind = TurnHeartbeat
		}
	}
	if kind == TurnWrite {
		// A channel's batch rule holds messages longer (and sends once its
		// size is queued); otherwise the transport's coalescing applies.
		from := f.at(st.lastData)
		if st.lastSize >= f.opts.BigWrite {
			from = time.Time{} // after a big write, the next goes at once
		}
		if due, wait := st.sess.Pacing(f.opts.Coalesce).Due(from, st.sess.Queued(), now); !due {
			sh.mu.Lock()
			st.held = true
			sh.mu.Unlock()
			return max(wait, time.Microsecond)
		}
	}
	sh.mu.Lock()
	st.listed, st.held = false, false
	if kind == TurnHeartbeat {
		st.beating = false
	}
	sh.mu.Unlock()
	st.turn(t, kind, now)
	return 0
}

// turn frames what the stream has and writes it without waiting; what
// the socket does not take goes to the slow path.
func (st *Stream) turn(t *Turn, kind TurnKind, now time.Time) {
	f := st.sh.f
	t.Kind, t.Buf = kind, t.Buf[:0]
	n := st.framer.Frame(t)
	b := t.Buf
	if kind == TurnHeartbeat {
		st.lastBeat.Store(f.since(now))
	}
	if kind == TurnClose {
		st.finish(b)
		return
	}
	if len(b) == 0 {
		return
	}
	ns := f.since(now)
	st.lastWrite.Store(ns)
	if n > 0 {
		st.lastData, st.lastSize = ns, n
	}
	w, err := st.tryWrite(b)
	switch {
	case err != nil:
		st.fail(err)
	case w < len(b):
		st.block(b[w:], false)
	}
}

// tryWrite writes what the socket takes without waiting.
func (st *Stream) tryWrite(b []byte) (int, error) {
	if !st.raw.ok() {
		return 0, nil
	}
	return st.raw.tryWrite(b)
}

// block hands the rest of a write to a goroutine of the stream's own,
// which waits for the socket within the write timeout; the stream takes
// no turn meanwhile. closing: the connection is closed after.
func (st *Stream) block(rest []byte, closing bool) {
	p := append([]byte(nil), rest...) // the turn's buffer is the loop's
	sh := st.sh
	sh.mu.Lock()
	st.blocked = true
	sh.mu.Unlock()
	if !sh.f.group.Go(func() { st.slow(p, closing) }) {
		st.sess.Close(server.ReasonShutdown)
		st.closeConn()
	}
}

// slow finishes a write the socket could not take at once.
func (st *Stream) slow(p []byte, closing bool) {
	err := st.conn.SetWriteDeadline(time.Now().Add(st.sh.f.opts.WriteTimeout))
	if err == nil {
		_, err = st.conn.Write(p)
	}
	if err == nil && !closing {
		err = st.conn.SetWriteDeadline(time.Time{}) // the fast path sets none
	}
	if err != nil || closing {
		if err != nil {
			st.sess.Close(server.WriteFailed(err))
		}
		st.closeConn()
		return
	}
	st.lastWrite.Store(st.sh.f.since(time.Now()))
	sh := st.sh
	sh.mu.Lock()
	st.blocked = false
	if st.again {
		st.again = false
		sh.markLocked(st)
	}
	sh.mu.Unlock()
}

// finish writes a closing stream's last frames, if any, and closes it.
func (st *Stream) finish(b []byte) {
	if len(b) > 0 {
		if w, err := st.tryWrite(b); err == nil && w < len(b) {
			st.block(b[w:], true)
			return
		}
	}
	st.closeConn()
}

// fail ends a stream whose write failed: a timeout is a slow consumer.
func (st *Stream) fail(err error) {
	st.sess.Close(server.WriteFailed(err))
	st.closeConn()
}

// closeConn unregisters the stream, closes its connection and closes the
// session (whose first reason stands).
func (st *Stream) closeConn() {
	sh := st.sh
	sh.mu.Lock()
	if st.closed {
		sh.mu.Unlock()
		return
	}
	st.closed = true
	last := len(sh.streams) - 1
	sh.streams[st.index] = sh.streams[last]
	sh.streams[st.index].index = st.index
	sh.streams[last] = nil
	sh.streams = sh.streams[:last]
	if last == 0 && sh.beat != nil {
		sh.beat.Stop()
	}
	sh.mu.Unlock()
	if st.onClose != nil {
		st.onClose()
	}
	_ = st.conn.Close()
	st.sess.Close(server.ReasonClientGone)
}

// scan marks the streams whose heartbeat is due. A stream's heartbeat
// comes when it has been quiet (or, Steady, without a heartbeat) for the
// interval less one tick, so that no gap exceeds the interval.
func (sh *shard) scan() {
	f := sh.f
	now := f.since(time.Now())
	due := now - int64(f.opts.Heartbeat-f.beatTick())
	sh.mu.Lock()
	defer sh.mu.Unlock()
	for _, st := range sh.streams {
		if st.closed {
			continue
		}
		if f.opts.Expire > 0 && !st.expired && now-st.lastSeen.Load() > int64(f.opts.Expire) {
			st.expired = true
			sh.markLocked(st)
		}
		if st.beating {
			continue
		}
		last := st.lastWrite.Load()
		if f.opts.Steady {
			last = st.lastBeat.Load()
		}
		if last <= due {
			st.beating = true
			sh.markLocked(st)
		}
	}
	if len(sh.streams) > 0 {
		sh.beat.Reset(f.beatTick())
	}
}
