package client_test

import (
	"context"
	"fmt"
	"time"

	"github.com/agentmeter/agentmeter/client"
	"github.com/agentmeter/agentmeter/grpcserver"
	"github.com/agentmeter/agentmeter/processor"
	pb "github.com/agentmeter/agentmeter/proto/agentmeter/v1"
	"github.com/agentmeter/agentmeter/receiver"
)

// Example is what an agent written in Go adds: one client for the process,
// one Record per event (it never blocks), and Close at exit. Here the
// sidecar's receiver runs in-process on a free port; an agent uses
// client.New("localhost:4320").
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
	c, err := client.New(srv.Addr().String(), client.WithAgent("CodeActAgent"))
	if err != nil {
		fmt.Println(err)
		return
	}
	c.Record(&pb.Event{ConversationId: "conv-1", Payload: &pb.Event_LlmCall{LlmCall: &pb.LLMCall{
		Provider: "anthropic", RequestModel: "claude-sonnet-4-20250514", LlmService: "agent",
		PromptTokens: 12000, CompletionTokens: 800, CacheReadTokens: 9000, LatencySeconds: 3.2,
	}}})
	c.Record(&pb.Event{ConversationId: "conv-1", Payload: &pb.Event_AgentStatus{AgentStatus: &pb.AgentStatus{
		State: pb.AgentState_AGENT_STATE_FINISHED,
	}}})
	c.Record(&pb.Event{ConversationId: "conv-1", Payload: &pb.Event_LlmCall{LlmCall: &pb.LLMCall{
		RequestModel: "gpt-4o", PromptTokens: -1, // invalid: rejected, logged, counted
	}}})

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := c.Close(ctx); err != nil { // sends what is queued
		fmt.Println(err)
	}
	s := c.Stats()
	fmt.Printf("queued %d, accepted %d, rejected %d, pending %d\n", s.Queued, s.Accepted, s.Rejected, s.Pending)
	// Output:
	// queued 3, accepted 2, rejected 1, pending 0
}
