package server

import (
	"encoding/base64"
	"encoding/binary"
	"hash/crc32"
	"hash/fnv"
	"strings"
)

// A cursor is the resume position of a whole SSE stream or poll: for each
// channel, its epoch and the last offset the client holds. Clients treat it
// as opaque; it is the same on SSE (as the event id) and long polling.
//
// Encoding (then base64url without padding):
//
//	version(1) count(uvarint) { channelHash(8, FNV-64a) epochLen(1) epoch offset(uvarint) }… crc32c(4)
//
// Channels are stored by hash, not by name, so a cursor stays small (under
// 30 bytes per channel) whatever the names; the request names the channels
// and the hash finds each one's entry. The CRC catches truncation and
// corruption; a client that forges a cursor can only move its own stream,
// which it could do with per-channel positions anyway, so a MAC would add
// nothing.
//
// A cursor a session hands out ends with "." and the session id (which is
// not base64url, so the dot is unambiguous): a client resuming from it
// continues that session — its exclusions and its place in presence — on
// any transport (sessionid.go). The session part carries its own proof of
// ownership; one that is malformed is refused like any damage, one that is
// not the caller's (or was altered into another well-formed id) just starts
// a new session, and the positions still apply.
const (
	cursorVersion = 1
	// maxCursorLen bounds a cursor we will decode (header or query).
	maxCursorLen = 8 << 10
	// maxCursorEntries bounds the channels in one cursor.
	maxCursorEntries = 1024
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

func encodeCursor(entries []cursorEntry) string {
	b := make([]byte, 0, 1+binary.MaxVarintLen64+len(entries)*24+4)
	b = append(b, cursorVersion)
	b = binary.AppendUvarint(b, uint64(len(entries)))
	for _, e := range entries {
		h := e.hash
		if h == 0 {
			h = channelHash(e.channel)
		}
		b = binary.BigEndian.AppendUint64(b, h)
		b = append(b, byte(len(e.epoch)))
		b = append(b, e.epoch...)
		b = binary.AppendUvarint(b, e.offset)
	}
	b = binary.BigEndian.AppendUint32(b, crc32.Checksum(b, crcTable))
	return base64.RawURLEncoding.EncodeToString(b)
}

// cursorSessionSep separates a cursor's positions from its session.
const cursorSessionSep = '.'

// Cursor is a decoded resume cursor.
type Cursor struct {
	entries []cursorEntry
	// session is the session the cursor names ("" for none); not yet
	// checked for ownership.
	session string
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
	if body[0] != cursorVersion {
		return Cursor{}, invalidf("cursor is not valid: unknown version %d", body[0])
	}
	p := body[1:]
	n, k := binary.Uvarint(p)
	if k <= 0 || n > maxCursorEntries {
		return Cursor{}, invalidf("cursor is not valid: bad channel count")
	}
	p = p[k:]
	c := Cursor{entries: make([]cursorEntry, 0, n)}
	for i := uint64(0); i < n; i++ {
		if len(p) < 9 {
			return Cursor{}, invalidf("cursor is not valid: truncated")
		}
		var e cursorEntry
		e.hash = binary.BigEndian.Uint64(p)
		el := int(p[8])
		p = p[9:]
		if len(p) < el {
			return Cursor{}, invalidf("cursor is not valid: truncated")
		}
		e.epoch = string(p[:el])
		p = p[el:]
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
	c.session = session
	return c, nil
}

// Session returns the session the cursor names, "" when none. Whether it
// belongs to the caller is for the server to check.
func (c Cursor) Session() string { return c.session }

// position returns the cursor's position for channel, if it has one.
func (c Cursor) position(channel string) (epoch string, offset uint64, ok bool) {
	h := channelHash(channel)
	for _, e := range c.entries {
		if e.hash == h {
			return e.epoch, e.offset, true
		}
	}
	return "", 0, false
}
