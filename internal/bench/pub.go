package bench

// The publishers of `herald bench`: each sends one publish, waits for its
// acknowledgement (durable, per the protocol) and sends the next — through
// POST /api/publish on keep-alive connections, or as publish ops on one
// WebSocket connection per publisher — optionally paced to a rate. The
// data carries the send time: {"t":<Unix ns>,"p":"xxx…"}.
//
// Under --rate the publishers draw their messages from one schedule
// (benchPace): message k is due at start + k/rate, whichever publisher
// sends it. A publisher held up by a slow acknowledgement delays only
// its own message; the others, when free, take the next ones, so the
// rate holds as long as the publishers together keep up with it.

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"

	"github.com/heraldrt/herald/client"
	"github.com/heraldrt/herald/protocol"
)

// benchEvent is the event name of every bench message.
const benchEvent = "bench"

// benchPayloadFixed is the size of the data without its padding:
// {"t":<19 digits>,"p":""}.
const benchPayloadFixed = len(`{"t":1234567890123456789,"p":""}`)

type benchPub struct {
	r   *benchRun
	idx int
	pad string

	acks    atomic.Int64
	maxAck  []uint64 // highest acknowledged offset per channel; read once the publisher ends
	ackHist *benchHist
	// baseAckHist: publish to acknowledgement before the flood (flood).
	baseAckHist *benchHist
	body        []byte
	answer      []byte
	data        []byte

	// API: the publisher's own keep-alive connection.
	conn    net.Conn
	br      *bufio.Reader
	reqHead []byte // the request up to the Content-Length value
	unwatch func() bool

	ws   *websocket.Conn
	stop func() bool
	opID uint64
}

func newBenchPub(r *benchRun, idx int) *benchPub {
	p := &benchPub{
		r:           r,
		idx:         idx,
		pad:         strings.Repeat("x", max(0, r.opts.payload-benchPayloadFixed)),
		maxAck:      make([]uint64, len(r.chans)),
		ackHist:     newBenchHist(),
		baseAckHist: newBenchHist(),
		body:        make([]byte, 0, r.opts.payload+256),
		answer:      make([]byte, 4<<10),
	}
	return p
}

// appendData appends the message's data: the send time and the padding.
func (p *benchPub) appendData(b []byte, t int64) []byte {
	b = append(b, `{"t":`...)
	b = strconv.AppendInt(b, t, 10)
	b = append(b, `,"p":"`...)
	b = append(b, p.pad...)
	return append(b, `"}`...)
}

// dial opens the publisher's WebSocket connection, if it publishes over
// one, and waits for the connected push so that bad credentials fail here.
func (p *benchPub) dial(ctx context.Context) error {
	if !p.viaWS() {
		return nil
	}
	hdr := http.Header{}
	setAuth(hdr, p.r.pubToken)
	c, resp, err := p.r.wsDialer.DialContext(ctx, p.r.wsURL(), hdr)
	if err != nil {
		if resp != nil && resp.StatusCode != http.StatusSwitchingProtocols {
			return fmt.Errorf("GET /ws: %w", client.ErrorFromResponse(resp))
		}
		return err
	}
	_ = c.SetReadDeadline(time.Now().Add(publishTimeout))
	for {
		_, b, err := c.ReadMessage()
		if err != nil {
			c.Close()
			return fmt.Errorf("wait for the connected push: %w", err)
		}
		if benchWSKind(b) == benchWSConnected {
			break
		}
	}
	p.ws = c
	return nil
}

// viaWS reports whether the publisher publishes over a WebSocket:
// --publish-via ws, or every second publisher of --publish-via mixed.
func (p *benchPub) viaWS() bool {
	via := p.r.opts.publishVia
	return via == "ws" || via == "mixed" && p.idx%2 == 1
}

func (p *benchPub) close() {
	p.dropHTTP()
	if p.stop != nil {
		p.stop()
	}
	if p.ws != nil {
		_ = p.ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""), time.Now().Add(time.Second))
		_ = p.ws.Close()
	}
}

