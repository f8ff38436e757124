package bench

// The subscriber connections of `herald bench` that a reactor reads
// (reactor.go on Linux, reactor_other.go elsewhere): their
// handshake, in the subscriber's own goroutine, and the parsing of what
// the reactor reads. SSE bodies are un-chunked in place; WebSocket frames
// are parsed by hand (server frames are unmasked; fragments are joined;
// pings answered).

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha1"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"time"

	"github.com/heraldrt/herald/client"
)

// benchRConn is one subscriber socket in a reactor.
type benchRConn struct {
	benchRConnSock // the reactor's part (per platform)
	r              *benchReactor
	// out takes the pongs; the reactor sets it.
	out     io.Writer
	sub     *benchSub
	ws      bool
	confirm func()
	ended   chan error

	rn int // bytes in sub.buf
	// SSE, chunked: sub.buf[:dec] is decoded text, sub.buf[rp:rn] not yet
	// decoded.
	chunked   bool
	dec, rp   int
	chunkLeft int
	skip      int
	// WebSocket: a fragmented message being joined.
	msg []byte
}

func newBenchRConn(sub *benchSub, ws, chunked bool, confirm func()) *benchRConn {
	return &benchRConn{sub: sub, ws: ws, chunked: chunked, confirm: confirm, ended: make(chan error, 1)}
}

// process handles the buffered bytes; it ends the connection when they
// say so.
func (c *benchRConn) process(now int64) {
	var done bool
	var err error
	if c.ws {
		done, err = c.processWS(now)
	} else {
		done, err = c.processSSE(now)
	}
	if done || err != nil {
		c.r.endLocked(c, err)
	}
}

var errBenchStreamEnded = errors.New("the server ended the stream")

func (c *benchRConn) processSSE(now int64) (bool, error) {
	buf := c.sub.buf
	var ended bool
	if c.chunked {
		var err error
		if ended, err = c.unchunk(buf); err != nil {
			return false, err
		}
	} else {
		c.dec, c.rp = c.rn, c.rn
	}
	used, done, err := c.sub.sseConsume(buf[:c.dec], now, c.confirm)
	if done || err != nil {
		return done, err
	}
	if ended {
		return false, errBenchStreamEnded
	}
	// Keep the undispatched event and the undecoded bytes.
	rest := copy(buf, buf[used:c.dec])
	und := copy(buf[rest:], buf[c.rp:c.rn])
	c.dec, c.rp, c.rn = rest, rest, rest+und
	return false, nil
}

// unchunk decodes HTTP/1.1 chunked framing in place: chunk data moves down
// to buf[:dec]. It reports the last (empty) chunk.
func (c *benchRConn) unchunk(buf []byte) (ended bool, err error) {
	for c.rp < c.rn {
		if c.skip > 0 {
			k := min(c.skip, c.rn-c.rp)
			c.rp += k
			c.skip -= k
			continue
		}
		if c.chunkLeft > 0 {
			k := min(c.chunkLeft, c.rn-c.rp)
			if c.dec != c.rp {
				copy(buf[c.dec:], buf[c.rp:c.rp+k])
			}
			c.dec += k
			c.rp += k
			c.chunkLeft -= k
			if c.chunkLeft == 0 {
				c.skip = 2 // the CRLF after the data
			}
			continue
		}
		nl := bytes.IndexByte(buf[c.rp:c.rn], '\n')
		if nl < 0 {
			if c.rn-c.rp > 1024 {
				return false, errors.New("a chunk header over 1 KiB")
			}
			return false, nil
		}
		line := buf[c.rp : c.rp+nl]
		c.rp += nl + 1
		size, ok := benchParseHex(line)
		if !ok {
			return false, fmt.Errorf("bad chunk header %q", line)
		}
		if size == 0 {
			return true, nil
		}
		c.chunkLeft = size
	}
	return false, nil
}

