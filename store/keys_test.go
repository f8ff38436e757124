package store

import (
	"bytes"
	"cmp"
	"math"
	"testing"
	"time"
)

func FuzzLogKey(f *testing.F) {
	f.Add("a", "ab", uint64(1), uint64(2))
	f.Add("chat_room_7", "chat_room_7", uint64(255), uint64(256))
	f.Add("x", "x\x01", uint64(0), uint64(math.MaxUint64))
	f.Add("team_3_", "team_3", uint64(1<<32), uint64(1))
	f.Fuzz(func(t *testing.T, c1, c2 string, o1, o2 uint64) {
		if checkChannel(c1) != nil || checkChannel(c2) != nil {
			return
		}
		k1, k2 := logKey(c1, o1), logKey(c2, o2)
		ch, off, ok := parseLogKey(k1)
		if !ok || ch != c1 || off != o1 || logKeyOffset(k1) != o1 {
			t.Fatalf("parseLogKey(logKey(%q, %d)) = %q, %d, %v", c1, o1, ch, off, ok)
		}
		// One channel's keys sort by offset; another channel's never share
		// its prefix.
		if c1 == c2 {
			if got, want := bytes.Compare(k1, k2), cmp.Compare(o1, o2); got != want {
				t.Fatalf("offsets %d, %d compare as %d", o1, o2, got)
			}
		} else if bytes.HasPrefix(k2, logPrefix(c1)) {
			t.Fatalf("key of %q has the prefix of %q", c2, c1)
		}
		if !bytes.HasPrefix(k1, logPrefix(c1)) {
			t.Fatalf("key of %q lacks its prefix", c1)
		}
		if c1 != c2 && bytes.Equal(idemKey(c1, "k"), idemKey(c2, "k")) {
			t.Fatalf("idempotency keys of %q and %q collide", c1, c2)
		}
		if name, ok := parseHeadKey(headKey(c1)); !ok || name != c1 {
			t.Fatalf("parseHeadKey(headKey(%q)) = %q, %v", c1, name, ok)
		}
	})
}

func TestHeadKeysSortByChannelName(t *testing.T) {
	t.Parallel()
	names := []string{"a", "a/b", "a0", "ab", "b", "b\xff"}
	for i := 1; i < len(names); i++ {
		if bytes.Compare(headKey(names[i-1]), headKey(names[i])) >= 0 {
			t.Errorf("head key of %q does not sort before %q", names[i-1], names[i])
		}
	}
}

func TestValueEncodingsRoundTrip(t *testing.T) {
	t.Parallel()
	at := time.Date(2026, 11, 26, 16, 52, 20, 123456789, time.UTC)
	for _, p := range [][]byte{nil, []byte("x"), bytes.Repeat([]byte{0}, 1000)} {
		tm, got, err := parseEntryValue(appendEntryValue(nil, at, p))
		if err != nil || !tm.Equal(at) || !bytes.Equal(got, p) {
			t.Errorf("entry value of %d bytes: %v %v %v", len(p), tm, len(got), err)
		}
	}
	head, epoch, err := parseHeadValue(headValue(42, "b3f1c2a0d9e8"))
	if err != nil || head != 42 || epoch != "b3f1c2a0d9e8" {
		t.Errorf("head value: %d %q %v", head, epoch, err)
	}
	first, err := parseFirstValue(firstValue(7))
	if err != nil || first != 7 {
		t.Errorf("first value: %d %v", first, err)
	}
	rec := idemRecord{Expires: at, Offset: 9, ID: "m_1"}
	back, err := parseIdemValue(rec.value())
	if err != nil || !back.Expires.Equal(at) || back.Offset != 9 || back.ID != "m_1" {
		t.Errorf("idempotency value: %+v %v", back, err)
	}
	bad := [][]byte{nil, {2, 0, 0, 0, 0, 0, 0, 0, 0}, {1, 2, 3}}
	for _, v := range bad {
		if _, _, err := parseEntryValue(v); err == nil {
			t.Errorf("parseEntryValue(%v) accepted", v)
		}
		if _, _, err := parseHeadValue(v); err == nil {
			t.Errorf("parseHeadValue(%v) accepted", v)
		}
		if _, err := parseIdemValue(v); err == nil {
			t.Errorf("parseIdemValue(%v) accepted", v)
		}
	}
}