// run publishes until the run stops it, its tickets run out, ctx ends,
// or ten publishes in a row fail. Over the API a publish is one message,
// or --batch messages in one batch publish; over a WebSocket it is one op
// at a time, or --window of them in flight (runWindow).
func (p *benchPub) run(ctx context.Context) {
	if p.ws != nil {
		c := p.ws
		p.stop = context.AfterFunc(ctx, func() { _ = c.Close() })
		if p.r.opts.window > 1 {
			p.runWindow(ctx)
			return
		}
	}
	o := &p.r.opts
	batch := max(1, o.batch)
	next := p.firstChannel()
	failures := 0
	chs := make([]*benchChannel, 0, batch)
	offs := make([]uint64, 0, batch)
	for k := 0; ; k++ {
		if p.r.pubStop.Load() || ctx.Err() != nil {
			return
		}
		if p.r.pubBounded && p.r.pubTickets.Add(-1) < 0 {
			return
		}
		if due, paced := p.r.pace.take(batch); paced {
			if !benchWait(ctx, time.Until(due)) {
				return
			}
		}
		chs = chs[:0]
		for range batch {
			chs = append(chs, p.r.chans[next])
			next = (next + 1) % len(p.r.chans)
		}
		t0 := time.Now()
		t := t0.UnixNano()
		var err error
		offs = offs[:0]
		switch {
		case p.ws != nil:
			var off uint64
			if off, err = p.publishWS(chs[0], t); err == nil {
				offs = append(offs, off)
			}
		case batch == 1:
			var off uint64
			if off, err = p.publishAPI(ctx, chs[0], t); err == nil {
				offs = append(offs, off)
			}
		default:
			offs, err = p.publishBatchAPI(ctx, chs, t, offs)
		}
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			failures++
			p.r.errs.add("publisher %d: %v", p.idx, err)
			if failures >= 10 {
				p.r.errs.add("publisher %d stopped after %d failed publishes in a row", p.idx, failures)
				return
			}
			if p.ws != nil {
				return // the connection is gone
			}
			benchWait(ctx, time.Duration(failures)*20*time.Millisecond)
			continue
		}
		failures = 0
		took := time.Since(t0).Nanoseconds()
		for i, off := range offs {
			p.acked(chs[i], off, t, took)
		}
	}
}

// firstChannel is where the publisher starts its round robin over the
// channels: each from its own place.
func (p *benchPub) firstChannel() int {
	return p.idx * len(p.r.chans) / max(1, len(p.r.pubs))
}

// benchPace is the publishers' one schedule under --rate: the k-th
// message is due at start + k/rate. The zero value is unpaced.
type benchPace struct {
	start time.Time
	rate  float64 // messages/s; 0: as fast as acknowledged
	next  atomic.Int64
}

// begin starts the schedule at start (a no-op when rate is 0).
func (s *benchPace) begin(start time.Time, rate float64) {
	s.start, s.rate = start, rate
	s.next.Store(0)
}

// take claims the next n messages of the schedule and returns when the
// first is due; paced is false when there is no schedule.
func (s *benchPace) take(n int) (due time.Time, paced bool) {
	if s.rate <= 0 {
		return time.Time{}, false
	}
	k := s.next.Add(int64(n)) - int64(n)
	return s.start.Add(time.Duration(float64(k) / s.rate * float64(time.Second))), true
}

// acked counts one acknowledged message sent at t (Unix ns) to ch at
// offset off, acknowledged took ns after it was sent.
func (p *benchPub) acked(ch *benchChannel, off uint64, t, took int64) {
	p.acks.Add(1)
	if off > p.maxAck[ch.idx] {
		p.maxAck[ch.idx] = off
	}
	if t >= p.r.latFrom.Load() && t < p.r.latTo.Load() {
		p.ackHist.record(took)
	} else if t >= p.r.baseFrom.Load() && t < p.r.baseTo.Load() {
		p.baseAckHist.record(took)
	}
}

// runWindow publishes over the WebSocket with --window ops in flight:
// it sends ops until the window is full, then takes each acknowledgement
// (the server answers in op order) and sends the next. When the run
// stops it sends no more and collects what is in flight.
func (p *benchPub) runWindow(ctx context.Context) {
	o := &p.r.opts
	type inFlight struct {
		id uint64
		ch *benchChannel
		t  int64
	}
	window := make([]inFlight, 0, o.window)
	next := p.firstChannel()
	var due time.Time // of the message claimed from the schedule, not yet sent
	claimed := false
	for {
		for len(window) < o.window && !p.r.pubStop.Load() && ctx.Err() == nil {
			if !claimed {
				var paced bool
				if due, paced = p.r.pace.take(1); paced {
					claimed = true
				}
			}
			if claimed {
				if len(window) > 0 && time.Until(due) > 0 {
					break // collect an acknowledgement while waiting
				}
				if !benchWait(ctx, time.Until(due)) {
					break
				}
				claimed = false
			}
			ch := p.r.chans[next]
			next = (next + 1) % len(p.r.chans)
			t := time.Now().UnixNano()
			if err := p.sendWS(ch, t); err != nil {
				if ctx.Err() == nil {
					p.r.errs.add("publisher %d: %v", p.idx, err)
				}
				return
			}
			window = append(window, inFlight{p.opID, ch, t})
		}
		if len(window) == 0 {
			return
		}
		off, err := p.readWSReply(window[0].id)
		if err != nil {
			if ctx.Err() == nil {
				p.r.errs.add("publisher %d: %v", p.idx, err)
			}
			return
		}
		f := window[0]
		p.acked(f.ch, off, f.t, time.Now().UnixNano()-f.t)
		window = window[1:]
	}
}

