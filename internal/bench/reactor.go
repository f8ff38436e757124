//go:build linux && !noepoll

package bench

// The epoll reactor of `herald bench`'s SSE and WebSocket subscribers (the
// hot path; conn.go parses what it reads): after an ordinary
// handshake, a subscriber's socket is handed to a reactor — its own
// level-triggered epoll set, itself waited on through Go's poller — that
// reads each ready socket once into the subscriber's buffer and scans what
// came. One goroutine reads every socket: no park and wake-up per socket
// and read, and no read that only finds the socket empty, which is where a
// goroutine-per-connection client spends half its time at a million
// messages a second. Linux only; elsewhere reactor_other.go reads
// each socket with a goroutine of its own, behind the same methods.

import (
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"syscall"
	"time"
)

// benchReactor reads the sockets registered with it.
type benchReactor struct {
	mu       sync.Mutex
	epfd     int
	file     *os.File // epfd, for Go's poller
	conns    map[uint64]*benchRConn
	nextID   uint64
	events   []syscall.EpollEvent
	stopping bool
	done     chan struct{}
}

func newBenchReactor() (*benchReactor, error) {
	epfd, err := syscall.EpollCreate1(syscall.EPOLL_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("epoll_create1: %w", err)
	}
	if err := syscall.SetNonblock(epfd, true); err != nil {
		syscall.Close(epfd)
		return nil, fmt.Errorf("epoll: %w", err)
	}
	f := os.NewFile(uintptr(epfd), "bench-epoll")
	rc, err := f.SyscallConn()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("epoll: %w", err)
	}
	r := &benchReactor{epfd: epfd, file: f, conns: map[uint64]*benchRConn{},
		events: make([]syscall.EpollEvent, 512), done: make(chan struct{})}
	go r.loop(rc)
	return r, nil
}

// loop handles ready sockets until close. It waits for the epoll set to
// become readable through Go's poller, so the thread is free meanwhile,
// and only parks once epoll_wait finds nothing ready: any later readiness
// makes the set readable again.
func (r *benchReactor) loop(rc syscall.RawConn) {
	defer close(r.done)
	_ = rc.Read(func(uintptr) bool {
		for {
			r.mu.Lock()
			if r.stopping {
				r.mu.Unlock()
				return true
			}
			n, err := syscall.EpollWait(r.epfd, r.events, 0)
			if err != nil {
				r.mu.Unlock()
				if errors.Is(err, syscall.EINTR) {
					continue
				}
				return true
			}
			if n == 0 {
				r.mu.Unlock()
				return false
			}
			for i := range n {
				ev := &r.events[i]
				id := uint64(uint32(ev.Fd)) | uint64(uint32(ev.Pad))<<32
				if c := r.conns[id]; c != nil {
					c.readable()
				}
			}
			r.mu.Unlock()
		}
	})
}

// close stops the loop; every connection must have been removed.
func (r *benchReactor) close() {
	r.mu.Lock()
	r.stopping = true
	for _, c := range r.conns {
		r.endLocked(c, errors.New("the run ended"))
	}
	r.mu.Unlock()
	_ = r.file.Close() // wakes the loop
	<-r.done
}

// add takes over a connection's socket from conn — a duplicate descriptor
// the reactor now owns; conn is closed — and handles the bytes that came
// with the handshake.
func (r *benchReactor) add(c *benchRConn, conn net.Conn, leftover []byte) error {
	fd, err := benchTakeFD(conn)
	if err != nil {
		return err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.stopping {
		syscall.Close(fd)
		return errors.New("the run ended")
	}
	r.nextID++
	c.id, c.fd, c.r, c.out = r.nextID, fd, r, benchFDWriter(fd)
	r.conns[c.id] = c
	ev := syscall.EpollEvent{Events: syscall.EPOLLIN | syscall.EPOLLRDHUP, Fd: int32(uint32(c.id)), Pad: int32(uint32(c.id >> 32))}
	if err := syscall.EpollCtl(r.epfd, syscall.EPOLL_CTL_ADD, fd, &ev); err != nil {
		delete(r.conns, c.id)
		syscall.Close(fd)
		return fmt.Errorf("epoll_ctl: %w", err)
	}
	if len(leftover) > 0 {
		buf := c.sub.buf
		for len(buf) < len(leftover) {
			c.sub.grow(0)
			buf = c.sub.buf
		}
		c.rn = copy(buf, leftover)
		c.process(time.Now().UnixNano())
	}
	return nil
}

// remove ends a connection from outside the reactor (the run stops it).
func (r *benchReactor) remove(c *benchRConn, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.conns[c.id] == c {
		r.endLocked(c, err)
	}
}

func (r *benchReactor) endLocked(c *benchRConn, err error) {
	delete(r.conns, c.id)
	_ = syscall.EpollCtl(r.epfd, syscall.EPOLL_CTL_DEL, c.fd, nil)
	syscall.Close(c.fd)
	c.ended <- err // buffered: the first end only
}

// benchTakeFD returns a duplicate of conn's socket, which the caller owns,
// and closes conn: closing it takes the socket out of Go's poller; the
// duplicate, non-blocking like it, keeps it open for the reactor.
func benchTakeFD(conn net.Conn) (int, error) {
	defer conn.Close()
	tc, ok := conn.(*net.TCPConn)
	if !ok {
		return -1, errors.New("not a TCP connection")
	}
	raw, err := tc.SyscallConn()
	if err != nil {
		return -1, err
	}
	fd := -1
	var derr error
	if err := raw.Control(func(f uintptr) { fd, derr = syscall.Dup(int(f)) }); err != nil {
		return -1, err
	}
	if derr != nil {
		return -1, fmt.Errorf("dup: %w", derr)
	}
	syscall.CloseOnExec(fd)
	return fd, nil
}

// benchRConnSock is a connection's part the epoll reactor keeps: its id in
// the epoll set and its descriptor.
type benchRConnSock struct {
	id uint64
	fd int
}

// readable reads once what the socket holds and handles it.
func (c *benchRConn) readable() {
	if c.rn == len(c.sub.buf) {
		c.sub.grow(c.rn)
	}
	n, err := syscall.Read(c.fd, c.sub.buf[c.rn:])
	switch {
	case errors.Is(err, syscall.EAGAIN) || errors.Is(err, syscall.EINTR):
		return
	case err != nil:
		c.r.endLocked(c, fmt.Errorf("read: %w", err))
		return
	case n == 0:
		c.r.endLocked(c, errors.New("the server closed the connection"))
		return
	}
	c.rn += n
	c.process(time.Now().UnixNano())
}

// benchFDWriter writes to a descriptor (the reactor's pongs).
type benchFDWriter int

func (fd benchFDWriter) Write(b []byte) (int, error) { return syscall.Write(int(fd), b) }
