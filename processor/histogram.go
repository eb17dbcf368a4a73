package processor

import (
	"math"
	"sort"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
)

// histogram is a cumulative explicit-bucket histogram with the OTel SDK's
// semantics: bucket i counts values in (bounds[i-1], bounds[i]], the last
// bucket values above every bound. Guarded by Processor.mu.
type histogram struct {
	bounds   []float64 // shared, never modified
	counts   []uint64  // len(bounds)+1
	count    uint64
	sum      float64
	min, max float64
}

func newHistogram(bounds []float64) *histogram {
	return &histogram{bounds: bounds, counts: make([]uint64, len(bounds)+1), min: math.Inf(1), max: math.Inf(-1)}
}

func (h *histogram) record(v float64) {
	h.counts[sort.SearchFloat64s(h.bounds, v)]++
	h.count++
	h.sum += v
	h.min = math.Min(h.min, v)
	h.max = math.Max(h.max, v)
}

// dataPoint copies h into a data point of value type N (int64 for whole
// numbers such as token counts, float64 otherwise).
func dataPoint[N int64 | float64](h *histogram, attrs attribute.Set, start, now time.Time) metricdata.HistogramDataPoint[N] {
	return metricdata.HistogramDataPoint[N]{
		Attributes:   attrs,
		StartTime:    start,
		Time:         now,
		Count:        h.count,
		Bounds:       h.bounds,
		BucketCounts: append([]uint64(nil), h.counts...),
		Min:          metricdata.NewExtrema(N(h.min)),
		Max:          metricdata.NewExtrema(N(h.max)),
		Sum:          N(h.sum),
	}
}

// point copies the histogram into a float64 data point.
func (h *histogram) point(attrs attribute.Set, start, now time.Time) metricdata.HistogramDataPoint[float64] {
	return dataPoint[float64](h, attrs, start, now)
}

// intPoint copies the histogram into an int64 data point.
func (h *histogram) intPoint(attrs attribute.Set, start, now time.Time) metricdata.HistogramDataPoint[int64] {
	return dataPoint[int64](h, attrs, start, now)
}