// benchParseHex parses a chunk-size line: hex digits, then optional
// extensions and CR.
func benchParseHex(b []byte) (int, bool) {
	n, digits := 0, 0
	for _, ch := range b {
		var v byte
		switch {
		case ch >= '0' && ch <= '9':
			v = ch - '0'
		case ch >= 'a' && ch <= 'f':
			v = ch - 'a' + 10
		case ch >= 'A' && ch <= 'F':
			v = ch - 'A' + 10
		default:
			return n, digits > 0 && (ch == ';' || ch == '\r' || ch == ' ')
		}
		if digits >= 15 {
			return 0, false
		}
		n = n<<4 | int(v)
		digits++
	}
	return n, digits > 0
}

// processWS handles the complete frames in the buffer.
func (c *benchRConn) processWS(now int64) (done bool, err error) {
	buf := c.sub.buf
	p := 0
	for {
		b := buf[p:c.rn]
		if len(b) < 2 {
			break
		}
		fin, op := b[0]&0x80 != 0, b[0]&0x0f
		if b[1]&0x80 != 0 {
			return false, errors.New("the server sent a masked frame")
		}
		l, hdr := int(b[1]&0x7f), 2
		switch l {
		case 126:
			if len(b) < 4 {
				break
			}
			l, hdr = int(binary.BigEndian.Uint16(b[2:4])), 4
		case 127:
			if len(b) < 10 {
				break
			}
			v := binary.BigEndian.Uint64(b[2:10])
			if v > 1<<30 {
				return false, fmt.Errorf("a %d-byte frame", v)
			}
			l, hdr = int(v), 10
		}
		if (l >= 126 && hdr == 2) || len(b) < hdr+l {
			break // incomplete
		}
		payload := b[hdr : hdr+l]
		p += hdr + l
		switch op {
		case 0x1, 0x0: // text, continuation
			if fin && op == 0x1 && len(c.msg) == 0 {
				done, err = c.sub.wsMessage(payload, now, c.confirm)
			} else {
				c.msg = append(c.msg, payload...)
				if fin {
					done, err = c.sub.wsMessage(c.msg, now, c.confirm)
					c.msg = c.msg[:0]
				}
			}
			if done || err != nil {
				return done, err
			}
		case 0x9: // ping: answer with a pong carrying the same data
			_ = benchWritePong(c.out, payload)
		case 0xA: // pong
		case 0x8:
			code, reason := 1005, ""
			if len(payload) >= 2 {
				code, reason = int(binary.BigEndian.Uint16(payload)), string(payload[2:])
			}
			return false, fmt.Errorf("the server closed the connection: %d %s", code, reason)
		default:
			return false, fmt.Errorf("unexpected frame opcode %d", op)
		}
	}
	c.rn = copy(buf, buf[p:c.rn])
	return false, nil
}

// benchWritePong writes a masked pong frame (control frames are short).
func benchWritePong(w io.Writer, data []byte) error {
	if len(data) > 125 {
		data = data[:125]
	}
	f := make([]byte, 0, 6+len(data))
	f = append(f, 0x8A, 0x80|byte(len(data)), 0, 0, 0, 0) // a zero mask leaves the data as it is
	f = append(f, data...)
	_, err := w.Write(f)
	return err
}

// benchWSFrame returns data as one masked text frame.
func benchWSFrame(data []byte) []byte {
	var mask [4]byte
	_, _ = rand.Read(mask[:])
	f := make([]byte, 0, 14+len(data))
	f = append(f, 0x81)
	switch n := len(data); {
	case n < 126:
		f = append(f, 0x80|byte(n))
	case n < 1<<16:
		f = append(f, 0x80|126, byte(n>>8), byte(n))
	default:
		f = append(f, 0x80|127)
		f = binary.BigEndian.AppendUint64(f, uint64(n))
	}
	f = append(f, mask[:]...)
	for i, ch := range data {
		f = append(f, ch^mask[i&3])
	}
	return f
}

// Handshakes: in the subscriber's own goroutine, on an ordinary connection
// that is then handed to the reactor.

