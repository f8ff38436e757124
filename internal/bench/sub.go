package bench

// The subscribers of `herald bench`: a goroutine per subscriber connects
// and reconnects; SSE and WebSocket sockets are then read by a reactor
// (reactor.go), long polls by the goroutine itself on its own
// keep-alive connection. Either way the bytes are scanned for offsets and
// send times (scan.go) — no JSON decoding on the hot path. A
// subscriber the server disconnects (a slow consumer) comes back from its
// position, as a real client does, and the accounting tells whether that
// lost or repeated anything.

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/heraldrt/herald/client"
	"github.com/heraldrt/herald/protocol"
)

// benchTransport returns an HTTP transport for loopback load: no proxy, no
// compression, keep-alive with room for every connection.
func benchTransport(conns, readBuf int) *http.Transport {
	d := &net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}
	return &http.Transport{
		DialContext:         d.DialContext,
		MaxIdleConnsPerHost: conns,
		IdleConnTimeout:     90 * time.Second,
		DisableCompression:  true,
		ReadBufferSize:      readBuf,
		WriteBufferSize:     4 << 10,
		TLSHandshakeTimeout: 10 * time.Second,
	}
}

// benchSub is one subscriber connection and its accounting. Only its own
// goroutine touches the track, the histogram and the buffers; the run
// reads the atomics while it runs and the rest once it has stopped.
type benchSub struct {
	r         *benchRun
	idx       int
	ch        *benchChannel
	transport string // sse, ws or poll

	track    benchTrack
	based    bool
	hist     *benchHist
	baseHist *benchHist // flood: the latency before the flood
	buf      []byte
	// once ends the connection as soon as it is subscribed (resume: the
	// subscriber notes its position and leaves).
	once bool

	delivered  atomic.Int64 // messages received, repeats included
	have       atomic.Int64 // distinct offsets received (track.distinct)
	base       atomic.Uint64
	reconnects atomic.Int64
	lastAt     atomic.Int64 // Unix ns of the last read that brought messages
	confirmed  atomic.Bool  // the current connection is subscribed
	// conn is the current SSE or WebSocket connection, for kick.
	conn    atomic.Pointer[benchRConn]
	foreign int64 // messages whose data carries no send time

	// Positions to come back from.
	sseID      []byte // the last SSE id: (the stream's cursor)
	wsSince    uint64 // the last offset handled
	wsEpoch    string
	wsHasPos   bool
	pollCursor string
	pollSess   string
}

func newBenchSub(r *benchRun, idx int, ch *benchChannel, transport string, bufSize int) *benchSub {
	return &benchSub{r: r, idx: idx, ch: ch, transport: transport, buf: make([]byte, bufSize)}
}

// setBase fixes the subscriber's start position, once.
func (s *benchSub) setBase(head uint64) {
	if s.based {
		return
	}
	s.based = true
	s.track = newBenchTrack(head)
	s.base.Store(head)
	s.wsSince = head
}

// complete reports whether the subscriber holds every acknowledged message
// of its channel (the run reads ch.head once publishers have stopped).
func (s *benchSub) complete() bool {
	return s.have.Load() >= int64(s.ch.head)-int64(s.base.Load())
}

// run keeps the subscriber connected until ctx ends: the first
// confirmation (or failure) goes to ready; a connection the server ends is
// reopened from the subscriber's position.
func (s *benchSub) run(ctx context.Context, ready chan<- error) {
	var once sync.Once
	signal := func(err error) { once.Do(func() { ready <- err }) }
	everConfirmed := false
	failures := 0
	for {
		s.confirmed.Store(false)
		err := s.session(ctx, func() { signal(nil) })
		if s.confirmed.Load() {
			everConfirmed = true
			failures = 0
		} else {
			failures++
		}
		if ctx.Err() != nil || s.r.stopping.Load() {
			if s.have.Load() > 0 {
				// It subscribed: messages came before its confirmation
				// was seen (a poll's first answer can carry both), and
				// the run, having them all, stopped it.
				signal(nil)
			} else {
				signal(errors.New("stopped before subscribing"))
			}
			return
		}
		if !everConfirmed {
			signal(fmt.Errorf("subscriber %d: %w", s.idx, err))
			return
		}
		if err == nil {
			err = errors.New("the connection ended")
		}
		s.reconnects.Add(1)
		s.r.notices.add("subscriber %d reconnects: %v", s.idx, err)
		if failures >= 5 {
			s.r.errs.add("subscriber %d gave up after %d failed reconnects: %v", s.idx, failures, err)
			return
		}
		if !benchWait(ctx, time.Duration(failures)*100*time.Millisecond) {
			return
		}
	}
}

