package server

import (
	"fmt"
	"strings"
	"testing"
)

func TestCursorRoundTrip(t *testing.T) {
	t.Parallel()
	entries := []cursorEntry{
		{channel: "chat_room_7", epoch: "b3f1c2a0d9e8", offset: 42},
		{channel: "user_17_notifications", epoch: "000000000000", offset: 0},
		{channel: "x", epoch: "", offset: 1 << 60},
		{channel: "upper", epoch: "B3F1C2A0D9E8", offset: 3},   // not the store's form: kept as text
		{channel: "older", epoch: "a1b2c3", offset: 1<<64 - 1}, // any other epoch
	}
	for _, wide := range []bool{false, true} {
		cur := encodeCursor(entries, wide)
		c, err := ParseCursor(cur)
		if err != nil {
			t.Fatal(err)
		}
		if c.short == wide {
			t.Errorf("wide %v: decoded as short %v", wide, c.short)
		}
		for _, e := range entries {
			epoch, off, ok := c.position(e.channel)
			if !ok || epoch != e.epoch || off != e.offset {
				t.Errorf("wide %v, %s: got %q %d %v, want %q %d", wide, e.channel, epoch, off, ok, e.epoch, e.offset)
			}
		}
		if _, _, ok := c.position("not_in_cursor"); ok {
			t.Errorf("wide %v: found a channel the cursor does not hold", wide)
		}
	}
}

// TestCursorOfCollidingChannels: two channels whose hashes share their
// high half make their session write version 1 cursors, which tell them
// apart; version 2 could not.
func TestCursorOfCollidingChannels(t *testing.T) {
	t.Parallel()
	a, b := collidingChannels(t)
	subs := []*subscription{{pos: cursorEntry{channel: a, epoch: "b3f1c2a0d9e8", offset: 5}}, {pos: cursorEntry{channel: b, epoch: "0123456789ab", offset: 9}}}
	if !wideHashes(subs) {
		t.Fatalf("%s and %s share the hash's high half, wideHashes says no", a, b)
	}
	if wideHashes(subs[:1]) || wideHashes([]*subscription{subs[0], {pos: cursorEntry{channel: "other"}}}) {
		t.Fatal("wideHashes says yes for channels that do not collide")
	}
	c, err := ParseCursor(encodeCursor([]cursorEntry{subs[0].pos, subs[1].pos}, true))
	if err != nil {
		t.Fatal(err)
	}
	for _, sub := range subs {
		if epoch, off, ok := c.position(sub.pos.channel); !ok || epoch != sub.pos.epoch || off != sub.pos.offset {
			t.Errorf("%s: got %q %d %v, want %q %d", sub.pos.channel, epoch, off, ok, sub.pos.epoch, sub.pos.offset)
		}
	}
}

// collidingChannels finds two channel names whose FNV-64a hashes share
// their high 32 bits (about 2^16 names by the birthday bound).
func collidingChannels(t *testing.T) (string, string) {
	seen := make(map[uint32]string, 1<<17)
	for i := range 1 << 22 {
		name := fmt.Sprintf("c_%d", i)
		h := uint32(channelHash(name) >> 32)
		if other, ok := seen[h]; ok {
			return other, name
		}
		seen[h] = name
	}
	t.Fatal("no collision in 2^22 names")
	return "", ""
}

// TestCursorVersion1IsStillRead: a cursor a server wrote before version 2
// (fixed bytes, so that a change of the reader shows) resumes.
func TestCursorVersion1IsStillRead(t *testing.T) {
	t.Parallel()
	const v1 = "AQFQMPrjWAVubQxiM2YxYzJhMGQ5ZTgqHuIzCw" // chat_room_7 at b3f1c2a0d9e8:42
	c, err := ParseCursor(v1)
	if err != nil {
		t.Fatal(err)
	}
	if epoch, off, ok := c.position("chat_room_7"); !ok || epoch != "b3f1c2a0d9e8" || off != 42 {
		t.Fatalf("position %q %d %v", epoch, off, ok)
	}
}

