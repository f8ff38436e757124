package ws

import (
	"bytes"
	"compress/flate"
	"encoding/binary"
	"sync"
	"unicode/utf8"

	"github.com/gorilla/websocket"

	"github.com/heraldrt/herald/protocol"
	"github.com/heraldrt/herald/server"
	"github.com/heraldrt/herald/transports/internal/writer"
)

// The server's frames are written by the handler's writer.Flusher, which
// takes turns on every connection with something to send; Frame encodes a
// turn's frames itself (RFC 6455 §5.2: a server's frames are not masked),
// so that a turn's frames go out in one write with no copy through a
// library's buffer. gorilla/websocket does the handshake and the reading.

// WebSocket opcodes and header bits (RFC 6455 §5.2).
const (
	opText  = 0x1
	opClose = 0x8
	opPing  = 0x9
	opPong  = 0xA
	finBit  = 0x80
	rsv1Bit = 0x40 // a compressed message (RFC 7692)
)

// Frame frames one writer turn (writer.Framer): the control frames the
// reader queued (pongs, a close), then the queued items, a ping on a
// heartbeat turn, or — when the session has closed and the client is to
// be told — the last items, a disconnect push and the close frame.
func (c *conn) Frame(t *writer.Turn) int {
	t.Buf = c.appendControl(t.Buf)
	if t.Kind == writer.TurnClose {
		reason := c.sess.Reason()
		code, tell := closeCode(reason)
		if !tell {
			return 0
		}
		t.Items = c.sess.Drain(t.Items[:0])
		n := len(t.Items)
		t.Buf = c.appendItems(t.Buf, t.Items)
		clear(t.Items)
		t.Buf = c.appendData(t.Buf, encode(protocol.DisconnectPush{Type: protocol.PushDisconnect, Code: code,
			Reason: reason.String(), Reconnect: reason.Reconnect()}))
		t.Buf = appendClose(t.Buf, code, reason.String())
		return n
	}
	if t.Kind == writer.TurnHeartbeat {
		t.Buf = appendHeader(t.Buf, opPing, 0, false)
	}
	t.Items = c.sess.Drain(t.Items[:0])
	n := len(t.Items)
	t.Buf = c.appendItems(t.Buf, t.Items)
	clear(t.Items) // drop message references until the next turn
	return n
}

// sendControl queues a control frame (a pong, a close) for the next turn.
func (c *conn) sendControl(op byte, payload []byte) {
	if len(payload) > 125 { // a control frame's payload (RFC 6455 §5.5)
		payload = payload[:125]
	}
	c.ctrlMu.Lock()
	c.ctrl = appendHeader(c.ctrl, op, len(payload), false)
	c.ctrl = append(c.ctrl, payload...)
	c.ctrlMu.Unlock()
	c.stream.Wake()
}

// sendClose queues a close frame for the next turn.
func (c *conn) sendClose(code int, reason string) {
	c.sendControl(opClose, closePayload(code, reason))
}

func (c *conn) appendControl(b []byte) []byte {
	c.ctrlMu.Lock()
	defer c.ctrlMu.Unlock()
	b = append(b, c.ctrl...)
	c.ctrl = nil
	return b
}

// closeCode maps why the core closed a session to the close code sent, and
// whether the client is told at all (not when it left or cannot be
// written to).
func closeCode(r server.Reason) (int, bool) {
	switch r {
	case server.ReasonShutdown:
		return websocket.CloseServiceRestart, true
	case server.ReasonSlowConsumer:
		return protocol.CloseSlowConsumer, true
	case server.ReasonTokenExpired:
		return protocol.CloseTokenExpired, true
	case server.ReasonInternal:
		return websocket.CloseInternalServerErr, true
	case server.ReasonUnavailable:
		return protocol.CloseTryAgainLater, true
	case server.ReasonRevoked, server.ReasonKicked, server.ReasonBanned, server.ReasonReplaced:
		return protocol.ClosePolicy, true
	}
	return 0, false
}

// appendItems frames items in order. Consecutive messages go out as one
// batch push: one frame for a whole backlog (up to MaxBatch messages).
// Envelopes are copied into the frame as they are, never re-encoded.
func (c *conn) appendItems(b []byte, items []server.Item) []byte {
	for i := 0; i < len(items); {
		it := &items[i]
		switch it.Kind {
		case server.KindMessage:
			j := i + 1
			for j < len(items) && items[j].Kind == server.KindMessage && j-i < c.h.opts.MaxBatch {
				j++
			}
			b = c.appendMessages(b, items[i:j])
			i = j
			continue
		case server.KindReset:
			b = c.appendWrapped(b, protocol.ResetPrefix, it.Msg.Raw)
		case server.KindPresence:
			b = c.appendWrapped(b, protocol.PresencePrefix, it.Msg.Raw)
		case server.KindFrame:
			b = c.appendData(b, it.Raw)
		case server.KindUnsubscribed:
			b = c.appendData(b, encode(protocol.UnsubscribedPush{Type: protocol.PushUnsubscribed, Channel: it.Msg.Channel, Reason: protocol.ReasonRevoked}))
		case server.KindSkip:
			// The client excluded itself from this message: it gets the
			// position, not the message, so a resume does not bring it back.
			m := it.Msg
			b = c.appendData(b, encode(protocol.SkipPush{Type: protocol.PushSkip, Channel: m.Channel, Offset: m.Offset, Epoch: m.Epoch}))
		}
		i++
	}
	return b
}

