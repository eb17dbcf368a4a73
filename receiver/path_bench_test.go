package receiver

import (
	"context"
	"fmt"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/agentmeter/agentmeter/pricing"
	"github.com/agentmeter/agentmeter/processor"
	pb "github.com/agentmeter/agentmeter/proto/agentmeter/v1"
)

// benchEvents returns n LLM calls over 4 models and 100 conversations; every
// other call has no cost, so the price table prices it.
func benchEvents(n int) []*pb.Event {
	models := []struct{ provider, model string }{
		{"anthropic", "claude-sonnet-4-20250514"}, {"anthropic", "claude-haiku-4-5"},
		{"openai", "gpt-4o"}, {"openai", "gpt-4.1-mini"},
	}
	events := make([]*pb.Event, n)
	for i := range events {
		m := models[i%len(models)]
		c := &pb.LLMCall{
			Provider: m.provider, RequestModel: m.model, ResponseModel: m.model,
			LlmService: "agent", PromptTokens: 12000, CompletionTokens: 800, CacheReadTokens: 9000, CacheWriteTokens: 1000,
			ReasoningTokens: 200, ContextWindow: 200000, LatencySeconds: 3.2, TimeToFirstTokenSeconds: 0.6,
		}
		if i%2 == 0 {
			c.CostUsd = proto.Float64(0.0123)
		}
		events[i] = &pb.Event{
			EventId: fmt.Sprintf("evt-%08d", i), ConversationId: fmt.Sprintf("conv-%d", i%100), Agent: "CodeActAgent",
			Payload: &pb.Event_LlmCall{LlmCall: c},
		}
	}
	return events
}

// benchProcessor is the processor as the collector builds it: dedupe, the
// ledger, and the default price table.
func benchProcessor(b *testing.B) *processor.Processor {
	prices, err := pricing.NewWatcher(pricing.Source{}, nil)
	if err != nil {
		b.Fatal(err)
	}
	p, err := processor.New(processor.Config{DedupeWindow: time.Hour, DedupeMaxIDs: 50_000, IdleExpiry: time.Hour, MaxTracked: 1000,
		ClosedRetention: time.Minute, DefaultMaxBudgetUSD: proto.Float64(1e6)},
		processor.Deps{Pricer: prices})
	if err != nil {
		b.Fatal(err)
	}
	return p
}

// BenchmarkEventPath is the per-event path: validate one LLM call, then
// de-duplicate it, price it (every other call), and aggregate it into every
// instrument and its conversation's ledger entry, in steady state (series
// and conversations known).
func BenchmarkEventPath(b *testing.B) {
	p := benchProcessor(b)
	events := benchEvents(100_000) // twice the ids held: a recurring id was forgotten
	ctx, now := context.Background(), time.Now()
	lim := Limits{MaxFutureSkew: 5 * time.Minute}
	one, res := make([]*pb.Event, 1), make([]processor.Result, 1)
	for _, ev := range events {
		one[0] = ev
		p.Consume(ctx, one, now, res)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		one[0] = events[i%len(events)]
		if _, reason, ok := Validate(one[0], now, lim); !ok {
			b.Fatal(reason)
		}
		p.Consume(ctx, one, now, res)
		if res[0].Outcome != processor.Accepted {
			b.Fatal("not accepted")
		}
	}
}

// BenchmarkRecordBatch100 is one whole Record call of 100 events without the
// transport: validation, processing, the response. ns/event and allocs are
// per batch / 100.
func BenchmarkRecordBatch100(b *testing.B) {
	p := benchProcessor(b)
	r, err := New(Config{MaxEventsPerRequest: 10000, MaxInflightBytes: 64 << 20, Limits: Limits{MaxFutureSkew: 5 * time.Minute}}, Deps{Consumer: p})
	if err != nil {
		b.Fatal(err)
	}
	events := benchEvents(100_000)
	reqs := make([]*pb.RecordRequest, len(events)/100)
	for i := range reqs {
		reqs[i] = &pb.RecordRequest{Events: events[i*100 : (i+1)*100]}
	}
	ctx := context.Background()
	for _, req := range reqs {
		if _, err := r.apply(ctx, req, nil); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		resp, err := r.apply(ctx, reqs[i%len(reqs)], nil)
		if err != nil || resp.Accepted != 100 {
			b.Fatal(err, resp)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*100), "ns/event")
}
