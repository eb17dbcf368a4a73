package client_test

import (
	"context"
	"testing"
	"time"

	"github.com/agentmeter/agentmeter/client"
	"github.com/agentmeter/agentmeter/grpcserver"
	"github.com/agentmeter/agentmeter/processor"
	pb "github.com/agentmeter/agentmeter/proto/agentmeter/v1"
	"github.com/agentmeter/agentmeter/receiver"
)

// TestIdleStreamClosedBySidecarLosesNothing: the sidecar closes a
// RecordStream idle for receiver.grpc.receive_timeout (UNAVAILABLE); the
// client's next batch goes on a new stream, nothing given up.
func TestIdleStreamClosedBySidecarLosesNothing(t *testing.T) {
	proc, err := processor.New(processor.Config{DedupeWindow: time.Minute, DedupeMaxIDs: 1000, IdleExpiry: time.Hour, MaxTracked: 100}, processor.Deps{})
	if err != nil {
		t.Fatal(err)
	}
	srv, err := grpcserver.New(grpcserver.Config{
		Endpoint: "127.0.0.1:0", MaxRecvMsgSize: 4 << 20, MaxConcurrentStreams: 16, MaxConnections: 16,
		MaxInflightRPCs: 32, ReceiveTimeout: 200 * time.Millisecond, MaxConnectionIdle: time.Minute, HandshakeTimeout: 5 * time.Second,
	}, grpcserver.Deps{})
	if err != nil {
		t.Fatal(err)
	}
	recv, err := receiver.New(receiver.Config{MaxEventsPerRequest: 1000, MaxInflightBytes: 16 << 20,
		Limits: receiver.Limits{MaxFutureSkew: time.Minute}}, receiver.Deps{Consumer: proc, Draining: srv.Draining()})
	if err != nil {
		t.Fatal(err)
	}
	recv.Register(srv)
	if err := srv.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = srv.Shutdown(context.Background()) }()

	c, err := client.New(srv.Addr().String(), client.WithFlushInterval(10*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ev := func() *pb.Event {
		return &pb.Event{ConversationId: "c", Payload: &pb.Event_LlmCall{LlmCall: &pb.LLMCall{RequestModel: "gpt-4o", PromptTokens: 1}}}
	}
	for range 3 {
		c.Record(ev())
		if err := c.Flush(ctx); err != nil {
			t.Fatal(err)
		}
		// Longer than receive_timeout and the grace after it: the
		// sidecar has closed the stream.
		time.Sleep(200*time.Millisecond + grpcserver.ReceiveGrace + 100*time.Millisecond)
	}
	if err := c.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if s := c.Stats(); s.Accepted != 3 || s.GivenUp != 0 {
		t.Errorf("stats = %+v, want 3 accepted, none given up", s)
	}
}
