package ws

import (
	"bytes"
	"compress/flate"
	"encoding/binary"
	"fmt"
	"io"
	"unicode/utf8"

	"github.com/gorilla/websocket"
)

// The connection's frames are read by the transport itself (RFC 6455
// §5), from whatever the handler's watch.Watcher read off the socket: a
// connection that sends nothing holds no goroutine and no buffer, and one
// that sends is parsed where its bytes landed, with no copy but for a
// frame cut in two by a read. gorilla/websocket's reader cannot serve
// here: it blocks inside a read until a data message arrives, pongs and
// pings included, so it needs a goroutine parked per connection.

const (
	opContinuation = 0x0
	opBinary       = 0x2
	rsvBits        = 0x70
	maskBit        = 0x80
)

// readError is a fault of the client's frames: the connection is closed
// with code and text.
type readError struct {
	code int
	text string
}

func (e *readError) Error() string { return fmt.Sprintf("websocket %d: %s", e.code, e.text) }

func protocolErr(format string, args ...any) *readError {
	return &readError{code: websocket.CloseProtocolError, text: fmt.Sprintf(format, args...)}
}

// frameReader parses a client's frames from the bytes it is fed. A
// message whose frames are all in one read is handed over in place;
// only a frame cut by a read, or a fragmented message, is kept between
// reads. It is used by one goroutine at a time.
type frameReader struct {
	maxMessage int64 // the largest message taken; past it, close 1009
	tooBig     string
	deflate    bool // the connection negotiated permessage-deflate

	pending []byte // an unfinished frame's bytes; nil when none

	// A fragmented message being put together.
	msgOp         byte // opText or opBinary; 0 when none
	msgCompressed bool
	msg           []byte
}

// message is one complete message or control frame: op and its payload,
// unmasked (and inflated). The payload is valid until the next feed.
type message struct {
	op      byte
	payload []byte
}

// feed parses the frames in p (after what is pending) and hands each
// complete message or control frame to handle, which returns false to
// stop: the rest is kept for the next feed (call feed(nil) to go on). p
// is the caller's buffer; feed may unmask it in place. An error means the
// client broke the protocol; the connection ends.
func (r *frameReader) feed(p []byte, handle func(message) bool) error {
	data := p
	if len(r.pending) > 0 {
		r.pending = append(r.pending, p...)
		data = r.pending
	}
	for len(data) > 0 {
		n, msg, ok, err := r.next(data)
		if err != nil {
			r.pending = nil
			return err
		}
		if n == 0 {
			break // an unfinished frame
		}
		data = data[n:]
		if ok && !handle(msg) {
			break
		}
	}
	// Keep what is left. When it already sits at the front of pending,
	// move it down; otherwise copy it out of the caller's buffer.
	switch {
	case len(data) == 0:
		r.pending = nil // nothing held while the client is quiet
	case len(r.pending) > 0 && &data[0] != &r.pending[0]:
		r.pending = append(r.pending[:0], data...)
	case len(r.pending) == 0:
		r.pending = append([]byte(nil), data...)
	}
	return nil
}

// buffered reports whether bytes wait to be parsed.
func (r *frameReader) buffered() bool { return len(r.pending) > 0 }

