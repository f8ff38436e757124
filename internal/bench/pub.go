package bench

// The publishers of `herald bench`: each sends one publish, waits for its
// acknowledgement (durable, per the protocol) and sends the next — through
// POST /api/publish on keep-alive connections, or as publish ops on one
// WebSocket connection per publisher — optionally paced to a rate. The
// data carries the send time: {"t":<Unix ns>,"p":"xxx…"}.

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
	if p.r.opts.publishVia != "ws" {
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
// or ten publishes in a row fail.
func (p *benchPub) run(ctx context.Context) {
	if p.ws != nil {
		c := p.ws
		p.stop = context.AfterFunc(ctx, func() { _ = c.Close() })
	}
	o := &p.r.opts
	nch := len(p.r.chans)
	next := p.idx * nch / max(1, len(p.r.pubs)) // round robin, each publisher from its own place
	var interval time.Duration
	start := time.Now()
	if o.rate > 0 {
		interval = time.Duration(float64(len(p.r.pubs)) / o.rate * float64(time.Second))
		start = start.Add(time.Duration(p.idx) * interval / time.Duration(len(p.r.pubs)))
	}
	failures := 0
	for k := 0; ; k++ {
		if p.r.pubStop.Load() || ctx.Err() != nil {
			return
		}
		if p.r.pubBounded && p.r.pubTickets.Add(-1) < 0 {
			return
		}
		if interval > 0 {
			if !benchWait(ctx, time.Until(start.Add(time.Duration(k)*interval))) {
				return
			}
		}
		ch := p.r.chans[next]
		next++
		if next == nch {
			next = 0
		}
		t0 := time.Now()
		t := t0.UnixNano()
		var off uint64
		var err error
		if p.ws != nil {
			off, err = p.publishWS(ch, t)
		} else {
			off, err = p.publishAPI(ctx, ch, t)
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
		p.acks.Add(1)
		if off > p.maxAck[ch.idx] {
			p.maxAck[ch.idx] = off
		}
		if t >= p.r.latFrom.Load() && t < p.r.latTo.Load() {
			p.ackHist.record(time.Since(t0).Nanoseconds())
		} else if t >= p.r.baseFrom.Load() && t < p.r.baseTo.Load() {
			p.baseAckHist.record(time.Since(t0).Nanoseconds())
		}
	}
}

// publishAPI sends one POST /api/publish on the publisher's own
// keep-alive connection — written as one request, answered before the
// next — and returns the acknowledged offset. A plain connection instead
// of net/http's client: no goroutine hand-offs per request, a third of the
// CPU, which matters at tens of thousands of publishes a second.
func (p *benchPub) publishAPI(ctx context.Context, ch *benchChannel, t int64) (uint64, error) {
	if p.conn == nil {
		if err := p.dialHTTP(ctx); err != nil {
			return 0, err
		}
	}
	data := append(p.data[:0], `{"channel":"`...)
	data = append(data, ch.name...)
	data = append(data, `","event":"`+benchEvent+`","data":`...)
	data = p.appendData(data, t)
	data = append(data, '}')
	p.data = data
	b := append(p.body[:0], p.reqHead...)
	b = strconv.AppendInt(b, int64(len(data)), 10)
	b = append(b, "\r\n\r\n"...)
	b = append(b, data...)
	p.body = b
	_ = p.conn.SetDeadline(time.Now().Add(publishTimeout))
	if _, err := p.conn.Write(b); err != nil {
		p.dropHTTP()
		return 0, fmt.Errorf("POST /api/publish: %w", err)
	}
	resp, err := http.ReadResponse(p.br, nil)
	if err != nil {
		p.dropHTTP()
		return 0, fmt.Errorf("POST /api/publish: read the answer: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		aerr := client.ErrorFromResponse(resp)
		resp.Body.Close()
		p.dropHTTP() // the body may not have been read whole
		return 0, fmt.Errorf("POST /api/publish: %w", aerr)
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
			return 0, fmt.Errorf("POST /api/publish: read the answer: %w", err)
		}
	}
	if resp.Close {
		p.dropHTTP()
	}
	off, ok := benchUintField(p.answer[:n], benchKeyOffsetQ)
	if !ok {
		return 0, fmt.Errorf("POST /api/publish answered without an offset: %.300s", p.answer[:n])
	}
	return off, nil
}

// dialHTTP opens the publisher's connection; ctx's end closes it.
func (p *benchPub) dialHTTP(ctx context.Context) error {
	d := net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}
	c, err := d.DialContext(ctx, "tcp", p.r.urls.hostPort)
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
		return 0, fmt.Errorf("send publish: %w", err)
	}
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
			if id, _ := benchUintField(frame, benchKeyID); id != p.opID {
				continue
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
