package pricing

import (
	"runtime"
	"testing"
	"time"
)

var sinkCost, sinkSavings float64

// BenchmarkPriceCost is the per-event path: the Watcher (the processor's
// Pricer) looks up a model already seen, picks the price in force at the
// event's time and prices the call. It must not allocate.
func BenchmarkPriceCost(b *testing.B) {
	w, err := NewWatcher(Source{}, nil)
	if err != nil {
		b.Fatal(err)
	}
	at := time.Now()
	u := Usage{Prompt: 14200, Completion: 850, CacheRead: 10000, CacheWrite: 2000, CacheWrite1h: 1000, Reasoning: 300}
	cases := []struct{ name, provider, model string }{
		{"exact", "anthropic", "claude-sonnet-4-6"},
		{"litellm_prefix_no_provider", "", "anthropic/claude-sonnet-4-6"},
		{"bedrock_region", "aws.bedrock", "us.anthropic.claude-sonnet-4-6"},
		{"tiers", "openai", "gpt-5.5"},
	}
	for _, c := range cases {
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				var ok bool
				sinkCost, sinkSavings, ok = w.Price(c.provider, c.model, at, u)
				if !ok {
					b.Fatal("no price")
				}
			}
		})
	}
	b.Run("parallel", func(b *testing.B) {
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				w.Price("anthropic", "claude-sonnet-4-6", at, u)
			}
		})
	})
}

// BenchmarkPriceMiss is the first lookup of a name: the resolution the
// memo saves.
func BenchmarkPriceMiss(b *testing.B) {
	tab := Default()
	b.ReportAllocs()
	for b.Loop() {
		tab.resolve("", "bedrock/converse/us.anthropic.claude-sonnet-4-6")
	}
}

// BenchmarkDefaultTable is reading the built-in snapshot: gunzip, decode
// and index LiteLLM's list, once per process.
func BenchmarkDefaultTable(b *testing.B) {
	b.ReportAllocs()
	var kept *Table
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	for b.Loop() {
		data, err := gunzipSnapshot()
		if err != nil {
			b.Fatal(err)
		}
		specs, _, _, err := read(data, FormatLiteLLM)
		if err != nil {
			b.Fatal(err)
		}
		t, errs := build(specs, nil, nil)
		if len(errs) > 0 {
			b.Fatal(errs)
		}
		kept = t
	}
	b.StopTimer()
	runtime.GC()
	runtime.ReadMemStats(&after)
	// What one table keeps (the last one read is still referenced).
	b.ReportMetric(float64(int64(after.HeapAlloc)-int64(before.HeapAlloc))/1e6, "MB-live")
	runtime.KeepAlive(kept)
}

func TestPriceCostZeroAllocs(t *testing.T) {
	w, err := NewWatcher(Source{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	at := time.Now()
	u := Usage{Prompt: 250000, Completion: 10, CacheRead: 1000, Reasoning: 5}
	w.Price("", "anthropic/claude-sonnet-4-5", at, u) // memoised from here on
	allocs := testing.AllocsPerRun(1000, func() {
		sinkCost, sinkSavings, _ = w.Price("", "anthropic/claude-sonnet-4-5", at, u)
	})
	if allocs != 0 {
		t.Errorf("Price allocates %v times per call, want 0", allocs)
	}
}
