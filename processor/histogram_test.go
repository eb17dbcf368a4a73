package processor

import (
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"
)

func TestHistogramBuckets(t *testing.T) {
	h := newHistogram([]float64{1, 4, 16})
	for _, v := range []float64{0, 1, 1.5, 4, 16, 17, 1e9} {
		h.record(v)
	}
	p := h.point(attribute.NewSet(), time.Time{}, time.Time{})
	want := []uint64{2, 2, 1, 2} // (..1] (1..4] (4..16] (16..)
	for i, c := range p.BucketCounts {
		if c != want[i] {
			t.Fatalf("bucket counts = %v, want %v", p.BucketCounts, want)
		}
	}
	if p.Count != 7 || p.Sum != 1e9+39.5 {
		t.Errorf("count/sum = %d/%v", p.Count, p.Sum)
	}
	if mn, _ := p.Min.Value(); mn != 0 {
		t.Errorf("min = %v", mn)
	}
	if mx, _ := p.Max.Value(); mx != 1e9 {
		t.Errorf("max = %v", mx)
	}
	// The point is a copy: later records do not change it.
	h.record(2)
	if p.BucketCounts[1] != 2 {
		t.Error("data point shares the live bucket counts")
	}
}
