package receiver

import (
	"context"
	"fmt"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/agentmeter/agentmeter/processor"
	pb "github.com/agentmeter/agentmeter/proto/agentmeter/v1"
)

func benchEvents(n int) []*pb.Event {
	events := make([]*pb.Event, n)
	for i := range events {
		events[i] = &pb.Event{
			EventId: fmt.Sprintf("evt-%08d", i), ConversationId: fmt.Sprintf("conv-%d", i%100), Agent: "CodeActAgent",
			Payload: &pb.Event_LlmCall{LlmCall: &pb.LLMCall{
				Provider: "anthropic", RequestModel: fmt.Sprintf("claude-%d", i%4), ResponseModel: "claude-sonnet-4-20250514",
				LlmService: "agent", PromptTokens: 12000, CompletionTokens: 800, CacheReadTokens: 9000, CacheWriteTokens: 1000,
				ReasoningTokens: 200, ContextWindow: 200000, LatencySeconds: 3.2, TimeToFirstTokenSeconds: 0.6,
				CostUsd: proto.Float64(0.0123),
			}},
		}
	}
	return events
}

// BenchmarkEventPath is the per-event path: validate one LLM call, then
// de-duplicate and aggregate it into every instrument, in steady state.
func BenchmarkEventPath(b *testing.B) {
	p, err := processor.New(processor.Config{DedupeWindow: time.Hour, DedupeMaxIDs: 50_000, IdleExpiry: time.Hour, MaxTracked: 1000}, processor.Deps{})
	if err != nil {
		b.Fatal(err)
	}
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
	p, err := processor.New(processor.Config{DedupeWindow: time.Hour, DedupeMaxIDs: 50_000, IdleExpiry: time.Hour, MaxTracked: 1000}, processor.Deps{})
	if err != nil {
		b.Fatal(err)
	}
	r, err := New(Config{MaxEventsPerRequest: 10000, MaxRecvMsgSize: 16 << 20, Limits: Limits{MaxFutureSkew: 5 * time.Minute}}, Deps{Consumer: p})
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
		if _, err := r.apply(ctx, req); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		resp, err := r.apply(ctx, reqs[i%len(reqs)])
		if err != nil || resp.Accepted != 100 {
			b.Fatal(err, resp)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*100), "ns/event")
}
