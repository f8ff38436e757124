//go:build linux && !noepoll

package watch

import (
	"io"
	"net"
	"os"
	"sync"
	"syscall"
	"time"

	"github.com/heraldrt/herald/transports/internal/writer"
)

// poller is a Watcher's epoll set. Each watched socket is in it with
// EPOLLONESHOT: once it has fired, the socket is out of the set until the
// poller has read it and OnRead asked for more, so one socket's data is
// never handled twice at once. The loop goroutine runs only while
// something is watched: the set is created for the first watch and
// closed with the last.
type poller struct {
	group *writer.Group

	mu      sync.Mutex // guards the fields below and every polled's state
	epfd    int
	file    *os.File // epfd, for Go's poller; nil while nothing is watched
	watches map[uint64]*polled
	nextID  uint64
	events  []syscall.EpollEvent // the loop's
	buf     []byte               // the loop's read buffer, shared by every socket
}

// polled is one socket in the set.
type polled struct {
	p      *poller
	id     uint64 // the epoll event's data: never reused, so a late event is ignored
	rc     syscall.RawConn
	onRead OnRead

	// Guarded by p.mu.
	reading bool          // the loop is reading it: it is out of the set
	paused  bool          // OnRead asked to wait for Resume
	resumed bool          // Resume came while reading
	stopped bool          //
	idle    chan struct{} // closed when a read under way at Stop is over
}

// readSize is the poller's read buffer: what one read of a socket takes.
const readSize = 16 << 10

const pollEvents = syscall.EPOLLIN | syscall.EPOLLRDHUP | syscall.EPOLLONESHOT

func newPoller(group *writer.Group) *poller {
	return &poller{group: group, watches: map[uint64]*polled{}}
}

