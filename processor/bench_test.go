package processor

import (
	"context"
	"fmt"
	"testing"
	"time"

	pb "github.com/agentmeter/agentmeter/proto/agentmeter/v1"
)

// benchEvents returns n LLM events over a few series and conversations, with
// ids unique within the pool.
func benchEvents(n int) []*pb.Event {
	events := make([]*pb.Event, n)
	for i := range events {
		model := fmt.Sprintf("model-%d", i%4)
		events[i] = llm(fmt.Sprintf("evt-%08d", i), fmt.Sprintf("conv-%d", i%100), func(c *pb.LLMCall) { c.RequestModel = model })
	}
	return events
}

// BenchmarkConsume is the per-event aggregation path: dedupe, conversation
// tracking and every instrument of an LLM call, in steady state (series and
// conversations known; the dedupe ring full and recycling).
func BenchmarkConsume(b *testing.B) {
	h := newHarness(b, Config{DedupeWindow: time.Hour, DedupeMaxIDs: 50_000})
	events := benchEvents(100_000) // twice the ids held: a recurring id was forgotten
	res := make([]Result, 1)
	ctx := context.Background()
	for _, ev := range events { // warm up: series, conversations, dedupe at its bound
		h.p.Consume(ctx, []*pb.Event{ev}, h.now, res)
	}
	b.ReportAllocs()
	b.ResetTimer()
	one := make([]*pb.Event, 1)
	for i := 0; b.Loop(); i++ {
		one[0] = events[i%len(events)]
		h.p.Consume(ctx, one, h.now, res)
		if res[0].Outcome != Accepted {
			b.Fatal("unexpected outcome")
		}
	}
}

// BenchmarkConsumeBatch100 is the same path, 100 events a call; ns/op is per batch.
func BenchmarkConsumeBatch100(b *testing.B) {
	h := newHarness(b, Config{DedupeWindow: time.Hour, DedupeMaxIDs: 50_000})
	events := benchEvents(100_000)
	res := make([]Result, 100)
	ctx := context.Background()
	for i := 0; i < len(events); i += 100 {
		h.p.Consume(ctx, events[i:i+100], h.now, res)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		off := (i * 100) % len(events)
		h.p.Consume(ctx, events[off:off+100], h.now, res)
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*100), "ns/event")
}

// BenchmarkUsage is GetUsage's cost at 100 and 10000 tracked conversations:
// the same, since it is one map lookup and a copy.
func BenchmarkUsage(b *testing.B) {
	for _, n := range []int{100, 10_000} {
		b.Run(fmt.Sprintf("tracked=%d", n), func(b *testing.B) {
			h := newHarness(b, Config{MaxTracked: n})
			for i := range n {
				h.consume(llm(fmt.Sprint(i), fmt.Sprintf("conv-%d", i), nil))
			}
			b.ReportAllocs()
			for i := 0; b.Loop(); i++ {
				if _, ok := h.p.Usage(fmt.Sprintf("conv-%d", i%n)); !ok {
					b.Fatal("not tracked")
				}
			}
		})
	}
}