// publishAPI sends one POST /api/publish on the publisher's own
// keep-alive connection — written as one request, answered before the
// next — and returns the acknowledged offset. A plain connection instead
// of net/http's client: no goroutine hand-offs per request, a third of the
// CPU, which matters at tens of thousands of publishes a second.
func (p *benchPub) publishAPI(ctx context.Context, ch *benchChannel, t int64) (uint64, error) {
	data := append(p.data[:0], `{"channel":"`...)
	data = append(data, ch.name...)
	data = append(data, `","event":"`+benchEvent+`","data":`...)
	data = p.appendData(data, t)
	data = append(data, '}')
	p.data = data
	answer, err := p.post(ctx, data)
	if err != nil {
		return 0, err
	}
	off, ok := benchUintField(answer, benchKeyOffsetQ)
	if !ok {
		return 0, fmt.Errorf("POST /api/publish answered without an offset: %.300s", answer)
	}
	return off, nil
}

// benchKeyFailed is the count of refused messages in a batch's answer.
var benchKeyFailed = []byte(`"failed":`)

// publishBatchAPI publishes one message to each of chs in one batch
// publish and appends the acknowledged offsets, in order, to offs.
func (p *benchPub) publishBatchAPI(ctx context.Context, chs []*benchChannel, t int64, offs []uint64) ([]uint64, error) {
	data := append(p.data[:0], `{"messages":[`...)
	for i, ch := range chs {
		if i > 0 {
			data = append(data, ',')
		}
		data = append(data, `{"channel":"`...)
		data = append(data, ch.name...)
		data = append(data, `","event":"`+benchEvent+`","data":`...)
		data = p.appendData(data, t)
		data = append(data, '}')
	}
	data = append(data, "]}"...)
	p.data = data
	answer, err := p.post(ctx, data)
	if err != nil {
		return offs, err
	}
	if failed, ok := benchUintField(answer, benchKeyFailed); !ok || failed != 0 {
		return offs, fmt.Errorf("POST /api/publish refused messages of a batch: %.300s", answer)
	}
	for rest := answer; len(offs) < len(chs); {
		i := bytes.Index(rest, benchKeyOffsetQ)
		if i < 0 {
			return offs, fmt.Errorf("POST /api/publish answered %d offsets for %d messages: %.300s", len(offs), len(chs), answer)
		}
		rest = rest[i+len(benchKeyOffsetQ):]
		v, n := benchParseUint(rest)
		if n == 0 {
			return offs, fmt.Errorf("POST /api/publish answered a bad offset: %.300s", answer)
		}
		offs = append(offs, v)
	}
	return offs, nil
}

