package writer

import (
	"sync"
	"time"

	"github.com/heraldrt/herald/server"
)

// Pump runs a connection's writer on demand, so that an idle connection
// holds no writer goroutine: the session wakes the pump (server.Session.Notify)
// when it has something to send or closes, the heartbeat timer wakes it
// when the line has been quiet, and the pump starts a writer goroutine
// (owned by a Group) that takes turns while it is woken and ends after
// Linger without a wake.
//
// Under load the writer waits before a turn as the session's pacing says
// (server.Session.Pacing): a channel's batch rule, or else a coalescing
// pause — at most one write per Coalesce — so that what arrives meanwhile
// shares the write: one syscall for a batch instead of one per message.
// After a quiet spell the first write goes at once, and a turn that wrote
// a big batch (a catch-up page) does not pause before the next.
type Pump struct {
	sess  *server.Session
	group *Group
	opts  Options
	turn  func(TurnKind) bool
	kick  chan struct{} // one slot: the running writer has more to do

	mu        sync.Mutex // guards the fields below
	running   bool       // a writer goroutine is on the connection
	beating   bool       // the heartbeat is due
	stopped   bool
	lastWrite time.Time
	lastSize  int
	heartbeat *time.Timer
}

// DefaultCoalesce is the longest a message waits to share a write, unless
// a transport's options say otherwise.
const DefaultCoalesce = 5 * time.Millisecond

// Options tunes a Pump. Zero fields take the defaults. The heartbeat is
// the transport's to choose (SSE's comment interval, WebSocket's ping
// interval), so it has none here.
type Options struct {
	// Coalesce is the longest a message waits to share a write, when no
	// batch rule applies. Default DefaultCoalesce.
	Coalesce time.Duration
	// Heartbeat is the quiet time after which the writer is woken with
	// TurnHeartbeat (a comment on SSE, a ping on WebSocket); 0 for none.
	Heartbeat time.Duration
	// Steady makes the heartbeat fire every Heartbeat whether or not the
	// connection wrote meanwhile (WebSocket pings, which the peer must
	// answer even while data flows).
	Steady bool
	// Linger is how long a writer waits for more before it ends.
	// Default 100ms.
	Linger time.Duration
	// BigWrite is the write size, in items, after which the writer does not
	// pause before its next turn. Default 256.
	BigWrite int
}

// TurnKind says why a writer turn runs.
type TurnKind uint8

const (
	// TurnWrite: drain the session and write what it has (maybe nothing).
	TurnWrite TurnKind = iota
	// TurnHeartbeat: the line has been quiet for the heartbeat interval.
	TurnHeartbeat
	// TurnClose: the session is closed; write its last items and the
	// reason if the client can take them, and close the connection.
	TurnClose
)

// NewPump returns a pump for sess. turn performs one turn and reports how
// many items it wrote, or -1 when the connection is finished (after a
// failed write; the pump then stops). The pump starts at Start.
func NewPump(sess *server.Session, group *Group, opts Options, turn func(TurnKind) int) *Pump {
	if opts.Coalesce == 0 {
		opts.Coalesce = DefaultCoalesce
	}
	if opts.Linger == 0 {
		opts.Linger = 100 * time.Millisecond
	}
	if opts.BigWrite == 0 {
		opts.BigWrite = 256
	}
	p := &Pump{sess: sess, group: group, opts: opts, kick: make(chan struct{}, 1)}
	p.turn = func(k TurnKind) bool {
		n := turn(k)
		if n < 0 {
			return false
		}
		if n > 0 {
			p.mu.Lock()
			p.lastWrite, p.lastSize = time.Now(), n
			p.mu.Unlock()
		}
		if p.heartbeat != nil && (k == TurnHeartbeat || (n > 0 && !p.opts.Steady)) {
			p.heartbeat.Reset(p.opts.Heartbeat)
		}
		return true
	}
	return p
}

// Start arms the heartbeat and hooks the pump to the session. It reports
// false when the group no longer takes writers (shutting down).
func (p *Pump) Start() bool {
	p.mu.Lock()
	p.lastWrite = time.Now()
	if p.opts.Heartbeat > 0 {
		p.heartbeat = time.AfterFunc(p.opts.Heartbeat, p.beat)
	}
	p.mu.Unlock()
	p.sess.Notify(p.wake)
	p.mu.Lock()
	defer p.mu.Unlock()
	return !p.stopped
}

// wake is the session's notification. It runs under the core's locks, so
// it only kicks or starts the writer.
func (p *Pump) wake() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.stopped {
		return
	}
	if p.running {
		select {
		case p.kick <- struct{}{}:
		default:
		}
		return
	}
	p.running = true
	if !p.group.Go(p.writer) {
		p.running, p.stopped = false, true
	}
}

func (p *Pump) beat() {
	p.mu.Lock()
	p.beating = true
	p.mu.Unlock()
	p.wake()
}

// writer takes turns while it is kicked and ends after Linger without one,
// or when the connection is finished.
func (p *Pump) writer() {
	timer := time.NewTimer(p.opts.Linger)
	defer timer.Stop()
	for {
		// A channel's batch rule holds messages longer (and sends once its
		// size is queued); otherwise the transport's coalescing applies.
		pacing := p.sess.Pacing(p.opts.Coalesce)
		p.mu.Lock()
		from := p.lastWrite
		if p.lastSize >= p.opts.BigWrite {
			from = time.Time{} // after a big write, the next goes at once
		}
		beating := p.beating
		p.beating = false
		p.mu.Unlock()
		for {
			due, wait := pacing.Due(from, p.sess.Queued(), time.Now())
			if due {
				break
			}
			timer.Reset(wait)
			select {
			case <-timer.C:
			case <-p.kick: // more queued: look at the size again
				continue
			case <-p.sess.Done():
			}
			break
		}
		kind := TurnWrite
		select {
		case <-p.sess.Done():
			kind = TurnClose
		default:
			if beating {
				kind = TurnHeartbeat
			}
		}
		if !p.turn(kind) || kind == TurnClose {
			p.stop()
			return
		}
		timer.Reset(p.opts.Linger)
		select {
		case <-p.kick:
			continue
		case <-p.sess.Done():
			continue // the next turn closes
		case <-timer.C:
		}
		p.mu.Lock()
		select {
		case <-p.kick: // woken as the linger ran out
			p.mu.Unlock()
			continue
		default:
		}
		p.running = false
		p.mu.Unlock()
		return
	}
}

func (p *Pump) stop() {
	p.mu.Lock()
	p.stopped, p.running = true, false
	p.mu.Unlock()
	if p.heartbeat != nil {
		p.heartbeat.Stop()
	}
}