const benchHandshakeTimeout = 30 * time.Second

// benchHandshake dials the server, sends req and reads the answer's
// header. On success it returns the connection, for the caller to hand to
// a reactor, and the bytes read past the header.
func (r *benchRun) benchHandshake(ctx context.Context, req []byte, check func(*http.Response) error, then []byte) (conn net.Conn, leftover []byte, resp *http.Response, err error) {
	d := net.Dialer{Timeout: 10 * time.Second}
	conn, err = d.DialContext(ctx, "tcp", r.urls.node().hostPort)
	if err != nil {
		return nil, nil, nil, err
	}
	stop := context.AfterFunc(ctx, func() { _ = conn.Close() })
	leftover, resp, err = benchExchange(conn, req, check, then)
	if !stop() && err == nil {
		err = ctx.Err() // ctx ended: the connection is closed
	}
	if err != nil {
		_ = conn.Close()
		return nil, nil, resp, err
	}
	return conn, leftover, resp, nil
}

// benchExchange sends req on conn, reads and checks the answer's header,
// sends then, and returns the bytes read past the header.
func benchExchange(conn net.Conn, req []byte, check func(*http.Response) error, then []byte) (leftover []byte, resp *http.Response, err error) {
	_ = conn.SetDeadline(time.Now().Add(benchHandshakeTimeout))
	if _, err := conn.Write(req); err != nil {
		return nil, nil, fmt.Errorf("send the request: %w", err)
	}
	br := bufio.NewReaderSize(conn, 16<<10)
	resp, err = http.ReadResponse(br, nil)
	if err != nil {
		return nil, nil, fmt.Errorf("read the answer: %w", err)
	}
	if err := check(resp); err != nil {
		return nil, resp, err
	}
	if len(then) > 0 {
		if _, err := conn.Write(then); err != nil {
			return nil, resp, fmt.Errorf("send: %w", err)
		}
	}
	if n := br.Buffered(); n > 0 {
		b, _ := br.Peek(n)
		leftover = append([]byte(nil), b...)
	}
	_ = conn.SetDeadline(time.Time{})
	return leftover, resp, nil
}

// benchRequest starts an HTTP/1.1 request to the server.
func (r *benchRun) benchRequest(b []byte, target string) []byte {
	b = append(b, "GET "...)
	b = append(b, target...)
	b = append(b, " HTTP/1.1\r\nHost: "...)
	b = append(b, r.urls.hostPort...)
	b = append(b, "\r\nUser-Agent: herald-bench\r\n"...)
	if r.opts.token != "" {
		b = append(b, "Authorization: Bearer "...)
		b = append(b, r.opts.token...)
		b = append(b, "\r\n"...)
	}
	return b
}

// openSSE opens the subscriber's stream and hands it to its reactor.
func (s *benchSub) openSSE(ctx context.Context, confirm func()) (*benchRConn, error) {
	r := s.r
	req := r.benchRequest(nil, r.urls.ssePath+s.ch.qname)
	req = append(req, "Accept: text/event-stream\r\n"...)
	if len(s.sseID) > 0 {
		req = append(req, "Last-Event-ID: "...)
		req = append(req, s.sseID...)
		req = append(req, "\r\n"...)
	}
	req = append(req, "\r\n"...)
	conn, leftover, resp, err := r.benchHandshake(ctx, req, func(resp *http.Response) error {
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("GET /sse: %w", client.ErrorFromResponse(resp))
		}
		return nil
	}, nil)
	if err != nil {
		return nil, err
	}
	chunked := len(resp.TransferEncoding) > 0 && resp.TransferEncoding[0] == "chunked"
	c := newBenchRConn(s, false, chunked, confirm)
	if err := s.reactor().add(c, conn, leftover); err != nil {
		return nil, err
	}
	return c, nil
}

const benchWSGUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

