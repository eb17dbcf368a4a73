package processor

import (
	"context"
	"fmt"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"go.opentelemetry.io/otel/metric"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/exemplar"

	"github.com/agentmeter/agentmeter/catalog"
	"github.com/agentmeter/agentmeter/pricing"
	pb "github.com/agentmeter/agentmeter/proto/agentmeter/v1"
	"github.com/agentmeter/agentmeter/storage"
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

// BenchmarkSDKHistograms is the alternative this package does not take: the
// five histogram measurements of one LLM call recorded on synchronous
// OpenTelemetry SDK instruments, with attribute sets built once and cached.
// Compare its ns/op with BenchmarkConsume, which does all of an event's work.
func BenchmarkSDKHistograms(b *testing.B) {
	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader), sdkmetric.WithExemplarFilter(exemplar.AlwaysOffFilter))
	b.Cleanup(func() { _ = mp.Shutdown(context.Background()) })
	m := mp.Meter(catalog.ScopeName)
	tokens, _ := m.Int64Histogram(catalog.TokenUsage.Name, metric.WithExplicitBucketBoundaries(catalog.TokenBuckets...))
	duration, _ := m.Float64Histogram(catalog.OperationDuration.Name, metric.WithExplicitBucketBoundaries(catalog.DurationBuckets...))
	ttft, _ := m.Float64Histogram(catalog.TimeToFirstChunk.Name, metric.WithExplicitBucketBoundaries(catalog.DurationBuckets...))
	ctxUtil, _ := m.Float64Histogram(catalog.ContextUtilization.Name, metric.WithExplicitBucketBoundaries(catalog.RatioBuckets...))
	s := newLLMSeries(
		catalog.AttrOperationName.String("chat"), catalog.AttrProviderName.String("anthropic"),
		catalog.AttrRequestModel.String("claude-sonnet-4"), catalog.AttrResponseModel.String("claude-sonnet-4-20250514"),
		catalog.AttrAgentName.String("CodeActAgent"),
	)
	common := []metric.RecordOption{metric.WithAttributeSet(s.attrs)}
	in := []metric.RecordOption{metric.WithAttributeSet(s.tokenSets[tokInput])}
	out := []metric.RecordOption{metric.WithAttributeSet(s.tokenSets[tokOutput])}
	ctx := context.Background()
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		tokens.Record(ctx, int64(1000+i%100), in...)
		tokens.Record(ctx, int64(200+i%10), out...)
		duration.Record(ctx, 2.5, common...)
		ttft.Record(ctx, 0.4, common...)
		ctxUtil.Record(ctx, 0.005, common...)
	}
}

// BenchmarkConsumeDurable is the per-event path with storage: dedupe against
// memory and disk, one write of the batch and its ids, then the same
// aggregation, 100 events a call with new ids (ns/op is per batch). The sync
// variant waits for fsync; with 8 concurrent callers, as concurrent
// requests do, their batches share it (group commit). The priced variant
// has the collector's pricer (the built-in price table), which prices
// every call (its cache savings) and stores the prices with the batch.
func BenchmarkConsumeDurable(b *testing.B) {
	for _, tc := range []struct {
		name    string
		noSync  bool
		callers int
		priced  bool
	}{{"nosync", true, 1, false}, {"sync", false, 1, false}, {"sync/callers=8", false, 8, false},
		{"sync/callers=8/priced", false, 8, true}} {
		b.Run(tc.name, func(b *testing.B) {
			s, err := storage.Open(storage.Config{Directory: b.TempDir(), NoSync: tc.noSync}, nil)
			if err != nil {
				b.Fatal(err)
			}
			defer s.Close()
			deps := Deps{Store: s}
			if tc.priced {
				w, err := pricing.NewWatcher(pricing.Source{}, nil)
				if err != nil {
					b.Fatal(err)
				}
				deps.Pricer = w
			}
			p, err := New(Config{DedupeWindow: time.Hour, DedupeMaxIDs: 100_000, MaxTracked: 1000, IdleExpiry: time.Hour},
				deps)
			if err != nil {
				b.Fatal(err)
			}
			// Started, as in the collector: snapshots write the ids.
			if err := p.Start(context.Background()); err != nil {
				b.Fatal(err)
			}
			defer func() {
				if err := p.Shutdown(context.Background()); err != nil {
					b.Error(err)
				}
			}()
			var next atomic.Int64
			b.ReportAllocs()
			b.SetParallelism(tc.callers)
			b.RunParallel(func(loop *testing.PB) {
				events := benchEvents(100) // this caller's own; only ids change
				if tc.priced {
					for _, ev := range events { // a model of the built-in table
						ev.GetLlmCall().ResponseModel = "claude-sonnet-4-6"
					}
				}
				res := make([]Result, 100)
				id := make([]byte, 0, 32)
				for loop.Next() {
					n := next.Add(1)
					for i, ev := range events {
						// A new id per event (the one allocation the
						// benchmark itself makes per event).
						id = strconv.AppendInt(append(id[:0], 'd'), n*100+int64(i), 10)
						ev.EventId = string(id)
					}
					if err := p.Consume(context.Background(), events, time.Now(), res); err != nil {
						b.Fatal(err)
					}
				}
			})
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*100), "ns/event")
		})
	}
}
