package store

import (
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
	"time"
)

// Key layout. Every key starts with a one-byte kind, so kinds never mix in a
// range scan and none collides with Badger's internal "!badger!" keys.
//
//	'l' len(channel) channel offset(8, big-endian)  a log entry
//	'h' channel                                      head offset and epoch
//	'f' channel                                      first kept offset
//	'i' len(channel) channel mode key                an idempotency key
//	'v'                                              the layout version
//	's' key                                          small state (State*)
//
// Log and idempotency keys put a one-byte length before the channel name
// (names are at most 255 bytes), so the prefix of channel "a" never matches
// a key of channel "ab". Offsets are big-endian, so one channel's entries are
// one contiguous, ascending key range. Head and first keys have no length
// prefix, because they are only read by exact key or listed by name: 'h'
// keys sort in channel-name byte order, which is the order of Channels.
const (
	kindLog     byte = 'l'
	kindHead    byte = 'h'
	kindFirst   byte = 'f'
	kindIdem    byte = 'i'
	kindVersion byte = 'v'
	kindState   byte = 's'
)

// layoutVersion is stored under the 'v' key. A store refuses to open a
// directory written with another layout.
const layoutVersion = 1

// maxChannelLen is the longest channel name in bytes.
const maxChannelLen = 255

// checkChannel returns an error wrapping ErrBadChannel for a name the store
// cannot key: empty, longer than 255 bytes, or with a NUL byte. The server
// enforces the stricter public alphabet (DESIGN §2).
func checkChannel(name string) error {
	switch {
	case name == "":
		return fmt.Errorf("%q: %w", name, ErrBadChannel)
	case len(name) > maxChannelLen:
		return fmt.Errorf("%q… (%d bytes, max %d): %w", name[:32], len(name), maxChannelLen, ErrBadChannel)
	case strings.IndexByte(name, 0) >= 0:
		return fmt.Errorf("%q: %w", name, ErrBadChannel)
	}
	return nil
}

// logPrefix returns the prefix shared by every log key of channel.
func logPrefix(channel string) []byte {
	return appendLogPrefix(make([]byte, 0, 2+len(channel)+8), channel)
}

func appendLogPrefix(dst []byte, channel string) []byte {
	dst = append(dst, kindLog, byte(len(channel)))
	return append(dst, channel...)
}

// logKey returns the key of channel's entry at offset.
func logKey(channel string, offset uint64) []byte {
	return appendLogKey(make([]byte, 0, 2+len(channel)+8), channel, offset)
}

func appendLogKey(dst []byte, channel string, offset uint64) []byte {
	dst = appendLogPrefix(dst, channel)
	return binary.BigEndian.AppendUint64(dst, offset)
}

// parseLogKey is the inverse of logKey.
func parseLogKey(key []byte) (channel string, offset uint64, ok bool) {
	if len(key) < 2+8 || key[0] != kindLog {
		return "", 0, false
	}
	n := int(key[1])
	if len(key) != 2+n+8 {
		return "", 0, false
	}
	return string(key[2 : 2+n]), binary.BigEndian.Uint64(key[2+n:]), true
}

// logKeyOffset returns the offset of a key known to be a log key: its last
// 8 bytes.
func logKeyOffset(key []byte) uint64 {
	return binary.BigEndian.Uint64(key[len(key)-8:])
}

// headKey returns the key of channel's head offset and epoch.
func headKey(channel string) []byte {
	return append([]byte{kindHead}, channel...)
}

// parseHeadKey is the inverse of headKey.
func parseHeadKey(key []byte) (channel string, ok bool) {
	if len(key) < 2 || key[0] != kindHead {
		return "", false
	}
	return string(key[1:]), true
}

// firstKey returns the key of channel's first kept offset.
func firstKey(channel string) []byte {
	return append([]byte{kindFirst}, channel...)
}

// versionKey returns the key holding the layout version.
func versionKey() []byte { return []byte{kindVersion} }

