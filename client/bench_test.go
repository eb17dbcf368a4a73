package client

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/agentmeter/agentmeter/internal/ingesttest"
	pb "github.com/agentmeter/agentmeter/proto/agentmeter/v1"
)

func benchEvent() *pb.Event {
	return &pb.Event{ConversationId: "c1", Payload: &pb.Event_LlmCall{LlmCall: &pb.LLMCall{
		Provider: "anthropic", RequestModel: "claude-sonnet-4-20250514", PromptTokens: 1000, CompletionTokens: 100,
	}}}
}

// benchRecord measures what Record costs the agent's goroutine: the sidecar
// is down (the sender waits in its backoff), and the queue is emptied,
// outside the timer, before it fills, so every Record queues.
func benchRecord(b *testing.B, withID bool) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	const queue = 1 << 14
	c, err := New(addr, WithQueueSize(queue), WithBackoff(time.Hour, time.Hour), WithGiveUpAfter(2*time.Hour))
	if err != nil {
		b.Fatal(err)
	}
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Millisecond)
		defer cancel()
		_ = c.Close(ctx)
	}()
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		if i%queue == queue-1 {
			b.StopTimer()
			for drained := false; !drained; {
				select {
				case <-c.queue:
				default:
					drained = true
				}
			}
			b.StartTimer()
		}
		ev := benchEvent()
		if withID {
			ev.EventId = "id"
		}
		if !c.Record(ev) {
			b.Fatal("Record = false: the queue filled")
		}
	}
}

// BenchmarkRecord records events without an id (Record makes a UUIDv7).
func BenchmarkRecord(b *testing.B) { benchRecord(b, false) }

// BenchmarkRecordWithID records events that carry their id.
func BenchmarkRecordWithID(b *testing.B) { benchRecord(b, true) }

// BenchmarkRecordLive records as fast as possible against a sidecar that
// answers at once, on the same CPUs as the sender: Record never waits, it
// drops when the sender falls behind (dropped/op).
func BenchmarkRecordLive(b *testing.B) {
	addr := ingesttest.Serve(b, func(req *pb.RecordRequest) *pb.RecordResponse {
		return &pb.RecordResponse{Accepted: uint32(len(req.GetEvents()))}
	})
	c, err := New(addr, WithQueueSize(1<<16))
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		c.Record(benchEvent())
	}
	b.StopTimer()
	_ = c.Close(context.Background())
	st := c.Stats()
	b.ReportMetric(float64(st.Dropped)/float64(b.N), "dropped/op")
}