// session runs one connection until it ends. confirm is called once the
// subscription is in place.
func (s *benchSub) session(ctx context.Context, confirm func()) error {
	select {
	case s.r.connectSem <- struct{}{}:
	case <-ctx.Done():
		return ctx.Err()
	}
	var release sync.Once
	free := func() { release.Do(func() { <-s.r.connectSem }) }
	defer free()
	done := func() {
		s.confirmed.Store(true)
		free()
		confirm()
	}
	if s.transport == "poll" {
		return s.pollSession(ctx, done)
	}
	return s.reactorSession(ctx, done)
}

// grow doubles the buffer, keeping its first n bytes.
func (s *benchSub) grow(n int) {
	nb := make([]byte, 2*len(s.buf))
	copy(nb, s.buf[:n])
	s.buf = nb
}

// flush publishes what a read brought to the run's counters.
func (s *benchSub) flush(count int64, now int64) {
	if count > 0 {
		s.delivered.Add(count)
		s.have.Store(s.track.distinct)
		s.lastAt.Store(now)
	}
}

// onMessage accounts for one stored message received at now.
func (s *benchSub) onMessage(e benchEnvelope, now, from, to int64) {
	s.track.add(e.offset)
	s.wsSince = e.offset
	if e.t == 0 {
		s.foreign++
		return
	}
	if w := s.r.window; w != nil {
		w.record(now - e.t)
	}
	if e.t >= from && e.t < to {
		if s.hist == nil {
			s.hist = newBenchHist()
		}
		s.hist.record(now - e.t)
	} else if e.t < from && e.t >= s.r.baseFrom.Load() && e.t < s.r.baseTo.Load() {
		if s.baseHist == nil {
			s.baseHist = newBenchHist()
		}
		s.baseHist.record(now - e.t)
	}
}

// onNotice handles an envelope without an offset: the server's notices
// (herald.reset, herald.unsubscribed) or an ephemeral message.
func (s *benchSub) onNotice(env []byte) {
	switch ev := benchEnvelopeEvent(env); string(ev) {
	case protocol.EventReset:
		s.r.errs.add("subscriber %d: herald.reset on %s: its position was not covered: %.300s", s.idx, s.ch.name, env)
	case protocol.EventUnsubscribed:
		s.r.errs.add("subscriber %d: herald.unsubscribed on %s: %.300s", s.idx, s.ch.name, env)
	default:
		s.foreign++
	}
}

// consumeEnvelopes accounts for every envelope in b (a WebSocket message or
// batch push, a poll answer's list).
func (s *benchSub) consumeEnvelopes(b []byte, now int64) {
	from, to := s.r.latFrom.Load(), s.r.latTo.Load()
	var count int64
	for p := 0; ; {
		e, next, ok := benchNextEnvelope(b, p)
		if !ok {
			break
		}
		p = next
		if e.offset == 0 {
			s.onNotice(b[e.at:])
			continue
		}
		s.onMessage(e, now, from, to)
		count++
	}
	s.flush(count, now)
}

// SSE

// sseConsume handles the complete events at the start of b and returns the
// bytes used; done is set when the subscriber leaves (once).
func (s *benchSub) sseConsume(b []byte, now int64, confirm func()) (used int, done bool, err error) {
	from, to := s.r.latFrom.Load(), s.r.latTo.Load()
	var count int64
	var lastID []byte
	for used < len(b) {
		ev, n, ok := benchNextSSEEvent(b[used:])
		if !ok {
			break
		}
		used += n
		if ev.hasID {
			lastID = ev.id
		}
		switch ev.kind {
		case benchSSEMessage:
			if ev.data == nil {
				continue // an id-only event (a skip), a comment, retry:
			}
			e, _, ok := benchNextEnvelope(ev.data, 0)
			if !ok {
				continue
			}
			if e.offset == 0 {
				s.foreign++ // ephemeral
				continue
			}
			s.onMessage(e, now, from, to)
			count++
		case benchSSEConnected:
			head, ok := benchUintField(ev.data, benchKeyOffsetQ)
			if !ok {
				err = fmt.Errorf("herald.connected without an offset: %.300s", ev.data)
				break
			}
			s.setBase(head)
			confirm()
			if s.once {
				done = true
			}
		case benchSSEDisconnect:
			err = fmt.Errorf("the server disconnected the stream: %s", ev.data)
		case benchSSEReset:
			s.r.errs.add("subscriber %d: herald.reset on %s: its position was not covered: %.300s", s.idx, s.ch.name, ev.data)
		case benchSSEUnsubscribed:
			s.r.errs.add("subscriber %d: herald.unsubscribed on %s: %.300s", s.idx, s.ch.name, ev.data)
		}
		if err != nil || done {
			break
		}
	}
	if lastID != nil {
		s.sseID = append(s.sseID[:0], lastID...)
	}
	s.flush(count, now)
	return used, done, err
}

