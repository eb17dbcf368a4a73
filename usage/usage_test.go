package usage

import (
	"context"
	"errors"
	"io"
	"net"
	"testing"
	"time"

	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/test/bufconn"
	"google.golang.org/protobuf/proto"

	"github.com/agentmeter/agentmeter/processor"
	pb "github.com/agentmeter/agentmeter/proto/agentmeter/v1"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

type fixture struct {
	proc   *processor.Processor
	client pb.UsageServiceClient
	done   chan struct{}
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	proc, err := processor.New(processor.Config{IdleExpiry: time.Hour, MaxTracked: 100, ClosedRetention: time.Minute}, processor.Deps{})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	srv := grpc.NewServer()
	pb.RegisterUsageServiceServer(srv, New(proc, 10*time.Millisecond, done))
	lis := bufconn.Listen(1 << 20)
	go func() { _ = srv.Serve(lis) }()
	conn, err := grpc.NewClient("passthrough:///bufconn",
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return lis.DialContext(ctx) }),
		grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = conn.Close()
		srv.Stop()
	})
	return &fixture{proc: proc, client: pb.NewUsageServiceClient(conn), done: done}
}

func (f *fixture) send(events ...*pb.Event) {
	res := make([]processor.Result, len(events))
	f.proc.Consume(context.Background(), events, time.Now(), res)
}

func call(id string, cost float64) *pb.Event {
	return &pb.Event{EventId: id, ConversationId: "conv", Agent: "CodeActAgent", Payload: &pb.Event_LlmCall{LlmCall: &pb.LLMCall{
		Provider: "openai", RequestModel: "gpt-4o", PromptTokens: 100, CompletionTokens: 10, LatencySeconds: 1, CostUsd: proto.Float64(cost),
	}}}
}

func TestGetUsage(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	_, err := f.client.GetUsage(ctx, &pb.GetUsageRequest{ConversationId: "conv"})
	if status.Code(err) != codes.NotFound {
		t.Fatalf("unknown conversation: %v, want NotFound", err)
	}
	_, err = f.client.GetUsage(ctx, &pb.GetUsageRequest{})
	if status.Code(err) != codes.InvalidArgument {
		t.Fatalf("empty id: %v, want InvalidArgument", err)
	}
	f.send(call("1", 0.25), call("2", 0.5))
	resp, err := f.client.GetUsage(ctx, &pb.GetUsageRequest{ConversationId: "conv"})
	if err != nil {
		t.Fatal(err)
	}
	if u := resp.Usage; u.CostUsd != 0.75 || u.Calls != 2 || u.Tokens.Input != 200 {
		t.Errorf("usage = %v", u)
	}
}

func TestListUsageErrors(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	if _, err := f.client.ListUsage(ctx, &pb.ListUsageRequest{State: 99}); status.Code(err) != codes.InvalidArgument {
		t.Errorf("unknown state: %v", err)
	}
	if _, err := f.client.ListUsage(ctx, &pb.ListUsageRequest{PageToken: "%%%"}); status.Code(err) != codes.InvalidArgument {
		t.Errorf("bad token: %v", err)
	}
	f.send(call("1", 1))
	resp, err := f.client.ListUsage(ctx, &pb.ListUsageRequest{PageSize: 5000})
	if err != nil || len(resp.Usage) != 1 || resp.NextPageToken != "" {
		t.Errorf("list = %v, %v", resp, err)
	}
}

func TestWatchUsage(t *testing.T) {
	f := newFixture(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	stream, err := f.client.WatchUsage(ctx, &pb.WatchUsageRequest{ConversationId: "conv"})
	if err == nil {
		_, err = stream.Recv()
	}
	if status.Code(err) != codes.NotFound {
		t.Fatalf("watching an unknown conversation: %v, want NotFound", err)
	}
	f.send(call("1", 0.1))
	stream, err = f.client.WatchUsage(ctx, &pb.WatchUsageRequest{ConversationId: "conv"})
	if err != nil {
		t.Fatal(err)
	}
	first, err := stream.Recv()
	if err != nil || first.Usage.Calls != 1 {
		t.Fatalf("first update %v, %v", first, err)
	}
	f.send(call("2", 0.1), call("3", 0.1))
	// Poll updates until the cost reaches both calls (they may coalesce).
	for {
		upd, err := stream.Recv()
		if err != nil {
			t.Fatal(err)
		}
		if upd.Usage.Calls == 3 {
			break
		}
	}
	f.send(&pb.Event{EventId: "4", ConversationId: "conv", Payload: &pb.Event_Conversation{Conversation: &pb.ConversationEvent{
		Kind: &pb.ConversationEvent_Closed{Closed: &pb.ConversationClosed{Reason: pb.CloseReason_CLOSE_REASON_FINISHED}}}}})
	for {
		upd, err := stream.Recv()
		if err != nil {
			t.Fatalf("stream ended with %v before the closed update", err)
		}
		if upd.Usage.Closed {
			break
		}
	}
	if _, err := stream.Recv(); !errors.Is(err, io.EOF) {
		t.Fatalf("after closed: %v, want a clean end", err)
	}
}

func TestWatchUsageShutdown(t *testing.T) {
	f := newFixture(t)
	f.send(call("1", 0.1))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	stream, err := f.client.WatchUsage(ctx, &pb.WatchUsageRequest{ConversationId: "conv"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := stream.Recv(); err != nil {
		t.Fatal(err)
	}
	close(f.done)
	if _, err := stream.Recv(); status.Code(err) != codes.Unavailable {
		t.Fatalf("after shutdown: %v, want Unavailable", err)
	}
}
