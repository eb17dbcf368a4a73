package receiver_test

import (
	"context"
	"fmt"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/proto"

	"github.com/agentmeter/agentmeter/grpcserver"
	"github.com/agentmeter/agentmeter/processor"
	pb "github.com/agentmeter/agentmeter/proto/agentmeter/v1"
	"github.com/agentmeter/agentmeter/receiver"
)

// Example shows what an agent integration does: open one RecordStream to
// the sidecar, send batches of events, and read one response per batch.
// Here the sidecar's receiver runs in-process on a free port.
func Example() {
	proc, _ := processor.New(processor.Config{DedupeWindow: time.Minute, DedupeMaxIDs: 1000, IdleExpiry: time.Hour, MaxTracked: 100}, processor.Deps{})
	srv, _ := grpcserver.New(grpcserver.Config{
		Endpoint: "127.0.0.1:0", MaxRecvMsgSize: 4 << 20, MaxConcurrentStreams: 16, MaxConnections: 16,
		MaxInflightRPCs: 32, ReceiveTimeout: time.Minute, MaxConnectionIdle: 5 * time.Minute, HandshakeTimeout: 10 * time.Second,
	}, grpcserver.Deps{})
	recv, _ := receiver.New(receiver.Config{
		MaxEventsPerRequest: 10000, MaxInflightBytes: 64 << 20,
		Limits: receiver.Limits{MaxFutureSkew: 5 * time.Minute},
	}, receiver.Deps{Consumer: proc, Draining: srv.Draining()})
	recv.Register(srv)
	_ = srv.Start(context.Background())
	defer func() { _ = srv.Shutdown(context.Background()) }()

	// The agent's side.
	conn, err := grpc.NewClient(srv.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		fmt.Println(err)
		return
	}
	defer conn.Close()
	stream, err := pb.NewIngestServiceClient(conn).RecordStream(context.Background())
	if err != nil {
		fmt.Println(err)
		return
	}
	call := func(id string, prompt int64) *pb.Event {
		return &pb.Event{EventId: id, ConversationId: "conv-1", Agent: "CodeActAgent",
			Payload: &pb.Event_LlmCall{LlmCall: &pb.LLMCall{
				Provider: "anthropic", RequestModel: "claude-sonnet-4-20250514", LlmService: "agent",
				PromptTokens: prompt, CompletionTokens: 800, CacheReadTokens: 9000,
				ContextWindow: 200000, LatencySeconds: 3.2, CostUsd: proto.Float64(0.0237),
			}}}
	}
	batch := &pb.RecordRequest{Events: []*pb.Event{
		call("evt-1", 12000),
		call("evt-1", 12000), // a retry: counted as a duplicate
		call("evt-2", -5),    // invalid: rejected, the rest still applied
	}}
	if err := stream.Send(batch); err != nil {
		fmt.Println(err)
		return
	}
	resp, err := stream.Recv()
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Printf("accepted %d, duplicates %d\n", resp.Accepted, resp.Duplicates)
	for _, r := range resp.Rejected {
		fmt.Printf("rejected #%d %s: %s %s\n", r.Index, r.EventId, r.Field, r.Reason)
	}
	_ = stream.CloseSend()
	// Output:
	// accepted 1, duplicates 1
	// rejected #2 evt-2: llm_call.prompt_tokens must be >= 0, got -5
}
