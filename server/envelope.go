package server

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/heraldrt/herald/protocol"
)

// Message is one message as the core fans it out: its routing fields and
// its envelope JSON (DESIGN §2), encoded once at publish (or read) time and
// shared, never copied, by every session and every transport.
type Message struct {
	Channel string
	// Offset is the message's place in the channel log; 0 for ephemeral
	// messages, which are never stored.
	Offset uint64
	Epoch  string
	Event  string
	// Raw is the envelope JSON on one line. Never modify it.
	Raw []byte

	// excludeSession is a session that must not get this message (it gets
	// a skip instead), live or replayed from the store.
	excludeSession string
	// at is when the message was committed (or, ephemeral, published),
	// for the delivery latency metric; zero when read from the store.
	at time.Time
	// presence marks a presence event (herald.join…): the WebSocket
	// pushes it with type "presence".
	presence bool
	// resetTo is, on a herald.reset message, the offset the client's
	// position moves to: the history resumes after it.
	resetTo uint64
	// cursor caches the one-channel resume cursor after this message; see
	// cursorAfter.
	cursor atomic.Pointer[string]
	// frames caches transports' encodings of the message, one slot per
	// registered transport; see Transport.Frame.
	frames [frameSlots]atomic.Pointer[[]byte]
}

// cursorAfter returns the encoded cursor that resumes a one-channel stream
// right after m. Every subscriber of the channel shares it, so it is
// encoded once per message, not once per delivery.
func (m *Message) cursorAfter() string {
	if c := m.cursor.Load(); c != nil {
		return *c
	}
	c := encodeCursor([]cursorEntry{{channel: m.Channel, epoch: m.Epoch, offset: m.Offset}}, false)
	m.cursor.Store(&c)
	return c
}

// TimeFormat is how the server writes times, in envelopes and answers:
// RFC 3339, UTC, milliseconds.
const TimeFormat = "2006-01-02T15:04:05.000Z07:00"

const timeFormat = TimeFormat

// Stored payload formats, told apart by their first byte.
const (
	payloadV1 = 1 // no exclusion
	payloadV2 = 2 // with the session the message excludes
)

// The stored payload is: version byte, [v2: exclude length byte, excluded
// session id,] event length byte, event name, then the envelope's JSON
// after its channel/offset/epoch fields, i.e.
// `"id":"…","event":"…","data":…,"time":"…"[,"from":{…}]}`. Keeping the
// event name in front lets a read rebuild a Message without parsing JSON,
// and the envelope is the three routing fields glued to the stored tail.
// The excluded session is kept so a catch-up from the store honours the
// exclusion exactly as live delivery does.

// encodePayload builds the stored payload of a message.
func encodePayload(id, event string, data json.RawMessage, at time.Time, from *protocol.Sender, exclude string) ([]byte, error) {
	if len(exclude) > 255 {
		return nil, invalidf("exclude_session is %d bytes long, the limit is 255", len(exclude))
	}
	b := make([]byte, 0, 3+len(exclude)+len(event)+len(id)+len(event)+len(data)+96)
	if exclude != "" {
		b = append(b, payloadV2, byte(len(exclude)))
		b = append(b, exclude...)
	} else {
		b = append(b, payloadV1)
	}
	b = append(b, byte(len(event)))
	b = append(b, event...)
	b = append(b, `"id":"`...)
	b = append(b, id...)
	b = append(b, `","event":"`...)
	b = append(b, event...)
	b = append(b, `","data":`...)
	b = append(b, data...)
	b = append(b, `,"time":"`...)
	b = at.UTC().AppendFormat(b, timeFormat)
	b = append(b, '"')
	if from != nil {
		f, err := json.Marshal(from)
		if err != nil {
			return nil, fmt.Errorf("encode sender: %w", err)
		}
		b = append(b, `,"from":`...)
		b = append(b, f...)
	}
	b = append(b, '}')
	return b, nil
}

var errBadPayload = errors.New("server: stored payload is malformed")

// decodePayload splits a stored payload into the session it excludes, its
// event name and its envelope tail.
func decodePayload(p []byte) (exclude, event string, tail []byte, err error) {
	if len(p) < 2 {
		return "", "", nil, errBadPayload
	}
	switch p[0] {
	case payloadV1:
		p = p[1:]
	case payloadV2:
		n := int(p[1])
		if len(p) < 2+n+1 {
			return "", "", nil, errBadPayload
		}
		exclude, p = string(p[2:2+n]), p[2+n:]
	default:
		return "", "", nil, errBadPayload
	}
	n := int(p[0])
	if len(p) < 1+n {
		return "", "", nil, errBadPayload
	}
	return exclude, string(p[1 : 1+n]), p[1+n:], nil
}

// StoredMessage rebuilds the message of a record the core stored, from
// its channel, offset, epoch and payload as the engine keeps them: what a
// reader of the log beside the core (the webhooks' outbox) sends on.
func StoredMessage(channel string, offset uint64, epoch string, payload []byte) (*Message, error) {
	return newMessage(channel, offset, epoch, payload)
}

// StoredEvent returns the event name of a stored payload, reading only its
// header: cheap enough for a router deciding at commit time.
func StoredEvent(payload []byte) (string, error) {
	_, event, _, err := decodePayload(payload)
	return event, err
}

// StoredFields are the fields of a stored message a reader beside the
// core needs, found without decoding its JSON (ParseStored).
type StoredFields struct {
	ID    string
	Event string
	// Data is the message's data, JSON; it aliases the payload.
	Data json.RawMessage
	// From is the sender, when the message names one.
	From *protocol.Sender
}

