package bench

// The hot path of `herald bench`'s subscribers: finding, in the bytes a
// transport delivers, each envelope's channel, offset and the send time
// its data carries — without unmarshalling anything. The envelope's keys
// come in a fixed order (server/envelope.go: channel, offset, epoch, id,
// event, data, time, from), channel names, epochs, ids and event names
// never hold a quote, so plain byte searches are exact.

import (
	"bytes"
	"encoding/binary"

	"github.com/heraldrt/herald/protocol"
)

var (
	benchKeyChannel = []byte(`{"channel":"`)
	benchKeyOffset  = []byte(`","offset":`) // right after the channel's closing quote
	benchKeyData    = []byte(`"data":`)
	benchKeyT       = []byte(`{"t":`)
	benchKeyEvent   = []byte(`"event":"`)
	benchKeyCursor  = []byte(`"cursor":"`)
	benchKeySession = []byte(`"session":"`)
	benchKeyOffsetQ = []byte(`"offset":`)
	benchKeyOK      = []byte(`"ok":true`)
	benchKeyEpoch   = []byte(`"epoch":"`)
)

// benchEnvelope is what the subscribers take from one envelope. Slices
// alias the scanned buffer.
type benchEnvelope struct {
	channel []byte
	// offset is 0 for a message without one: ephemeral messages and the
	// server's notices (herald.reset, herald.unsubscribed).
	offset uint64
	// t is the send time in the payload (Unix nanoseconds), 0 when the
	// data is not a bench payload.
	t int64
	// at is where the envelope starts in the scanned buffer.
	at int
}

// benchNextEnvelope finds the first envelope in b at or after from and
// returns it with the index to continue from. It serves one envelope (an
// SSE data line, a WebSocket message push) as well as a list (a WebSocket
// batch push, a poll answer): every envelope starts with {"channel":".
func benchNextEnvelope(b []byte, from int) (e benchEnvelope, next int, ok bool) {
	if bytes.HasPrefix(b[from:], benchKeyChannel) {
		e.at = from
	} else if i := bytes.Index(b[from:], benchKeyChannel); i >= 0 {
		e.at = from + i
	} else {
		return e, len(b), false
	}
	p := e.at + len(benchKeyChannel)
	q := bytes.IndexByte(b[p:], '"')
	if q < 0 {
		return e, len(b), false
	}
	e.channel = b[p : p+q]
	p += q
	if bytes.HasPrefix(b[p:], benchKeyOffset) {
		p += len(benchKeyOffset)
		v, n := benchParseUint(b[p:])
		e.offset, p = v, p+n
	}
	if d := benchSkipToData(b, p); d >= 0 {
		p = d
	} else if d := bytes.Index(b[p:], benchKeyData); d >= 0 {
		p += d + len(benchKeyData)
	} else {
		return e, len(b), true
	}
	if bytes.HasPrefix(b[p:], benchKeyT) {
		p += len(benchKeyT)
		v, n := benchParseUint(b[p:])
		e.t, p = int64(v), p+n
	}
	return e, p, true
}

// The fixed-width stretch of a Herald envelope after its offset:
// ,"epoch":"<12 hex>","id":"m_<26 ULID>","event":"
const (
	benchEpochAt = len(`,"epoch":"`)
	benchIDAt    = benchEpochAt + 12 + len(`","id":"`)
	benchEventAt = benchIDAt + 28 + len(`","event":"`)
)

var (
	benchKeyEpochF = []byte(`,"epoch":"`)
	benchKeyIDF    = []byte(`","id":"`)
	benchKeyEventF = []byte(`","event":"`)
	benchKeyDataF  = []byte(`","data":`)
)

