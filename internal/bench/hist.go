package bench

// The latency histogram of `herald bench`: log-linear buckets over
// nanoseconds, fixed size, so recording a value is an index computation and
// an increment — no allocation on the hot path. Each subscriber owns one;
// they are merged once the subscribers have stopped.

import (
	"math"
	"math/bits"
	"sync/atomic"
	"time"
)

const (
	// benchHistUnitShift: values are counted in units of 2^7 ns = 128 ns,
	// far below any delivery latency worth telling apart.
	benchHistUnitShift = 7
	// benchHistSubBits: 32 linear sub-buckets per power of two, so a
	// bucket is at most 1/32 (3.1 %) of its value wide.
	benchHistSubBits = 5
	benchHistSub     = 1 << benchHistSubBits
	// benchHistMax is the largest value told apart (60 s); anything above
	// lands in the last bucket (the exact maximum is kept separately).
	benchHistMax = 60 * time.Second
)

// benchHistBuckets is the number of buckets needed up to benchHistMax.
var benchHistBuckets = benchBucketOf(int64(benchHistMax)) + 1

// benchHist is a log-linear histogram of durations in nanoseconds: below
// 64 units (8.2 µs) one bucket per 128 ns, above that 32 buckets per power
// of two. It is not safe for concurrent use.
type benchHist struct {
	counts []uint64
	n      uint64
	sum    float64 // ns, for the mean
	min    int64
	max    int64
}

func newBenchHist() *benchHist {
	return &benchHist{counts: make([]uint64, benchHistBuckets), min: math.MaxInt64}
}

// benchBucketOf returns the bucket of v nanoseconds (negative counts as 0).
func benchBucketOf(v int64) int {
	if v < 0 {
		v = 0
	}
	u := uint64(v) >> benchHistUnitShift
	e := bits.Len64(u) - (benchHistSubBits + 1)
	if e < 0 {
		e = 0
	}
	return e*benchHistSub + int(u>>uint(e))
}

// benchBucketBounds returns the lowest value of bucket i and its width,
// in nanoseconds.
func benchBucketBounds(i int) (low, width int64) {
	if i < 2*benchHistSub {
		return int64(i) << benchHistUnitShift, 1 << benchHistUnitShift
	}
	e := i/benchHistSub - 1
	m := int64(i - e*benchHistSub)
	return (m << uint(e)) << benchHistUnitShift, (int64(1) << uint(e)) << benchHistUnitShift
}

// record counts one value of v nanoseconds.
func (h *benchHist) record(v int64) {
	if v < 0 {
		v = 0 // clocks of one machine: only rounding can make it negative
	}
	i := benchBucketOf(v)
	if i >= len(h.counts) {
		i = len(h.counts) - 1
	}
	h.counts[i]++
	h.n++
	h.sum += float64(v)
	if v > h.max {
		h.max = v
	}
	if v < h.min {
		h.min = v
	}
}

// merge adds o's counts to h.
func (h *benchHist) merge(o *benchHist) {
	if o == nil || o.n == 0 {
		return
	}
	for i, c := range o.counts {
		h.counts[i] += c
	}
	h.n += o.n
	h.sum += o.sum
	h.max = max(h.max, o.max)
	h.min = min(h.min, o.min)
}

// quantile returns the value at quantile q (0 < q ≤ 1): the upper edge of
// the bucket that holds the ceil(q·n)-th smallest value, capped at the
// exact maximum, so it never reads lower than the truth by more than the
// bucket width and never above the largest value seen. 0 when empty.
func (h *benchHist) quantile(q float64) int64 {
	if h.n == 0 {
		return 0
	}
	rank := uint64(math.Ceil(q * float64(h.n)))
	if rank < 1 {
		rank = 1
	}
	var seen uint64
	for i, c := range h.counts {
		seen += c
		if seen >= rank {
			if i == len(h.counts)-1 {
				return h.max // the overflow bucket
			}
			low, width := benchBucketBounds(i)
			v := low + width - 1
			v = min(v, h.max)
			return max(v, h.min)
		}
	}
	return h.max
}

func (h *benchHist) mean() float64 {
	if h.n == 0 {
		return 0
	}
	return h.sum / float64(h.n)
}

// benchLatency is a histogram's summary in the report, in microseconds.
type benchLatency struct {
	Count uint64  `json:"count"`
	P50   float64 `json:"p50_us"`
	P90   float64 `json:"p90_us"`
	P99   float64 `json:"p99_us"`
	P999  float64 `json:"p999_us"`
	Max   float64 `json:"max_us"`
	Mean  float64 `json:"mean_us"`
}

func (h *benchHist) summary() benchLatency {
	us := func(ns int64) float64 { return math.Round(float64(ns)/100) / 10 }
	if h.n == 0 {
		return benchLatency{}
	}
	return benchLatency{
		Count: h.n,
		P50:   us(h.quantile(0.50)),
		P90:   us(h.quantile(0.90)),
		P99:   us(h.quantile(0.99)),
		P999:  us(h.quantile(0.999)),
		Max:   us(h.max),
		Mean:  us(int64(h.mean())),
	}
}

// benchWindowHist counts latencies from many goroutines at once — a
// bucket is an atomic counter — for quantiles per interval of a long run
// (soak): take returns what was counted since the previous take. Only
// the sampler calls take.
type benchWindowHist struct {
	counts []atomic.Uint64
	max    atomic.Int64
	prev   []uint64 // the counts at the previous take
}

func newBenchWindowHist() *benchWindowHist {
	return &benchWindowHist{counts: make([]atomic.Uint64, benchHistBuckets), prev: make([]uint64, benchHistBuckets)}
}

// record counts one value of v nanoseconds.
func (w *benchWindowHist) record(v int64) {
	v = max(v, 0)
	w.counts[min(benchBucketOf(v), len(w.counts)-1)].Add(1)
	for m := w.max.Load(); v > m && !w.max.CompareAndSwap(m, v); m = w.max.Load() {
	}
}

// take returns the values counted since the previous take as a
// histogram. A value counted while take runs lands in this window or the
// next, never in both or neither; the largest value is exact but for
// such a value, and never below the highest bucket counted.
func (w *benchWindowHist) take() *benchHist {
	h := newBenchHist()
	h.min = 0
	top := -1
	for i := range w.counts {
		c := w.counts[i].Load()
		d := c - w.prev[i]
		w.prev[i] = c
		if d == 0 {
			continue
		}
		low, width := benchBucketBounds(i)
		h.counts[i] = d
		h.n += d
		h.sum += float64(d) * float64(low+width/2)
		top = i
	}
	h.max = w.max.Swap(0)
	if top >= 0 {
		if low, _ := benchBucketBounds(top); h.max < low {
			h.max = low
		}
	}
	return h
}