// WebSocket

var benchKeyID = []byte(`{"id":`)

// subscribeOp is the subscribe frame: from the last offset handled once
// the subscriber has a position, else from the head.
func (s *benchSub) subscribeOp() []byte {
	b := []byte(`{"id":1,"op":"` + protocol.OpSubscribe + `","channel":"`)
	b = append(b, s.ch.name...)
	b = append(b, '"')
	if s.wsHasPos {
		b = append(b, `,"since":`...)
		b = strconv.AppendUint(b, s.wsSince, 10)
		if s.wsEpoch != "" {
			b = append(b, `,"epoch":"`...)
			b = append(b, s.wsEpoch...)
			b = append(b, '"')
		}
	}
	return append(b, '}')
}

// Long polling

// benchPollWait is the timeout of a waiting poll (the server's default cap).
const benchPollWait = 30

func (s *benchSub) pollSession(ctx context.Context, confirm func()) error {
	d := net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}
	conn, err := d.DialContext(ctx, "tcp", s.r.urls.node().hostPort)
	if err != nil {
		return err
	}
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { _ = conn.Close() })
	defer stop()
	br := bufio.NewReaderSize(conn, 4<<10)
	first := true
	waiting := false // a waiting poll has been sent: the subscription is in place
	var req []byte
	for {
		req = s.r.benchRequest(req[:0], s.r.urls.pollPath)
		// The target continues after "?channel=": splice the query in.
		req = s.appendPollQuery(req, first)
		if err := conn.SetDeadline(time.Now().Add((benchPollWait + 30) * time.Second)); err != nil {
			return err
		}
		if _, err := conn.Write(req); err != nil {
			return fmt.Errorf("send the poll: %w", err)
		}
		if !first && !waiting {
			waiting = true
			confirm()
		}
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			return fmt.Errorf("read the poll answer: %w", err)
		}
		if resp.StatusCode != http.StatusOK {
			err := client.ErrorFromResponse(resp)
			resp.Body.Close()
			return fmt.Errorf("GET /poll: %w", err)
		}
		n, err := s.readBody(resp.Body)
		resp.Body.Close()
		if err != nil {
			return fmt.Errorf("read the poll answer: %w", err)
		}
		body := s.buf[:n]
		msgs, cursor, session, ok := benchPollAnswer(body)
		if !ok {
			return fmt.Errorf("a poll answer without cursor and session: %.300s", body)
		}
		s.consumeEnvelopes(msgs, time.Now().UnixNano())
		if string(cursor) != s.pollCursor {
			s.pollCursor = string(cursor)
		}
		if string(session) != s.pollSess {
			s.pollSess = string(session)
		}
		if first && s.once {
			confirm()
			return nil
		}
		first = false
		if resp.Close {
			return errors.New("the server closed the connection after a poll")
		}
	}
}

// appendPollQuery completes a poll request whose target ends in
// "?channel=": the channel, cursor, session and timeout (0 on a
// connection's first poll, which answers at once), and the end of the
// request line. req is what benchRequest wrote: the target is spliced in
// before " HTTP/1.1".
func (s *benchSub) appendPollQuery(req []byte, first bool) []byte {
	i := bytes.Index(req, []byte(" HTTP/1.1\r\n"))
	tail := append([]byte(nil), req[i:]...)
	q := append(req[:i], s.ch.qname...)
	if s.pollCursor != "" {
		q = append(q, "&cursor="...)
		q = append(q, s.pollCursor...) // base64url: nothing to escape
	}
	if s.pollSess != "" {
		q = append(q, "&session="...)
		q = append(q, s.pollSess...)
	}
	q = append(q, "&timeout="...)
	if first {
		q = append(q, '0')
	} else {
		q = strconv.AppendInt(q, benchPollWait, 10)
	}
	q = append(q, tail...)
	return append(q, "\r\n"...)
}

// readBody reads r whole into the subscriber's buffer.
func (s *benchSub) readBody(r io.Reader) (int, error) {
	n := 0
	for {
		if n == len(s.buf) {
			s.grow(n)
		}
		m, err := r.Read(s.buf[n:])
		n += m
		if errors.Is(err, io.EOF) {
			return n, nil
		}
		if err != nil {
			return n, err
		}
	}
}