// benchSkipToData returns the index right after `"data":` when the bytes
// from p have the exact shape of a Herald envelope's epoch, id and event
// fields (their keys at their fixed places), and -1 otherwise: then the
// caller searches.
func benchSkipToData(b []byte, p int) int {
	if len(b)-p < benchEventAt+1+len(benchKeyDataF) ||
		!bytes.Equal(b[p:p+len(benchKeyEpochF)], benchKeyEpochF) ||
		!bytes.Equal(b[p+benchIDAt-len(benchKeyIDF):p+benchIDAt], benchKeyIDF) ||
		!bytes.Equal(b[p+benchEventAt-len(benchKeyEventF):p+benchEventAt], benchKeyEventF) {
		return -1
	}
	q := bytes.IndexByte(b[p+benchEventAt:], '"')
	if q < 0 {
		return -1
	}
	d := p + benchEventAt + q
	if !bytes.HasPrefix(b[d:], benchKeyDataF) {
		return -1
	}
	return d + len(benchKeyDataF)
}

// benchEnvelopeEvent returns the event name of the envelope starting at
// b[0] (for the rare envelope without an offset: a notice).
func benchEnvelopeEvent(b []byte) []byte {
	i := bytes.Index(b, benchKeyEvent)
	if i < 0 {
		return nil
	}
	b = b[i+len(benchKeyEvent):]
	if j := bytes.IndexByte(b, '"'); j >= 0 {
		return b[:j]
	}
	return nil
}

// benchParseUint parses the decimal digits at the start of b and returns
// the value and how many bytes it used (0: no digit). It does not check for
// overflow: offsets and nanosecond times fit.
func benchParseUint(b []byte) (v uint64, n int) {
	// Eight digits at a time while they last (send times have 19).
	for len(b)-n >= 8 {
		d, ok := benchParse8(b[n:])
		if !ok {
			break
		}
		v = v*100_000_000 + d
		n += 8
	}
	for n < len(b) {
		c := b[n] - '0'
		if c > 9 {
			break
		}
		v = v*10 + uint64(c)
		n++
	}
	return v, n
}

// benchParse8 parses eight ASCII digits at once (SWAR), or reports that
// b[:8] are not all digits.
func benchParse8(b []byte) (uint64, bool) {
	v := binary.LittleEndian.Uint64(b)
	if v&0xF0F0F0F0F0F0F0F0 != 0x3030303030303030 ||
		(v+0x0606060606060606)&0xF0F0F0F0F0F0F0F0 != 0x3030303030303030 {
		return 0, false
	}
	v -= 0x3030303030303030
	v = v*10 + v>>8 // pairs
	v = ((v&0x000000FF000000FF)*(100+(1000000<<32)) + (v>>16&0x000000FF000000FF)*(1+(10000<<32))) >> 32
	return v, true
}

// benchStringField returns the string value after key (which ends with
// the opening quote), searching from the end of b: the fields a poll
// answer ends with.
func benchStringField(b, key []byte) ([]byte, int, bool) {
	i := bytes.LastIndex(b, key)
	if i < 0 {
		return nil, -1, false
	}
	v := b[i+len(key):]
	j := bytes.IndexByte(v, '"')
	if j < 0 {
		return nil, -1, false
	}
	return v[:j], i, true
}

// benchPollAnswer splits a poll answer {"messages":[…],"cursor":"…",
// "session":"…"} into the part holding the envelopes, the cursor and the
// session.
func benchPollAnswer(b []byte) (messages, cursor, session []byte, ok bool) {
	session, si, ok1 := benchStringField(b, benchKeySession)
	if !ok1 {
		return nil, nil, nil, false
	}
	cursor, ci, ok2 := benchStringField(b[:si], benchKeyCursor)
	if !ok2 {
		return nil, nil, nil, false
	}
	return b[:ci], cursor, session, true
}

// benchUintField returns the number after the first key in b (a reply's
// "offset", an op's "id").
func benchUintField(b, key []byte) (uint64, bool) {
	i := bytes.Index(b, key)
	if i < 0 {
		return 0, false
	}
	v, n := benchParseUint(b[i+len(key):])
	return v, n > 0
}