// appendMessages frames a run of messages: one message push, or one batch
// push for several.
func (c *conn) appendMessages(b []byte, run []server.Item) []byte {
	if len(run) == 1 {
		return c.appendWrapped(b, protocol.MessagePrefix, run[0].Msg.Raw)
	}
	if c.deflate {
		return c.appendCompressed(b, func(p []byte) []byte { return appendBatch(p, run) })
	}
	n := len(protocol.BatchPrefix) + len(run) - 1 + len("]}")
	for k := range run {
		n += len(run[k].Msg.Raw)
	}
	return appendBatch(appendHeader(b, opText, n, false), run)
}

func appendBatch(b []byte, run []server.Item) []byte {
	b = append(b, protocol.BatchPrefix...)
	for k := range run {
		if k > 0 {
			b = append(b, ',')
		}
		b = append(b, run[k].Msg.Raw...)
	}
	return append(b, "]}"...)
}

// appendWrapped frames prefix + raw + "}" as one text frame.
func (c *conn) appendWrapped(b []byte, prefix string, raw []byte) []byte {
	if c.deflate {
		return c.appendCompressed(b, func(p []byte) []byte {
			return append(append(append(p, prefix...), raw...), '}')
		})
	}
	b = appendHeader(b, opText, len(prefix)+len(raw)+1, false)
	b = append(b, prefix...)
	b = append(b, raw...)
	return append(b, '}')
}

// appendData frames p as one text frame.
func (c *conn) appendData(b, p []byte) []byte {
	if c.deflate {
		return c.appendCompressed(b, func(q []byte) []byte { return append(q, p...) })
	}
	return append(appendHeader(b, opText, len(p), false), p...)
}

// appendHeader appends the header of an unmasked final frame of n bytes.
func appendHeader(b []byte, op byte, n int, compressed bool) []byte {
	b0 := finBit | op
	if compressed {
		b0 |= rsv1Bit
	}
	switch {
	case n < 126:
		return append(b, b0, byte(n))
	case n <= 0xffff:
		return binary.BigEndian.AppendUint16(append(b, b0, 126), uint16(n))
	default:
		return binary.BigEndian.AppendUint64(append(b, b0, 127), uint64(n))
	}
}

// appendClose appends a close frame: the code and the reason, cut to fit
// a control frame.
func appendClose(b []byte, code int, reason string) []byte {
	p := closePayload(code, reason)
	return append(appendHeader(b, opClose, len(p), false), p...)
}

// closePayload is a close frame's payload: the code and as much of the
// reason as fits (RFC 6455 §5.5: 125 bytes in all).
func closePayload(code int, reason string) []byte {
	if code == websocket.CloseNoStatusReceived {
		return nil // never sent on the wire
	}
	if len(reason) > 120 {
		cut := 120
		for cut > 0 && !utf8.RuneStart(reason[cut]) {
			cut-- // never cut a character in two: the reason must stay UTF-8
		}
		reason = reason[:cut]
	}
	return append(binary.BigEndian.AppendUint16(nil, uint16(code)), reason...)
}

// Compression (permessage-deflate, RFC 7692, as negotiated by the
// upgrader: no context takeover either way), for connections that
// negotiated it: each message is deflated on its own.

var deflaters = sync.Pool{New: func() any {
	w, _ := flate.NewWriter(nil, flate.BestSpeed) // a valid level: no error
	return w
}}

// appendCompressed frames the payload that build appends as one
// compressed text frame.
func (c *conn) appendCompressed(b []byte, build func([]byte) []byte) []byte {
	plain := build(nil)
	var out bytes.Buffer
	w := deflaters.Get().(*flate.Writer)
	w.Reset(&out)
	_, _ = w.Write(plain) // a bytes.Buffer does not fail
	_ = w.Flush()
	deflaters.Put(w)
	// A flushed deflate stream ends with an empty stored block, 00 00 ff
	// ff, which the message leaves out (RFC 7692 §7.2.1).
	p := bytes.TrimSuffix(out.Bytes(), []byte{0x00, 0x00, 0xff, 0xff})
	return append(appendHeader(b, opText, len(p), true), p...)
}