// Idempotency keys up to maxRawIdemKey bytes are stored as they are; longer
// ones by their SHA-256, under another mode byte so the two never collide.
const (
	maxRawIdemKey      = 128
	idemModeRaw   byte = 0
	idemModeHash  byte = 1
)

// idemKey returns the Badger key remembering idempotency key k on channel.
func idemKey(channel, k string) []byte {
	if len(k) <= maxRawIdemKey {
		key := make([]byte, 0, 3+len(channel)+len(k))
		key = append(key, kindIdem, byte(len(channel)))
		key = append(key, channel...)
		key = append(key, idemModeRaw)
		return append(key, k...)
	}
	sum := sha256.Sum256([]byte(k))
	key := make([]byte, 0, 3+len(channel)+len(sum))
	key = append(key, kindIdem, byte(len(channel)))
	key = append(key, channel...)
	key = append(key, idemModeHash)
	return append(key, sum[:]...)
}

// Values. Each starts with a format byte so a later layout can tell them
// apart; all integers are big-endian.

const valueFormat byte = 1

var errBadValue = errors.New("store: corrupt value")

// entryHeaderLen is the length of a log entry value before its payload.
const entryHeaderLen = 1 + 8

// appendEntryValue appends a log entry's value: format, time in Unix
// nanoseconds, payload.
func appendEntryValue(dst []byte, t time.Time, payload []byte) []byte {
	dst = append(dst, valueFormat)
	dst = binary.BigEndian.AppendUint64(dst, uint64(t.UnixNano()))
	return append(dst, payload...)
}

// parseEntryValue returns the time and payload of a log entry value. The
// payload aliases v.
func parseEntryValue(v []byte) (time.Time, []byte, error) {
	if len(v) < entryHeaderLen || v[0] != valueFormat {
		return time.Time{}, nil, errBadValue
	}
	return time.Unix(0, int64(binary.BigEndian.Uint64(v[1:9]))), v[entryHeaderLen:], nil
}

// headValueLen is the length of a head value: format, head, epoch.
const headValueLen = 1 + 8 + epochLen

func headValue(head uint64, epoch string) []byte {
	v := make([]byte, 0, headValueLen)
	v = append(v, valueFormat)
	v = binary.BigEndian.AppendUint64(v, head)
	return append(v, epoch...)
}

func parseHeadValue(v []byte) (head uint64, epoch string, err error) {
	if len(v) != headValueLen || v[0] != valueFormat {
		return 0, "", errBadValue
	}
	return binary.BigEndian.Uint64(v[1:9]), string(v[9:]), nil
}

func firstValue(first uint64) []byte {
	return binary.BigEndian.AppendUint64([]byte{valueFormat}, first)
}

func parseFirstValue(v []byte) (uint64, error) {
	if len(v) != 9 || v[0] != valueFormat {
		return 0, errBadValue
	}
	return binary.BigEndian.Uint64(v[1:]), nil
}

// idemValueHeaderLen is the length of an idempotency value before its ID:
// format, expiry, offset.
const idemValueHeaderLen = 1 + 8 + 8

// idemRecord is what an idempotency key remembers.
type idemRecord struct {
	Expires time.Time
	Offset  uint64
	ID      string
}

func (r idemRecord) value() []byte {
	v := make([]byte, 0, idemValueHeaderLen+len(r.ID))
	v = append(v, valueFormat)
	v = binary.BigEndian.AppendUint64(v, uint64(r.Expires.UnixNano()))
	v = binary.BigEndian.AppendUint64(v, r.Offset)
	return append(v, r.ID...)
}

func parseIdemValue(v []byte) (idemRecord, error) {
	if len(v) < idemValueHeaderLen || v[0] != valueFormat {
		return idemRecord{}, errBadValue
	}
	return idemRecord{
		Expires: time.Unix(0, int64(binary.BigEndian.Uint64(v[1:9]))),
		Offset:  binary.BigEndian.Uint64(v[9:17]),
		ID:      string(v[idemValueHeaderLen:]),
	}, nil
}