// openWS upgrades, sends the subscribe op and hands the socket to the
// reactor.
func (s *benchSub) openWS(ctx context.Context, confirm func()) (*benchRConn, error) {
	r := s.r
	var k [16]byte
	_, _ = rand.Read(k[:])
	key := base64.StdEncoding.EncodeToString(k[:])
	req := r.benchRequest(nil, r.urls.wsPath)
	req = append(req, "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: "...)
	req = append(req, key...)
	req = append(req, "\r\n\r\n"...)
	sum := sha1.Sum([]byte(key + benchWSGUID))
	accept := base64.StdEncoding.EncodeToString(sum[:])
	conn, leftover, _, err := r.benchHandshake(ctx, req, func(resp *http.Response) error {
		if resp.StatusCode != http.StatusSwitchingProtocols {
			return fmt.Errorf("GET /ws: %w", client.ErrorFromResponse(resp))
		}
		if resp.Header.Get("Sec-WebSocket-Accept") != accept {
			return errors.New("GET /ws: the upgrade answer has a wrong Sec-WebSocket-Accept")
		}
		return nil
	}, benchWSFrame(s.subscribeOp())) // once upgraded: the server refuses data sent ahead
	if err != nil {
		return nil, err
	}
	c := newBenchRConn(s, true, false, confirm)
	if err := s.reactor().add(c, conn, leftover); err != nil {
		return nil, err
	}
	return c, nil
}

// reactorSession runs one SSE or WebSocket connection until it ends or
// ctx does.
func (s *benchSub) reactorSession(ctx context.Context, confirm func()) error {
	var c *benchRConn
	var err error
	if s.transport == "ws" {
		c, err = s.openWS(ctx, confirm)
	} else {
		c, err = s.openSSE(ctx, confirm)
	}
	if err != nil {
		return err
	}
	s.conn.Store(c)
	defer s.conn.Store(nil)
	select {
	case err := <-c.ended:
		return err
	case <-ctx.Done():
		s.reactor().remove(c, ctx.Err())
		<-c.ended
		return ctx.Err()
	}
}

// errBenchKicked ends a connection the run cut on purpose (soak's churn).
var errBenchKicked = errors.New("cut by the run (churn)")

// kick cuts the subscriber's SSE or WebSocket connection, as a network
// would: it comes back from its position like after any other drop. It
// reports whether there was a connection to cut (long polls have none
// held).
func (s *benchSub) kick() bool {
	c := s.conn.Load()
	if c == nil {
		return false
	}
	s.reactor().remove(c, errBenchKicked)
	return true
}

func (s *benchSub) reactor() *benchReactor {
	return s.r.reactors[s.idx%len(s.r.reactors)]
}

// wsMessage handles one WebSocket message (a whole frame's data).
func (s *benchSub) wsMessage(frame []byte, now int64, confirm func()) (done bool, err error) {
	switch benchWSKind(frame) {
	case benchWSMessage:
		s.consumeEnvelopes(frame, now)
	case benchWSReply:
		if id, _ := benchUintField(frame, benchKeyID); id != 1 {
			return false, nil
		}
		if !bytes.Contains(frame, benchKeyOK) {
			return false, fmt.Errorf("subscribe %s refused: %.300s", s.ch.name, frame)
		}
		head, _ := benchUintField(frame, benchKeyOffsetQ)
		if epoch, _, ok := benchStringField(frame, benchKeyEpoch); ok && string(epoch) != s.wsEpoch {
			s.wsEpoch = string(epoch)
		}
		s.setBase(head)
		s.wsHasPos = true
		confirm()
		return s.once, nil
	case benchWSDisconnect:
		return false, fmt.Errorf("the server disconnected: %s", frame)
	case benchWSReset:
		s.r.errs.add("subscriber %d: reset push on %s: its position was not covered: %.300s", s.idx, s.ch.name, frame)
	case benchWSUnsubscribed:
		s.r.errs.add("subscriber %d: unsubscribed push: %.300s", s.idx, frame)
	}
	return false, nil
}