// WebSocket frames, told apart by how they start (transports/ws: replies
// are {"id":…, pushes {"type":"…").
const (
	benchWSOther = iota
	benchWSReply
	benchWSMessage // message or batch push: envelopes
	benchWSConnected
	benchWSDisconnect
	benchWSReset
	benchWSSkip
	benchWSUnsubscribed
)

var benchWSPrefixes = []struct {
	prefix []byte
	kind   int
}{
	{[]byte(`{"type":"` + protocol.PushMessage + `"`), benchWSMessage},
	{[]byte(`{"type":"` + protocol.PushBatch + `"`), benchWSMessage},
	{[]byte(`{"id":`), benchWSReply},
	{[]byte(`{"type":"` + protocol.PushConnected + `"`), benchWSConnected},
	{[]byte(`{"type":"` + protocol.PushDisconnect + `"`), benchWSDisconnect},
	{[]byte(`{"type":"` + protocol.PushReset + `"`), benchWSReset},
	{[]byte(`{"type":"` + protocol.PushSkip + `"`), benchWSSkip},
	{[]byte(`{"type":"` + protocol.PushUnsubscribed + `"`), benchWSUnsubscribed},
}

func benchWSKind(frame []byte) int {
	for _, p := range benchWSPrefixes {
		if bytes.HasPrefix(frame, p.prefix) {
			return p.kind
		}
	}
	return benchWSOther
}

// SSE: the kinds of event a subscriber tells apart by its event: line.
const (
	benchSSEMessage = iota
	benchSSEConnected
	benchSSEDisconnect
	benchSSEReset
	benchSSEUnsubscribed
	benchSSEOtherNotice // another herald.* event
)

func benchSSEKind(name []byte) int {
	if !bytes.HasPrefix(name, []byte(protocol.ReservedPrefix)) {
		return benchSSEMessage
	}
	switch string(name) {
	case protocol.EventConnected:
		return benchSSEConnected
	case protocol.EventDisconnect:
		return benchSSEDisconnect
	case protocol.EventReset:
		return benchSSEReset
	case protocol.EventUnsubscribed:
		return benchSSEUnsubscribed
	}
	return benchSSEOtherNotice
}

// benchSSEEvent is one complete SSE event; slices alias the buffer.
type benchSSEEvent struct {
	kind  int
	event []byte
	data  []byte // the last data: line (Herald never splits an envelope)
	id    []byte
	hasID bool
}

// benchNextSSEEvent parses the complete event at the start of b — the
// lines up to a blank line — and returns it with the bytes it used; ok is
// false when b holds no complete event yet. Comment and retry: blocks come
// back as events without data.
func benchNextSSEEvent(b []byte) (ev benchSSEEvent, used int, ok bool) {
	pos := 0
	for {
		nl := bytes.IndexByte(b[pos:], '\n')
		if nl < 0 {
			return benchSSEEvent{}, 0, false
		}
		line := b[pos : pos+nl]
		pos += nl + 1
		if n := len(line); n > 0 && line[n-1] == '\r' {
			line = line[:n-1]
		}
		if len(line) == 0 {
			return ev, pos, true
		}
		switch line[0] {
		case 'd':
			if v, ok := benchSSEField(line, "data"); ok {
				ev.data = v
			}
		case 'e':
			if v, ok := benchSSEField(line, "event"); ok {
				ev.event = v
				ev.kind = benchSSEKind(v)
			}
		case 'i':
			if v, ok := benchSSEField(line, "id"); ok {
				ev.id, ev.hasID = v, true
			}
		}
	}
}

// benchSSEField returns the value of a "name: value" line.
func benchSSEField(line []byte, name string) ([]byte, bool) {
	if len(line) < len(name)+1 || string(line[:len(name)]) != name || line[len(name)] != ':' {
		return nil, false
	}
	v := line[len(name)+1:]
	if len(v) > 0 && v[0] == ' ' {
		v = v[1:]
	}
	return v, true
}
