package load

import (
	"math"
	"math/rand/v2"
	"slices"
	"testing"
	"time"
)

func TestBucketsCoverEveryValue(t *testing.T) {
	// Every value falls in the bucket whose range holds it, and buckets are contiguous.
	prevEnd := int64(0)
	for i := 0; i < 40*subCount; i++ {
		low, width := bucketRange(i)
		if low != prevEnd {
			t.Fatalf("bucket %d starts at %d, want %d (the end of bucket %d)", i, low, prevEnd, i-1)
		}
		for _, v := range []int64{low, low + width/2, low + width - 1} {
			if got := bucketOf(v); got != i {
				t.Fatalf("bucketOf(%d) = %d, want %d", v, got, i)
			}
		}
		if i >= subCount && float64(width)/float64(low) > 1.0/subCount+1e-12 {
			t.Fatalf("bucket %d: width %d is more than 1/%d of %d", i, width, subCount, low)
		}
		prevEnd = low + width
	}
}

func TestQuantilesMatchExact(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	var h Histogram
	values := make([]int64, 20000)
	for i := range values {
		// Log-normal latencies around 2 ms with a long tail, in µs.
		values[i] = int64(math.Exp(rng.NormFloat64()*0.8 + math.Log(2000)))
		h.RecordMicros(values[i])
	}
	slices.Sort(values)
	for _, q := range []float64{0, 0.5, 0.9, 0.99, 0.999, 1} {
		rank := max(int(math.Ceil(q*float64(len(values)))), 1)
		exact := values[rank-1]
		got := h.Quantile(q).Microseconds()
		if diff := math.Abs(float64(got - exact)); diff > float64(exact)/subCount+1 {
			t.Errorf("Quantile(%v) = %d µs, exact %d µs: off by more than 1/%d", q, got, exact, subCount)
		}
	}
	if got, want := h.Min().Microseconds(), values[0]; got != want {
		t.Errorf("Min = %d, want %d", got, want)
	}
	if got, want := h.Max().Microseconds(), values[len(values)-1]; got != want {
		t.Errorf("Max = %d, want %d", got, want)
	}
	if h.Count() != uint64(len(values)) {
		t.Errorf("Count = %d, want %d", h.Count(), len(values))
	}
}

func TestSmallValuesAreExact(t *testing.T) {
	var h Histogram
	for v := int64(1); v <= 100; v++ {
		h.RecordMicros(v)
	}
	for _, tc := range []struct {
		q    float64
		want time.Duration
	}{{0.01, 1 * time.Microsecond}, {0.5, 50 * time.Microsecond}, {0.99, 99 * time.Microsecond}, {1, 100 * time.Microsecond}} {
		if got := h.Quantile(tc.q); got != tc.want {
			t.Errorf("Quantile(%v) = %v, want %v", tc.q, got, tc.want)
		}
	}
	if got, want := h.Mean(), 50500*time.Nanosecond; got != want {
		t.Errorf("Mean = %v, want %v", got, want)
	}
}

func TestMergeEqualsRecordingEverything(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	var a, b, all Histogram
	for i := range 5000 {
		v := rng.Int64N(1_000_000)
		all.RecordMicros(v)
		if i%3 == 0 {
			a.RecordMicros(v)
		} else {
			b.RecordMicros(v)
		}
	}
	var merged Histogram
	merged.Merge(&a)
	merged.Merge(&b)
	merged.Merge(&Histogram{})
	for _, q := range []float64{0.1, 0.5, 0.99} {
		if merged.Quantile(q) != all.Quantile(q) {
			t.Errorf("Quantile(%v): merged %v, all %v", q, merged.Quantile(q), all.Quantile(q))
		}
	}
	if merged.Count() != all.Count() || merged.Min() != all.Min() || merged.Max() != all.Max() || merged.Mean() != all.Mean() {
		t.Errorf("merged count/min/max/mean %d/%v/%v/%v, want %d/%v/%v/%v", merged.Count(), merged.Min(), merged.Max(), merged.Mean(),
			all.Count(), all.Min(), all.Max(), all.Mean())
	}
}

func TestEmptyHistogram(t *testing.T) {
	var h Histogram
	if h.Quantile(0.99) != 0 || h.Mean() != 0 || h.Max() != 0 || h.Count() != 0 {
		t.Errorf("empty histogram: got non-zero figures")
	}
	h.Record(-time.Second)
	if h.Max() != 0 || h.Count() != 1 {
		t.Errorf("a negative duration should count as 0")
	}
}
