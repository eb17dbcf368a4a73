package pricing

import "testing"

var sinkCost, sinkSavings float64

// BenchmarkPriceCost is the per-event path: look up a model already seen
// and price a call. It must not allocate.
func BenchmarkPriceCost(b *testing.B) {
	tab := Default()
	u := Usage{Prompt: 14200, Completion: 850, CacheRead: 10000, CacheWrite: 2000, CacheWrite1h: 1000}
	cases := []struct{ name, provider, model string }{
		{"exact", "anthropic", "claude-sonnet-4-20250514"},
		{"litellm_prefix_no_provider", "", "anthropic/claude-sonnet-4-20250514"},
		{"bedrock_region", "aws.bedrock", "us.anthropic.claude-sonnet-4-20250514-v1:0"},
	}
	for _, c := range cases {
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				p, ok := tab.Price(c.provider, c.model)
				if !ok {
					b.Fatal("no price")
				}
				sinkCost, sinkSavings = p.Cost(u)
			}
		})
	}
	b.Run("parallel", func(b *testing.B) {
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				p, _ := tab.Price("anthropic", "claude-sonnet-4-20250514")
				p.Cost(u)
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
		tab.resolve("", "bedrock/converse/us.anthropic.claude-sonnet-4-20250514-v1:0")
	}
}

func TestPriceCostZeroAllocs(t *testing.T) {
	tab := Default()
	u := Usage{Prompt: 250000, Completion: 10, CacheRead: 1000}
	tab.Price("", "anthropic/claude-sonnet-4-5") // memoised from here on
	allocs := testing.AllocsPerRun(1000, func() {
		p, _ := tab.Price("", "anthropic/claude-sonnet-4-5")
		sinkCost, sinkSavings = p.Cost(u)
	})
	if allocs != 0 {
		t.Errorf("Price+Cost allocates %v times per call, want 0", allocs)
	}
}
