package watch

import (
	"net"
	"sync"
	"time"

	"github.com/heraldrt/herald/transports/internal/writer"
)

// OnRead gets what one read of a connection gave: p, valid only during
// the call, or err (io.EOF when the client closed its side); after an
// error it is not called again. It runs on the Watcher's goroutine, one
// call at a time for all its connections, so it must not block, and it
// must not call Stop (hand that to another goroutine). It returns whether
// to read on; false pauses the connection's reads until Resume (a client
// sending faster than it is served waits in TCP).
type OnRead func(p []byte, err error) (more bool)

// Watcher watches connections for what their clients send.
type Watcher struct {
	group *writer.Group
	poll  *poller // nil without epoll: every connection gets a goroutine
}

// New returns a watcher whose goroutines group owns.
func New(group *writer.Group) *Watcher {
	return &Watcher{group: group, poll: newPoller(group)}
}

// Watch starts watching conn: onRead gets what its client sends. It
// reports false, watching nothing, when the group no longer takes
// goroutines (shutting down). Call Stop before closing conn.
func (w *Watcher) Watch(conn net.Conn, onRead OnRead) (*Watch, bool) {
	if w.poll != nil {
		if wt, ok, handled := w.poll.watch(conn, onRead); handled {
			return wt, ok
		}
	}
	wt := &Watch{reader: &goroutineReader{conn: conn, onRead: onRead, resume: make(chan struct{}, 1),
		stop: make(chan struct{}), exited: make(chan struct{})}}
	if !w.group.Go(wt.reader.run) {
		return nil, false
	}
	return wt, true
}

// Watch is one watched connection.
type Watch struct {
	polled *polled          // on an epoll set
	reader *goroutineReader // or read by a goroutine of its own
}

// Resume reads on after OnRead paused the connection.
func (wt *Watch) Resume() {
	if wt.polled != nil {
		wt.polled.resume()
		return
	}
	wt.reader.resumeReading()
}

// Stop ends the watch. It waits for a call of OnRead under way (what was
// read is always handed over, none is lost) and none comes after it
// returns, so the connection can be handed on to another reader. Call it
// before closing the connection, and never from OnRead.
func (wt *Watch) Stop() {
	if wt.polled != nil {
		wt.polled.stopWatch()
		return
	}
	wt.reader.stopReading()
}

// goroutineReader reads a connection on a goroutine of its own: the
// portable way, and the one for connections epoll cannot watch.
type goroutineReader struct {
	conn   net.Conn
	onRead OnRead
	resume chan struct{} // one slot
	stop   chan struct{} // closed by Stop
	exited chan struct{} // closed when run returns
	once   sync.Once
}

func (r *goroutineReader) run() {
	defer close(r.exited)
	buf := make([]byte, 4<<10) // held while the connection lives: the portable path
	for {
		n, err := r.conn.Read(buf)
		if n > 0 && !r.onRead(buf[:n], nil) { // what was read is handed over, even past Stop
			select {
			case <-r.resume:
			case <-r.stop:
				return
			}
		}
		select {
		case <-r.stop:
			return // err is likely Stop's deadline
		default:
		}
		if err != nil {
			r.onRead(nil, err)
			return
		}
	}
}

func (r *goroutineReader) resumeReading() {
	select {
	case r.resume <- struct{}{}:
	default:
	}
}

// stopReading stops the goroutine: a deadline in the past ends the read
// it waits in, and once it has gone the deadline is lifted, for whoever
// reads the connection next.
func (r *goroutineReader) stopReading() {
	r.once.Do(func() {
		close(r.stop)
		_ = r.conn.SetReadDeadline(time.Unix(1, 0))
		<-r.exited
		_ = r.conn.SetReadDeadline(time.Time{})
	})
}
