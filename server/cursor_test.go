package server

import (
	"strings"
	"testing"
)

func TestCursorRoundTrip(t *testing.T) {
	t.Parallel()
	entries := []cursorEntry{
		{channel: "chat_room_7", epoch: "b3f1c2a0d9e8", offset: 42},
		{channel: "user_17_notifications", epoch: "000000000000", offset: 0},
		{channel: "x", epoch: "", offset: 1 << 60},
	}
	c, err := ParseCursor(encodeCursor(entries))
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		epoch, off, ok := c.position(e.channel)
		if !ok || epoch != e.epoch || off != e.offset {
			t.Errorf("%s: got %q %d %v, want %q %d", e.channel, epoch, off, ok, e.epoch, e.offset)
		}
	}
	if _, _, ok := c.position("not_in_cursor"); ok {
		t.Error("found a channel the cursor does not hold")
	}
}

func TestCursorSizeIsBounded(t *testing.T) {
	t.Parallel()
	entries := make([]cursorEntry, 64)
	for i := range entries {
		entries[i] = cursorEntry{channel: strings.Repeat("c", 255) + string(rune('a'+i%26)), epoch: "b3f1c2a0d9e8", offset: 1<<40 + uint64(i)}
	}
	if n := len(encodeCursor(entries)); n > 2500 {
		t.Fatalf("cursor of 64 long channel names is %d bytes", n)
	}
	one := encodeCursor([]cursorEntry{{channel: "chat_room_7", epoch: "b3f1c2a0d9e8", offset: 123456}})
	if len(one) > 48 {
		t.Fatalf("one-channel cursor is %d bytes: %s", len(one), one)
	}
}

func TestDamagedCursorIsRejectedNotRewound(t *testing.T) {
	t.Parallel()
	good := encodeCursor([]cursorEntry{{channel: "a", epoch: "b3f1c2a0d9e8", offset: 7}})
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
	pos := encodeCursor([]cursorEntry{{channel: "a", epoch: "b3f1c2a0d9e8", offset: 7}})
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
	f.Add(encodeCursor([]cursorEntry{{channel: "a", epoch: "b3f1c2a0d9e8", offset: 7}}))
	f.Add(encodeCursor(nil))
	f.Add("")
	f.Add("AQ")
	f.Add(encodeCursor([]cursorEntry{{channel: "a", epoch: "b3f1c2a0d9e8", offset: 7}}) + ".s_ABCDEFGHIJKLMNOPQRSTUVWXYZ234567")
	f.Fuzz(func(t *testing.T, s string) {
		c, err := ParseCursor(s)
		if err != nil {
			if AsError(err).Code != 400 {
				t.Fatalf("error %v is not a 400", err)
			}
			return
		}
		// Whatever decodes must re-encode to the same cursor.
		again := encodeCursor(c.entries)
		if c.session != "" {
			again += string(cursorSessionSep) + c.session
		}
		if again != s {
			t.Fatalf("re-encoded %q as %q", s, again)
		}
	})
}