func TestCursorSizeIsBounded(t *testing.T) {
	t.Parallel()
	entries := make([]cursorEntry, 64)
	for i := range entries {
		entries[i] = cursorEntry{channel: strings.Repeat("c", 255) + string(rune('a'+i%26)), epoch: "b3f1c2a0d9e8", offset: 1<<40 + uint64(i)}
	}
	if n := len(encodeCursor(entries, false)); n > 1500 {
		t.Fatalf("cursor of 64 long channel names is %d bytes", n)
	}
	one := encodeCursor([]cursorEntry{{channel: "chat_room_7", epoch: "b3f1c2a0d9e8", offset: 123456}}, false)
	if len(one) > 28 {
		t.Fatalf("one-channel cursor is %d bytes: %s", len(one), one)
	}
}

func TestDamagedCursorIsRejectedNotRewound(t *testing.T) {
	t.Parallel()
	good := encodeCursor([]cursorEntry{{channel: "a", epoch: "b3f1c2a0d9e8", offset: 7}}, false)
	flip := []byte(good)
	flip[5] ^= 0x01
	if flip[5] == '+' || flip[5] == '/' {
		flip[5] = 'A'
	}
	cases := map[string]string{
		"empty-ish":   "AA",
		"not base64":  "!!!!",
		"truncated":   good[:len(good)-3],
		"tampered":    string(flip),
		"extra":       good + "AAAA",
		"huge":        strings.Repeat("A", maxCursorLen+1),
		"other bytes": "AQIDBAUGBwgJ",
	}
	for name, cur := range cases {
		_, err := ParseCursor(cur)
		if err == nil {
			t.Errorf("%s: accepted %q", name, cur)
			continue
		}
		if e := AsError(err); e.Code != 400 || !strings.Contains(e.Message, "cursor") {
			t.Errorf("%s: %v (code %d), want a 400 naming the cursor", name, err, e.Code)
		}
	}
}

func TestCursorNamesItsSession(t *testing.T) {
	t.Parallel()
	ids := sessionIDs{key: []byte("k")}
	sess := ids.mint(user("17"))
	pos := encodeCursor([]cursorEntry{{channel: "a", epoch: "b3f1c2a0d9e8", offset: 7}}, false)
	c, err := ParseCursor(pos + "." + sess)
	if err != nil {
		t.Fatal(err)
	}
	if c.Session() != sess {
		t.Fatalf("session %q, want %q", c.Session(), sess)
	}
	if epoch, off, ok := c.position("a"); !ok || epoch != "b3f1c2a0d9e8" || off != 7 {
		t.Fatalf("position %q %d %v", epoch, off, ok)
	}
	if c, err := ParseCursor(pos); err != nil || c.Session() != "" {
		t.Fatalf("a cursor without a session: %v %q", err, c.Session())
	}
	// A damaged session part is refused like any damage: never a silent
	// change of session.
	for name, cur := range map[string]string{
		"truncated":  pos + "." + sess[:len(sess)-2],
		"empty":      pos + ".",
		"not base32": pos + "." + sess[:len(sess)-1] + "1",
		"two parts":  pos + "." + sess + "." + sess,
		"no prefix":  pos + ".x_" + sess[2:],
	} {
		if _, err := ParseCursor(cur); AsError(err).Code != 400 || !strings.Contains(err.Error(), "session part") {
			t.Errorf("%s: %v, want a 400 naming the session part", name, err)
		}
	}
}

func FuzzParseCursor(f *testing.F) {
	f.Add(encodeCursor([]cursorEntry{{channel: "a", epoch: "b3f1c2a0d9e8", offset: 7}}, false))
	f.Add(encodeCursor(nil, false))
	f.Add(encodeCursor([]cursorEntry{{channel: "a", epoch: "b3f1c2a0d9e8", offset: 7}, {channel: "b", epoch: "x", offset: 1}}, true))
	f.Add("")
	f.Add("AQ")
	f.Add(encodeCursor([]cursorEntry{{channel: "a", epoch: "b3f1c2a0d9e8", offset: 7}}, false) + ".s_ABCDEFGHIJKLMNOPQRSTUVWXYZ234567")
	f.Fuzz(func(t *testing.T, s string) {
		c, err := ParseCursor(s)
		if err != nil {
			if AsError(err).Code != 400 {
				t.Fatalf("error %v is not a 400", err)
			}
			return
		}
		// Whatever decodes must re-encode to the same cursor.
		again := encodeCursor(c.entries, !c.short)
		if c.session != "" {
			again += string(cursorSessionSep) + c.session
		}
		if again != s {
			t.Fatalf("re-encoded %q as %q", s, again)
		}
	})
}