// watch adds conn to the set. handled is false when conn has no socket
// descriptor (the Watcher reads it with a goroutine instead).
func (p *poller) watch(conn net.Conn, onRead OnRead) (wt *Watch, ok, handled bool) {
	sc, isSock := conn.(syscall.Conn)
	if !isSock {
		return nil, false, false
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return nil, false, false
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.file == nil {
		if !p.startLocked() {
			return nil, false, true
		}
	}
	p.nextID++
	pd := &polled{p: p, id: p.nextID, rc: rc, onRead: onRead}
	if !pd.ctlLocked(syscall.EPOLL_CTL_ADD) {
		if len(p.watches) == 0 {
			p.closeLocked()
		}
		return nil, false, false // not a socket epoll takes: read it with a goroutine
	}
	p.watches[pd.id] = pd
	return &Watch{polled: pd}, true, true
}

// startLocked creates the epoll set and starts its loop.
func (p *poller) startLocked() bool {
	epfd, err := syscall.EpollCreate1(syscall.EPOLL_CLOEXEC)
	if err != nil {
		return false
	}
	if err := syscall.SetNonblock(epfd, true); err != nil {
		syscall.Close(epfd)
		return false
	}
	file := os.NewFile(uintptr(epfd), "watch-epoll")
	rc, err := file.SyscallConn()
	if err != nil {
		file.Close()
		return false
	}
	if !p.group.Go(func() { p.loop(file, rc) }) {
		file.Close()
		return false
	}
	p.epfd, p.file = epfd, file
	if p.events == nil {
		p.events = make([]syscall.EpollEvent, 128)
	}
	return true
}

// closeLocked lets go of the set: its loop sees it, ends and closes it.
// (Closing it here could wait for the loop, which may be waiting for
// p.mu.) A deadline in the past wakes the loop if it is parked.
func (p *poller) closeLocked() {
	_ = p.file.SetReadDeadline(time.Unix(1, 0))
	p.file = nil
	p.buf = nil // an idle watcher holds no buffer
}

// loop handles ready sockets until its set is closed. It waits for the
// set to become readable through Go's poller, so its thread is free
// meanwhile, and parks only once epoll_wait finds nothing ready: any later
// readiness makes the set readable again.
func (p *poller) loop(file *os.File, rc syscall.RawConn) {
	defer file.Close()
	var ready []*polled
	_ = rc.Read(func(uintptr) bool {
		for {
			p.mu.Lock()
			if p.file != file {
				p.mu.Unlock()
				return true // closed
			}
			n, err := syscall.EpollWait(p.epfd, p.events, 0)
			if err != nil {
				p.mu.Unlock()
				if err == syscall.EINTR {
					continue
				}
				return true
			}
			if n == 0 {
				p.mu.Unlock()
				return false // wait in Go's poller
			}
			ready = ready[:0]
			for i := range n {
				ev := &p.events[i]
				id := uint64(uint32(ev.Fd)) | uint64(uint32(ev.Pad))<<32
				if pd := p.watches[id]; pd != nil && !pd.stopped {
					pd.reading = true
					ready = append(ready, pd)
				}
			}
			if p.buf == nil {
				p.buf = make([]byte, readSize)
			}
			buf := p.buf
			p.mu.Unlock()
			for _, pd := range ready {
				pd.readable(buf)
			}
			clear(ready)
		}
	})
}

// readable reads what the socket has, without waiting, and hands it to
// OnRead; then the socket goes back into the set unless OnRead paused it,
// it ended, or the watch stopped.
func (pd *polled) readable(buf []byte) {
	n, err := 0, error(nil)
	if rerr := pd.rc.Read(func(fd uintptr) bool {
		for {
			n, err = syscall.Read(int(fd), buf)
			if err != syscall.EINTR {
				return true // never wait in Go's poller: epoll said when
			}
		}
	}); rerr != nil {
		err = rerr // closed meanwhile
	}
	more := true
	switch {
	case err == syscall.EAGAIN:
		// Nothing after all (the data was read already): arm again.
	case err != nil:
		more = false
		pd.deliver(nil, err)
	case n <= 0:
		more = false
		pd.deliver(nil, io.EOF)
	default:
		more = pd.onRead(buf[:n], nil) // what was read is handed over, even past Stop
	}
	p := pd.p
	p.mu.Lock()
	defer p.mu.Unlock()
	pd.reading = false
	if pd.idle != nil {
		close(pd.idle)
	}
	if pd.stopped || err != nil && err != syscall.EAGAIN || n == 0 && err == nil {
		return
	}
	if !more && !pd.resumed {
		pd.paused = true
		return
	}
	pd.resumed = false
	pd.ctlLocked(syscall.EPOLL_CTL_MOD)
}

// deliver calls OnRead unless the watch stopped meanwhile.
func (pd *polled) deliver(b []byte, err error) bool {
	pd.p.mu.Lock()
	stopped := pd.stopped
	pd.p.mu.Unlock()
	if stopped {
		return false
	}
	return pd.onRead(b, err)
}

// ctlLocked adds the socket to the set or arms it again. The descriptor
// is reached through the connection, which holds it open meanwhile, so a
// closed and reused descriptor number is never touched.
func (pd *polled) ctlLocked(op int) bool {
	ev := syscall.EpollEvent{Events: pollEvents, Fd: int32(uint32(pd.id)), Pad: int32(uint32(pd.id >> 32))}
	var cerr error
	if err := pd.rc.Control(func(fd uintptr) {
		cerr = syscall.EpollCtl(pd.p.epfd, op, int(fd), &ev)
	}); err != nil {
		return false
	}
	return cerr == nil
}

func (pd *polled) resume() {
	p := pd.p
	p.mu.Lock()
	defer p.mu.Unlock()
	switch {
	case pd.stopped:
	case pd.reading:
		pd.resumed = true
	case pd.paused:
		pd.paused = false
		pd.ctlLocked(syscall.EPOLL_CTL_MOD)
	}
}

func (pd *polled) stopWatch() {
	p := pd.p
	p.mu.Lock()
	if pd.stopped {
		p.mu.Unlock()
		return
	}
	pd.stopped = true
	var idle chan struct{}
	if pd.reading {
		pd.idle = make(chan struct{})
		idle = pd.idle
	}
	defer func() {
		p.mu.Unlock()
		if idle != nil {
			<-idle // the read under way hands over what it read
		}
	}()
	delete(p.watches, pd.id)
	if err := pd.rc.Control(func(fd uintptr) {
		_ = syscall.EpollCtl(p.epfd, syscall.EPOLL_CTL_DEL, int(fd), nil)
	}); err != nil {
		_ = err // the connection is closed already: the kernel dropped it from the set
	}
	if len(p.watches) == 0 {
		p.closeLocked()
	}
}
