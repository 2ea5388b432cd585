package load

import (
	"math"
	"math/bits"
	"time"
)

// subBits sets the histogram's precision: every power of two is split into 2^subBits
// buckets, so a recorded value is known to within 1/128 (under 0.8%).
const subBits = 7

const subCount = 1 << subBits

// Histogram records latencies in microseconds in log-linear buckets (as HdrHistogram
// does): exact below 128 µs, within 0.8% above. It keeps exact count, sum, min and max.
// Memory is bounded (a few KiB for anything up to hours). The zero value is ready to use;
// it is not safe for concurrent use.
type Histogram struct {
	counts []uint64
	n      uint64
	sum    float64 // µs
	min    int64   // µs
	max    int64   // µs
}

// bucketOf returns the bucket index of v (µs, v >= 0).
func bucketOf(v int64) int {
	if v < subCount {
		return int(v)
	}
	shift := bits.Len64(uint64(v)) - subBits - 1
	return shift*subCount + int(v>>shift)
}

// bucketRange returns the lowest value of bucket i and its width.
func bucketRange(i int) (low, width int64) {
	if i < subCount {
		return int64(i), 1
	}
	shift := i/subCount - 1
	mant := int64(i - shift*subCount)
	return mant << shift, 1 << shift
}

// Record adds one latency. Negative durations count as zero.
func (h *Histogram) Record(d time.Duration) {
	h.RecordMicros(d.Microseconds())
}

// RecordMicros adds one value in microseconds.
func (h *Histogram) RecordMicros(v int64) {
	if v < 0 {
		v = 0
	}
	i := bucketOf(v)
	if i >= len(h.counts) {
		grown := make([]uint64, i+1+subCount)
		copy(grown, h.counts)
		h.counts = grown
	}
	h.counts[i]++
	if h.n == 0 || v < h.min {
		h.min = v
	}
	if v > h.max {
		h.max = v
	}
	h.n++
	h.sum += float64(v)
}

// Merge adds every value recorded in o.
func (h *Histogram) Merge(o *Histogram) {
	if o.n == 0 {
		return
	}
	if len(o.counts) > len(h.counts) {
		grown := make([]uint64, len(o.counts))
		copy(grown, h.counts)
		h.counts = grown
	}
	for i, c := range o.counts {
		h.counts[i] += c
	}
	if h.n == 0 || o.min < h.min {
		h.min = o.min
	}
	h.max = max(h.max, o.max)
	h.n += o.n
	h.sum += o.sum
}

// Count returns how many values were recorded.
func (h *Histogram) Count() uint64 { return h.n }

// Min returns the smallest value recorded (0 when empty).
func (h *Histogram) Min() time.Duration { return micros(h.min) }

// Max returns the largest value recorded (0 when empty).
func (h *Histogram) Max() time.Duration { return micros(h.max) }

// Mean returns the average (0 when empty).
func (h *Histogram) Mean() time.Duration {
	if h.n == 0 {
		return 0
	}
	return time.Duration(h.sum / float64(h.n) * float64(time.Microsecond))
}

// Quantile returns the value below or at which a fraction q (0..1) of the recorded values
// lie: the value of rank ceil(q*n), as the middle of its bucket, clamped to [min, max].
// It returns 0 when nothing was recorded.
func (h *Histogram) Quantile(q float64) time.Duration {
	if h.n == 0 {
		return 0
	}
	rank := uint64(math.Ceil(q * float64(h.n)))
	rank = min(max(rank, 1), h.n)
	var seen uint64
	for i, c := range h.counts {
		seen += c
		if seen >= rank {
			low, width := bucketRange(i)
			v := low + (width-1)/2
			return micros(min(max(v, h.min), h.max))
		}
	}
	return micros(h.max)
}

func micros(v int64) time.Duration { return time.Duration(v) * time.Microsecond }
