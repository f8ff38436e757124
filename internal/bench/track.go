package bench

// Delivery accounting of `herald bench`: per subscriber and channel, a
// bitmap of the offsets received after the subscriber's start position.
// A repeat is a duplicate, an offset below the highest one seen is out of
// order, and an offset up to the channel's last acknowledged one that
// never came is lost. Exact, and a bit per message: 12,000 messages cost
// 1.5 KB.

import "math/bits"

// benchMaxTrackWords bounds one bitmap (2^26 words = 4·10^9 offsets); an
// offset further than that from the start is counted as a jump, never
// allocated for.
const benchMaxTrackWords = 1 << 26

type benchTrack struct {
	// base is the subscriber's start position: it holds every offset up
	// to base, and expects base+1 next.
	base uint64
	bits []uint64
	// high is the highest offset received.
	high     uint64
	distinct int64 // offsets after base received at least once
	dup      int64 // received again, or at or below base
	reorder  int64 // received after a higher offset
	jump     int64 // absurdly far ahead: not tracked
}

func newBenchTrack(base uint64) benchTrack {
	return benchTrack{base: base, high: base}
}

// add accounts for one delivered offset.
func (t *benchTrack) add(off uint64) {
	if off <= t.base {
		t.dup++
		return
	}
	i := off - t.base - 1
	w := i >> 6
	if w >= uint64(len(t.bits)) {
		if w >= benchMaxTrackWords {
			t.jump++
			return
		}
		t.grow(int(w) + 1)
	}
	m := uint64(1) << (i & 63)
	if t.bits[w]&m != 0 {
		t.dup++
		return
	}
	t.bits[w] |= m
	t.distinct++
	if off < t.high {
		t.reorder++
	} else {
		t.high = off
	}
}

func (t *benchTrack) grow(words int) {
	n := max(words, 2*len(t.bits), 64)
	nb := make([]uint64, n)
	copy(nb, t.bits)
	t.bits = nb
}

// lost returns how many offsets in (base, head] were never received.
func (t *benchTrack) lost(head uint64) int64 {
	if head <= t.base {
		return 0
	}
	want := head - t.base
	var have uint64
	full := want >> 6
	for w := uint64(0); w < full && w < uint64(len(t.bits)); w++ {
		have += uint64(bits.OnesCount64(t.bits[w]))
	}
	if rest := want & 63; rest != 0 && full < uint64(len(t.bits)) {
		have += uint64(bits.OnesCount64(t.bits[full] & (uint64(1)<<rest - 1)))
	}
	return int64(want - have)
}

// received reports whether off was received.
func (t *benchTrack) received(off uint64) bool {
	if off <= t.base {
		return true
	}
	i := off - t.base - 1
	w := i >> 6
	return w < uint64(len(t.bits)) && t.bits[w]&(uint64(1)<<(i&63)) != 0
}