// post sends body as one POST /api/publish and returns the 200 answer's
// body (valid until the next post).
func (p *benchPub) post(ctx context.Context, body []byte) ([]byte, error) {
	if p.conn == nil {
		if err := p.dialHTTP(ctx); err != nil {
			return nil, err
		}
	}
	b := append(p.body[:0], p.reqHead...)
	b = strconv.AppendInt(b, int64(len(body)), 10)
	b = append(b, "\r\n\r\n"...)
	b = append(b, body...)
	p.body = b
	_ = p.conn.SetDeadline(time.Now().Add(publishTimeout))
	if _, err := p.conn.Write(b); err != nil {
		p.dropHTTP()
		return nil, fmt.Errorf("POST /api/publish: %w", err)
	}
	resp, err := http.ReadResponse(p.br, nil)
	if err != nil {
		p.dropHTTP()
		return nil, fmt.Errorf("POST /api/publish: read the answer: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		aerr := client.ErrorFromResponse(resp)
		resp.Body.Close()
		p.dropHTTP() // the body may not have been read whole
		return nil, fmt.Errorf("POST /api/publish: %w", aerr)
	}
	n := 0
	for {
		if n == len(p.answer) {
			p.answer = append(p.answer, make([]byte, len(p.answer))...)
		}
		m, err := resp.Body.Read(p.answer[n:])
		n += m
		if err == io.EOF {
			break
		}
		if err != nil {
			p.dropHTTP()
			return nil, fmt.Errorf("POST /api/publish: read the answer: %w", err)
		}
	}
	if resp.Close {
		p.dropHTTP()
	}
	return p.answer[:n], nil
}

// dialHTTP opens the publisher's connection; ctx's end closes it.
func (p *benchPub) dialHTTP(ctx context.Context) error {
	d := net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}
	c, err := d.DialContext(ctx, "tcp", p.r.urls.node().hostPort)
	if err != nil {
		return fmt.Errorf("POST /api/publish: %w", err)
	}
	p.conn, p.br = c, bufio.NewReaderSize(c, 4<<10)
	p.unwatch = context.AfterFunc(ctx, func() { _ = c.Close() })
	if p.reqHead == nil {
		h := append([]byte("POST "), p.r.urls.publishPath...)
		h = append(h, " HTTP/1.1\r\nHost: "...)
		h = append(h, p.r.urls.hostPort...)
		h = append(h, "\r\nUser-Agent: herald-bench\r\nContent-Type: application/json\r\nAccept: application/json\r\n"...)
		if p.r.pubToken != "" {
			h = append(h, "Authorization: Bearer "...)
			h = append(h, p.r.pubToken...)
			h = append(h, "\r\n"...)
		}
		p.reqHead = append(h, "Content-Length: "...)
	}
	return nil
}

func (p *benchPub) dropHTTP() {
	if p.conn != nil {
		p.unwatch()
		_ = p.conn.Close()
		p.conn, p.br = nil, nil
	}
}

func (p *benchPub) publishWS(ch *benchChannel, t int64) (uint64, error) {
	if err := p.sendWS(ch, t); err != nil {
		return 0, err
	}
	return p.readWSReply(p.opID)
}

// sendWS sends one publish op, numbered with the next op id.
func (p *benchPub) sendWS(ch *benchChannel, t int64) error {
	p.opID++
	b := append(p.body[:0], `{"id":`...)
	b = strconv.AppendUint(b, p.opID, 10)
	b = append(b, `,"op":"`+protocol.OpPublish+`","channel":"`...)
	b = append(b, ch.name...)
	b = append(b, `","event":"`+benchEvent+`","data":`...)
	b = p.appendData(b, t)
	b = append(b, '}')
	p.body = b
	_ = p.ws.SetWriteDeadline(time.Now().Add(wsWriteTimeout))
	if err := p.ws.WriteMessage(websocket.TextMessage, b); err != nil {
		return fmt.Errorf("send publish: %w", err)
	}
	return nil
}

// readWSReply reads frames until the reply to op id and returns the
// acknowledged offset; a reply to another op is an error (replies come
// in op order).
func (p *benchPub) readWSReply(id uint64) (uint64, error) {
	_ = p.ws.SetReadDeadline(time.Now().Add(publishTimeout))
	for {
		_, rd, err := p.ws.NextReader()
		if err != nil {
			return 0, fmt.Errorf("wait for the acknowledgement: %w", err)
		}
		n := 0
		for {
			if n == len(p.answer) {
				p.answer = append(p.answer, make([]byte, len(p.answer))...)
			}
			m, err := rd.Read(p.answer[n:])
			n += m
			if err != nil {
				break
			}
		}
		frame := p.answer[:n]
		switch benchWSKind(frame) {
		case benchWSReply:
			if got, _ := benchUintField(frame, benchKeyID); got != id {
				return 0, fmt.Errorf("the reply to op %d came where op %d's was due: %.300s", got, id, frame)
			}
			if !bytes.Contains(frame, benchKeyOK) {
				return 0, fmt.Errorf("publish refused: %.300s", frame)
			}
			off, ok := benchUintField(frame, benchKeyOffsetQ)
			if !ok {
				return 0, fmt.Errorf("publish acknowledged without an offset: %.300s", frame)
			}
			return off, nil
		case benchWSDisconnect:
			return 0, fmt.Errorf("the server disconnected: %s", frame)
		}
	}
}

// benchErrors counts errors and keeps the first few messages.
type benchErrors struct {
	mu      sync.Mutex
	n       int64
	samples []string
}

const benchErrorSamples = 10

func (e *benchErrors) add(format string, args ...any) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.n++
	if len(e.samples) < benchErrorSamples {
		e.samples = append(e.samples, fmt.Sprintf(format, args...))
	}
}

func (e *benchErrors) get() (int64, []string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.n, append([]string(nil), e.samples...)
}
