package server

import (
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"hash/crc32"
	"hash/fnv"
	"strings"
)

// A cursor is the resume position of a whole SSE stream or poll: for each
// channel, its epoch and the last offset the client holds. Clients treat it
// as opaque; it is the same on SSE (as the event id) and long polling.
//
// Encoding, version 2 (then base64url without padding):
//
//	version(1)=2 count(uvarint) { channelHash(4) epoch offset(uvarint) }… crc32c(4)
//
// channelHash is the high half of the name's FNV-64a; epoch is one byte 0
// (none), or 1 and the six bytes of the store's twelve lowercase hex
// digits, or 2, a length byte and the text (any other epoch). An entry is
// about 14 bytes, so a stream of 64 channels carries a cursor of about
// 1.2 KB on every event.
//
// Version 1 is what servers wrote before, and still what one writes for a
// session two of whose channels share the hash's high half (one in 2^32
// for a pair; the session knows it, subscribe.go):
//
//	version(1)=1 count(uvarint) { channelHash(8, FNV-64a) epochLen(1) epoch offset(uvarint) }… crc32c(4)
//
// Both are read. Channels are stored by hash, not by name, so a cursor
// stays small whatever the names; the request names the channels and the
// hash finds each one's entry. A channel the cursor was not made for that
// happens to share a hash with one it was made for gets that channel's
// epoch, which is not its own: it is treated as reset, never resumed at a
// stranger's offset. The CRC catches truncation and corruption; a client
// that forges a cursor can only move its own stream, which it could do
// with per-channel positions anyway, so a MAC would add nothing.
//
// A cursor a session hands out ends with "." and the session id (which is
// not base64url, so the dot is unambiguous): a client resuming from it
// continues that session — its exclusions and its place in presence — on
// any transport (sessionid.go). The session part carries its own proof of
// ownership; one that is malformed is refused like any damage, one that is
// not the caller's (or was altered into another well-formed id) just starts
// a new session, and the positions still apply.
const (
	cursorVersion     = 2
	cursorVersionWide = 1
	// maxCursorLen bounds a cursor we will decode (header or query).
	maxCursorLen = 8 << 10
	// maxCursorEntries bounds the channels in one cursor.
	maxCursorEntries = 1024
)

// Epoch tags of a version 2 entry.
const (
	epochNone = 0
	epochHex  = 1 // six bytes, written as twelve lowercase hex digits
	epochText = 2 // a length byte and the text
)

var crcTable = crc32.MakeTable(crc32.Castagnoli)

type cursorEntry struct {
	channel string // empty when decoded: only the hash travels
	hash    uint64
	epoch   string
	offset  uint64
}

func channelHash(name string) uint64 {
	h := fnv.New64a()
	h.Write([]byte(name))
	return h.Sum64()
}

// encodeCursor encodes entries in version 2, or in version 1 when wide
// (two of the entries' channels share the high half of their hash).
func encodeCursor(entries []cursorEntry, wide bool) string {
	if wide {
		return encodeCursorWide(entries)
	}
	b := make([]byte, 0, 1+binary.MaxVarintLen64+len(entries)*16+4)
	b = append(b, cursorVersion)
	b = binary.AppendUvarint(b, uint64(len(entries)))
	for _, e := range entries {
		b = binary.BigEndian.AppendUint32(b, uint32(e.channelHash()>>32))
		switch {
		case e.epoch == "":
			b = append(b, epochNone)
		case isEpochHex(e.epoch):
			b = append(b, epochHex)
			for i := 0; i < len(e.epoch); i += 2 {
				b = append(b, unhex(e.epoch[i])<<4|unhex(e.epoch[i+1]))
			}
		default:
			b = append(b, epochText, byte(len(e.epoch)))
			b = append(b, e.epoch...)
		}
		b = binary.AppendUvarint(b, e.offset)
	}
	return finishCursor(b)
}

// encodeCursorWide encodes entries in version 1.
func encodeCursorWide(entries []cursorEntry) string {
	b := make([]byte, 0, 1+binary.MaxVarintLen64+len(entries)*24+4)
	b = append(b, cursorVersionWide)
	b = binary.AppendUvarint(b, uint64(len(entries)))
	for _, e := range entries {
		b = binary.BigEndian.AppendUint64(b, e.channelHash())
		b = append(b, byte(len(e.epoch)))
		b = append(b, e.epoch...)
		b = binary.AppendUvarint(b, e.offset)
	}
	return finishCursor(b)
}

// finishCursor appends the checksum and encodes b in base64url.
func finishCursor(b []byte) string {
	b = binary.BigEndian.AppendUint32(b, crc32.Checksum(b, crcTable))
	return base64.RawURLEncoding.EncodeToString(b)
}

// channelHash is the entry's channel hash: the one it was decoded with
// (a decoded entry has no name), else its name's.
func (e cursorEntry) channelHash() uint64 {
	if e.hash != 0 || e.channel == "" {
		return e.hash
	}
	return channelHash(e.channel)
}