// next parses one frame at the start of data. n is 0 when the frame is
// not all there; ok is false for a frame that completes nothing yet (a
// fragment).
func (r *frameReader) next(data []byte) (n int, m message, ok bool, err error) {
	if len(data) < 2 {
		return 0, m, false, nil
	}
	b0, b1 := data[0], data[1]
	fin, rsv, op := b0&finBit != 0, b0&rsvBits, b0&0x0f
	if b1&maskBit == 0 {
		return 0, m, false, protocolErr("bad MASK")
	}
	head := 2
	length := int64(b1 & 0x7f)
	switch length {
	case 126:
		if len(data) < 4 {
			return 0, m, false, nil
		}
		length = int64(binary.BigEndian.Uint16(data[2:]))
		head = 4
	case 127:
		if len(data) < 10 {
			return 0, m, false, nil
		}
		v := binary.BigEndian.Uint64(data[2:])
		if v>>63 != 0 {
			return 0, m, false, protocolErr("bad frame length")
		}
		length = int64(v)
		head = 10
	}
	compressed := false
	switch op {
	case opClose, opPing, opPong:
		if length > 125 || !fin {
			return 0, m, false, protocolErr("bad control frame")
		}
		if rsv != 0 {
			return 0, m, false, protocolErr("unexpected reserved bits 0x%x", rsv)
		}
	case opText, opBinary:
		if r.msgOp != 0 {
			return 0, m, false, protocolErr("message start before final message frame")
		}
		if rsv == rsv1Bit && r.deflate {
			compressed = true
		} else if rsv != 0 {
			return 0, m, false, protocolErr("unexpected reserved bits 0x%x", rsv)
		}
		if op == opBinary {
			// Refused at once, before its payload is taken in.
			return 0, m, false, &readError{code: websocket.CloseUnsupportedData, text: binaryRefused}
		}
	case opContinuation:
		if r.msgOp == 0 {
			return 0, m, false, protocolErr("continuation after final message frame")
		}
		if rsv != 0 {
			return 0, m, false, protocolErr("unexpected reserved bits 0x%x", rsv)
		}
	default:
		return 0, m, false, protocolErr("unknown opcode %d", op)
	}
	if op <= opBinary && int64(len(r.msg))+length > r.maxMessage {
		return 0, m, false, &readError{code: websocket.CloseMessageTooBig, text: r.tooBig}
	}
	end := int64(head) + 4 + length
	if int64(len(data)) < end {
		return 0, m, false, nil
	}
	key := data[head : head+4]
	payload := data[head+4 : end]
	unmask(key, payload)
	n = int(end)
	switch op {
	case opClose, opPing, opPong:
		return n, message{op: op, payload: payload}, true, nil
	case opText, opBinary:
		if fin {
			p, err := r.finish(payload, compressed)
			return n, message{op: op, payload: p}, err == nil, err
		}
		r.msgOp, r.msgCompressed = op, compressed
		r.msg = append(r.msg[:0], payload...)
		return n, m, false, nil
	}
	// A continuation.
	r.msg = append(r.msg, payload...)
	if !fin {
		return n, m, false, nil
	}
	op, compressed = r.msgOp, r.msgCompressed
	p, err := r.finish(r.msg, compressed)
	r.msgOp, r.msg = 0, nil
	return n, message{op: op, payload: p}, err == nil, err
}

// finish returns a whole message's payload, inflated if it came
// compressed.
func (r *frameReader) finish(p []byte, compressed bool) ([]byte, error) {
	if !compressed {
		return p, nil
	}
	return inflate(p, r.maxMessage, r.tooBig)
}

// unmask applies the client's masking key (RFC 6455 §5.3).
func unmask(key, p []byte) {
	k := [4]byte(key)
	i := 0
	if len(p) >= 8 {
		k8 := uint64(k[0]) | uint64(k[1])<<8 | uint64(k[2])<<16 | uint64(k[3])<<24
		k8 |= k8 << 32
		for ; i+8 <= len(p); i += 8 {
			binary.LittleEndian.PutUint64(p[i:], binary.LittleEndian.Uint64(p[i:])^k8)
		}
	}
	for ; i < len(p); i++ {
		p[i] ^= k[i&3]
	}
}

// inflate decompresses a permessage-deflate message (RFC 7692 §7.2.2),
// taking at most max bytes out.
func inflate(p []byte, max int64, tooBig string) ([]byte, error) {
	// The sender drops the empty stored block that ends a flush; put it
	// back, and a final empty block so the stream ends cleanly.
	src := io.MultiReader(bytes.NewReader(p), bytes.NewReader([]byte("\x00\x00\xff\xff\x01\x00\x00\xff\xff")))
	fr := flate.NewReader(src)
	defer fr.Close()
	out, err := io.ReadAll(io.LimitReader(fr, max+1))
	if err != nil {
		return nil, &readError{code: websocket.CloseInvalidFramePayloadData, text: "bad compressed message"}
	}
	if int64(len(out)) > max {
		return nil, &readError{code: websocket.CloseMessageTooBig, text: tooBig}
	}
	return out, nil
}

// closeReceived checks a client's close frame and returns the code to
// answer with (RFC 6455 §5.5.1, §7.4).
func closeReceived(payload []byte) (int, error) {
	switch {
	case len(payload) == 0:
		return websocket.CloseNoStatusReceived, nil
	case len(payload) == 1:
		return 0, protocolErr("invalid control frame")
	}
	code := int(binary.BigEndian.Uint16(payload))
	if !validCloseCode(code) {
		return 0, protocolErr("invalid close code")
	}
	if !utf8.Valid(payload[2:]) {
		return 0, &readError{code: websocket.CloseInvalidFramePayloadData, text: "invalid utf8 payload in close frame"}
	}
	return code, nil
}

// validCloseCode reports whether a client may send code (the IANA
// registry's codes meant for the wire, and the 3000–4999 range).
func validCloseCode(code int) bool {
	switch code {
	case 1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013:
		return true
	}
	return code >= 3000 && code <= 4999
}