// ParseStored reads a stored payload's id, event name, data and sender.
// The layout is the core's own (encodePayload), so it needs no JSON
// decoding but the sender's, when there is one.
func ParseStored(payload []byte) (StoredFields, error) {
	_, event, tail, err := decodePayload(payload)
	if err != nil {
		return StoredFields{}, err
	}
	f := StoredFields{Event: event}
	const idField, eventField, dataField = `"id":"`, `","event":"`, `","data":`
	rest, ok := bytes.CutPrefix(tail, []byte(idField))
	end := bytes.IndexByte(rest, '"')
	if !ok || end < 0 {
		return StoredFields{}, errBadPayload
	}
	f.ID, rest = string(rest[:end]), rest[end:]
	rest, ok = bytes.CutPrefix(rest, []byte(eventField+event+dataField))
	if !ok {
		return StoredFields{}, errBadPayload
	}
	n, _, ok := ScanJSONValue(rest)
	if !ok {
		return StoredFields{}, errBadPayload
	}
	f.Data, rest = rest[:n:n], rest[n:]
	// ,"time":"…"[,"from":{…}]}
	if i := bytes.Index(rest, []byte(`,"from":`)); i >= 0 {
		from := rest[i+len(`,"from":`) : len(rest)-1]
		f.From = &protocol.Sender{}
		if err := json.Unmarshal(from, f.From); err != nil {
			return StoredFields{}, fmt.Errorf("%w: sender: %v", errBadPayload, err)
		}
	}
	return f, nil
}

// newMessage builds a Message from a stored payload.
func newMessage(channel string, offset uint64, epoch string, payload []byte) (*Message, error) {
	exclude, event, tail, err := decodePayload(payload)
	if err != nil {
		return nil, fmt.Errorf("channel %q offset %d: %w", channel, offset, err)
	}
	return &Message{
		Channel:        channel,
		Offset:         offset,
		Epoch:          epoch,
		Event:          event,
		Raw:            buildEnvelope(channel, offset, epoch, tail),
		excludeSession: exclude,
	}, nil
}

// buildEnvelope glues the routing fields to a stored tail. Channel names,
// epochs and offsets need no JSON escaping: their alphabets are checked
// when they enter the server.
func buildEnvelope(channel string, offset uint64, epoch string, tail []byte) []byte {
	b := make([]byte, 0, len(channel)+len(epoch)+len(tail)+48)
	b = append(b, `{"channel":"`...)
	b = append(b, channel...)
	b = append(b, '"')
	if offset > 0 {
		b = append(b, `,"offset":`...)
		b = strconv.AppendUint(b, offset, 10)
	}
	if epoch != "" {
		b = append(b, `,"epoch":"`...)
		b = append(b, epoch...)
		b = append(b, '"')
	}
	b = append(b, ',')
	return append(b, tail...)
}

// compactData validates a message's data as JSON and removes insignificant
// white space, so the envelope is one line (SSE frames it per line). Data
// that is compact already (what clients send, mostly) is returned as it
// is, after one scan.
func compactData(data json.RawMessage, max int) (json.RawMessage, error) {
	trimmed := trimJSONSpace(data)
	if len(trimmed) == 0 {
		return json.RawMessage("null"), nil
	}
	if n, spaced, ok := ScanJSONValue(trimmed); ok && n == len(trimmed) && !spaced {
		if len(trimmed) > max {
			return nil, tooLargef("data is %d bytes, the limit is %d", len(trimmed), max)
		}
		return trimmed, nil
	}
	var buf bytes.Buffer
	buf.Grow(len(data))
	if err := json.Compact(&buf, data); err != nil {
		return nil, invalidf("data is not valid JSON: %v", err)
	}
	if buf.Len() > max {
		return nil, tooLargef("data is %d bytes, the limit is %d", buf.Len(), max)
	}
	return buf.Bytes(), nil
}

// trimJSONSpace removes the whitespace JSON allows around a value.
func trimJSONSpace(b []byte) []byte {
	isSpace := func(c byte) bool { return c == ' ' || c == '\t' || c == '\n' || c == '\r' }
	for len(b) > 0 && isSpace(b[0]) {
		b = b[1:]
	}
	for len(b) > 0 && isSpace(b[len(b)-1]) {
		b = b[:len(b)-1]
	}
	return b
}

// Crockford's base32 alphabet, as used by ULIDs.
const crockford = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"

// newMessageID returns "m_" and a ULID: 48 bits of milliseconds and 80
// random bits, so ids sort by time and never collide in practice.
func newMessageID(now time.Time) string {
	var b [2 + 26]byte
	b[0], b[1] = 'm', '_'
	ms := uint64(now.UnixMilli())
	hi, lo := rand.Uint64(), rand.Uint64()
	// 128 bits: ms(48) | hi(64) | lo(16)
	var v [16]byte
	v[0], v[1], v[2], v[3], v[4], v[5] = byte(ms>>40), byte(ms>>32), byte(ms>>24), byte(ms>>16), byte(ms>>8), byte(ms)
	for i := 0; i < 8; i++ {
		v[6+i] = byte(hi >> (56 - 8*i))
	}
	v[14], v[15] = byte(lo>>8), byte(lo)
	// Encode 130 bits (2 leading zero bits) as 26 base32 characters.
	var acc uint64
	bits := 2 // the two leading zero bits
	out := 2
	for _, x := range v {
		acc = acc<<8 | uint64(x)
		bits += 8
		for bits >= 5 {
			bits -= 5
			b[out] = crockford[(acc>>uint(bits))&31]
			out++
		}
	}
	return string(b[:])
}
