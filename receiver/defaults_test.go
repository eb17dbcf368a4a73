package receiver

import (
	"fmt"
	"testing"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/agentmeter/agentmeter/config"
	pb "github.com/agentmeter/agentmeter/proto/agentmeter/v1"
)

// TestFullBatchFitsDefaults keeps the defaults consistent: a request of
// max_events_per_request LLM calls with every field set at realistic sizes
// fits max_recv_msg_size_mib (the README's "about 2.5 MiB").
func TestFullBatchFitsDefaults(t *testing.T) {
	cfg := config.Default()
	events := make([]*pb.Event, cfg.Receiver.MaxEventsPerRequest)
	for i := range events {
		events[i] = &pb.Event{
			EventId: fmt.Sprintf("5f0c2a9e-1b7d-4e3a-9c1f-%012d", i), Time: timestamppb.Now(),
			ConversationId: "3c9f2a1b-7e4d-4c8a-b2f1-0d9e8c7b6a5f", Agent: "CodeActAgent",
			Payload: &pb.Event_LlmCall{LlmCall: &pb.LLMCall{
				Provider: "anthropic", Operation: "chat", RequestModel: "claude-sonnet-4-20250514",
				ResponseModel: "claude-sonnet-4-20250514", ResponseId: "msg_01XFDUDYJgAACzvnptvVoYEL", LlmService: "agent",
				PromptTokens: 123456, CompletionTokens: 2345, CacheReadTokens: 100000, CacheWriteTokens: 2000,
				CacheWrite_1HTokens: 1000, ReasoningTokens: 500, ContextWindow: 200000,
				LatencySeconds: 12.5, TimeToFirstTokenSeconds: 1.2, CostUsd: proto.Float64(0.1234),
			}},
		}
	}
	size := proto.Size(&pb.RecordRequest{Events: events})
	limit := cfg.Receiver.GRPC.MaxRecvMsgSizeMiB << 20
	t.Logf("%d events: %d bytes (%.2f MiB, %d bytes each); limit %d MiB",
		len(events), size, float64(size)/(1<<20), size/len(events), cfg.Receiver.GRPC.MaxRecvMsgSizeMiB)
	if size > limit {
		t.Errorf("a full batch is %d bytes, over receiver.grpc.max_recv_msg_size_mib (%d bytes)", size, limit)
	}
}