// isEpochHex reports whether an epoch is twelve lowercase hex digits, as
// the store makes them: those are written as six bytes (an upper-case one
// would come back in lower case, so it is written as text).
func isEpochHex(epoch string) bool {
	if len(epoch) != 12 {
		return false
	}
	for i := 0; i < len(epoch); i++ {
		if c := epoch[i]; !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}

// unhex is the value of a lowercase hex digit.
func unhex(c byte) byte {
	if c >= 'a' {
		return c - 'a' + 10
	}
	return c - '0'
}

// wideHashes reports whether two of the channels share the high half of
// their hash, so that their cursor must be written in version 1.
func wideHashes(subs []*subscription) bool {
	if len(subs) < 2 {
		return false
	}
	seen := make(map[uint32]bool, len(subs))
	for _, sub := range subs {
		h := uint32(sub.pos.channelHash() >> 32)
		if seen[h] {
			return true
		}
		seen[h] = true
	}
	return false
}

// cursorSessionSep separates a cursor's positions from its session.
const cursorSessionSep = '.'

// Cursor is a decoded resume cursor.
type Cursor struct {
	entries []cursorEntry
	// session is the session the cursor names ("" for none); not yet
	// checked for ownership.
	session string
	// short: the entries hold the high half of their channel's hash, its
	// low half zero (version 2).
	short bool
}

// ParseCursor decodes a cursor. Any damage (bad base64, wrong length,
// checksum mismatch, unknown version) is a 400 error naming the problem:
// a damaged cursor must never silently rewind or skip a stream.
func ParseCursor(s string) (Cursor, error) {
	if len(s) > maxCursorLen {
		return Cursor{}, invalidf("cursor is %d bytes long, the limit is %d", len(s), maxCursorLen)
	}
	s, session, named := strings.Cut(s, string(cursorSessionSep))
	if named && !wellFormedSessionID(session) {
		return Cursor{}, invalidf("cursor is not valid: its session part is malformed (truncated or altered)")
	}
	// base64's decoder skips CR and LF; a cursor has none of them, nor
	// anything else outside the base64url alphabet.
	for i := 0; i < len(s); i++ {
		if c := s[i]; !(c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			return Cursor{}, invalidf("cursor is not valid: character %s at position %d is not base64url", describeRune(s[i:]), i+1)
		}
	}
	b, err := base64.RawURLEncoding.Strict().DecodeString(s) // one encoding per cursor: no stray trailing bits
	if err != nil {
		return Cursor{}, invalidf("cursor is not valid: not base64url (%v)", err)
	}
	if len(b) < 1+1+4 {
		return Cursor{}, invalidf("cursor is not valid: truncated")
	}
	body, sum := b[:len(b)-4], binary.BigEndian.Uint32(b[len(b)-4:])
	if crc32.Checksum(body, crcTable) != sum {
		return Cursor{}, invalidf("cursor is not valid: checksum mismatch (truncated, corrupted or altered)")
	}
	var c Cursor
	switch body[0] {
	case cursorVersion:
		c, err = parseEntries(body[1:], true)
	case cursorVersionWide:
		c, err = parseEntries(body[1:], false)
	default:
		return Cursor{}, invalidf("cursor is not valid: unknown version %d", body[0])
	}
	if err != nil {
		return Cursor{}, err
	}
	c.session = session
	return c, nil
}

// parseEntries reads a cursor's entries after its version byte, in
// version 2 when short (4-byte hashes, tagged epochs), else version 1.
func parseEntries(p []byte, short bool) (Cursor, error) {
	n, k := binary.Uvarint(p)
	if k <= 0 || n > maxCursorEntries {
		return Cursor{}, invalidf("cursor is not valid: bad channel count")
	}
	p = p[k:]
	c := Cursor{entries: make([]cursorEntry, 0, n), short: short}
	truncated := invalidf("cursor is not valid: truncated")
	for range n {
		var e cursorEntry
		if short {
			if len(p) < 5 {
				return Cursor{}, truncated
			}
			e.hash = uint64(binary.BigEndian.Uint32(p)) << 32
			tag := p[4]
			p = p[5:]
			switch tag {
			case epochNone:
			case epochHex:
				if len(p) < 6 {
					return Cursor{}, truncated
				}
				e.epoch = hex.EncodeToString(p[:6])
				p = p[6:]
			case epochText:
				if len(p) < 1 || len(p) < 1+int(p[0]) {
					return Cursor{}, truncated
				}
				e.epoch = string(p[1 : 1+int(p[0])])
				p = p[1+int(p[0]):]
				if e.epoch == "" || isEpochHex(e.epoch) {
					return Cursor{}, invalidf("cursor is not valid: epoch %q written as text", e.epoch)
				}
			default:
				return Cursor{}, invalidf("cursor is not valid: unknown epoch tag %d", tag)
			}
		} else {
			if len(p) < 9 {
				return Cursor{}, truncated
			}
			e.hash = binary.BigEndian.Uint64(p)
			el := int(p[8])
			p = p[9:]
			if len(p) < el {
				return Cursor{}, truncated
			}
			e.epoch = string(p[:el])
			p = p[el:]
		}
		off, k := binary.Uvarint(p)
		if k <= 0 {
			return Cursor{}, invalidf("cursor is not valid: bad offset")
		}
		e.offset = off
		p = p[k:]
		c.entries = append(c.entries, e)
	}
	if len(p) != 0 {
		return Cursor{}, invalidf("cursor is not valid: %d trailing bytes", len(p))
	}
	return c, nil
}

// Session returns the session the cursor names, "" when none. Whether it
// belongs to the caller is for the server to check.
func (c Cursor) Session() string { return c.session }

// position returns the cursor's position for channel, if it has one.
func (c Cursor) position(channel string) (epoch string, offset uint64, ok bool) {
	h := channelHash(channel)
	if c.short {
		h &^= 1<<32 - 1 // the entries hold the high half
	}
	for _, e := range c.entries {
		if e.hash == h {
			return e.epoch, e.offset, true
		}
	}
	return "", 0, false
}
