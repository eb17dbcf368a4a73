package client

import (
	"context"
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"go.uber.org/goleak"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/agentmeter/agentmeter/internal/ingesttest"
	pb "github.com/agentmeter/agentmeter/proto/agentmeter/v1"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// fake is a scripted sidecar: it records every request it gets and answers
// through fail (an error to refuse the request with, or nil) and reject
// (the indexes to reject).
type fake struct {
	mu       sync.Mutex
	requests [][]*pb.Event
	seen     map[string]int
	fail     func(call int, req *pb.RecordRequest) error
	reject   func(ev *pb.Event) bool
}

func (f *fake) handle(ctx context.Context, req *pb.RecordRequest) (*pb.RecordResponse, error) {
	f.mu.Lock()
	call := len(f.requests)
	f.requests = append(f.requests, req.GetEvents())
	fail := f.fail
	f.mu.Unlock()
	if fail != nil {
		if err := fail(call, req); err != nil {
			return nil, err
		}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.seen == nil {
		f.seen = make(map[string]int)
	}
	resp := &pb.RecordResponse{}
	for i, ev := range req.GetEvents() {
		switch {
		case f.reject != nil && f.reject(ev):
			resp.Rejected = append(resp.Rejected, &pb.Rejection{Index: uint32(i), EventId: ev.GetEventId(), Field: "llm_call.prompt_tokens", Reason: "must be >= 0"})
		case f.seen[ev.GetEventId()] > 0:
			resp.Duplicates++
		default:
			resp.Accepted++
		}
		f.seen[ev.GetEventId()]++
	}
	return resp, nil
}

func (f *fake) calls() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.requests)
}

func (f *fake) serve(t *testing.T, o ingesttest.Options) string {
	return ingesttest.ServeHandler(t, f.handle, o)
}

func llmEvent(conv string, prompt int64) *pb.Event {
	return &pb.Event{ConversationId: conv, Payload: &pb.Event_LlmCall{LlmCall: &pb.LLMCall{
		Provider: "anthropic", RequestModel: "claude-sonnet-4-20250514", PromptTokens: prompt, CompletionTokens: 10,
	}}}
}

func newClient(t *testing.T, target string, opts ...Option) *Client {
	t.Helper()
	c, err := New(target, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = c.Close(ctx)
	})
	return c
}

func flush(t *testing.T, c *Client) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := c.Flush(ctx); err != nil {
		t.Fatalf("Flush: %v (stats %+v)", err, c.Stats())
	}
}

func wantStats(t *testing.T, c *Client, want Stats) {
	t.Helper()
	if got := c.Stats(); got != want {
		t.Errorf("Stats() = %+v\nwant       %+v", got, want)
	}
}

// eventually polls cond until it holds or the deadline passes.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("still not %s after 10s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestRecordFillsAndBatches(t *testing.T) {
	f := &fake{}
	c := newClient(t, f.serve(t, ingesttest.Options{}), WithMaxBatch(10), WithAgent("CodeActAgent"))
	mine := llmEvent("c1", 5)
	mine.EventId = "my-id"
	mine.Agent = "Other"
	if !c.Record(mine) {
		t.Fatal("Record = false")
	}
	for range 24 {
		if !c.Record(llmEvent("c1", 5)) {
			t.Fatal("Record = false")
		}
	}
	flush(t, c)
	wantStats(t, c, Stats{Queued: 25, Sent: 25, Accepted: 25})
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.seen) != 25 {
		t.Errorf("server saw %d distinct ids, want 25", len(f.seen))
	}
	for _, req := range f.requests {
		if len(req) > 10 {
			t.Errorf("a request carried %d events, more than WithMaxBatch(10)", len(req))
		}
		for _, ev := range req {
			if ev.GetTime() == nil {
				t.Errorf("event %s sent without a time", ev.GetEventId())
			}
			if ev.GetEventId() == "my-id" {
				if ev.GetAgent() != "Other" {
					t.Errorf("agent of an event that had one = %q, want Other", ev.GetAgent())
				}
				continue
			}
			if id, err := uuid.Parse(ev.GetEventId()); err != nil || id.Version() != 7 {
				t.Errorf("filled event id %q is not a UUIDv7 (%v)", ev.GetEventId(), err)
			}
			if ev.GetAgent() != "CodeActAgent" {
				t.Errorf("agent = %q, want the WithAgent default", ev.GetAgent())
			}
		}
	}
}

func TestSendsWithoutFlushWithinInterval(t *testing.T) {
	f := &fake{}
	c := newClient(t, f.serve(t, ingesttest.Options{}), WithFlushInterval(50*time.Millisecond))
	c.Record(llmEvent("c1", 1))
	eventually(t, "sent by the interval", func() bool { return c.Stats().Accepted == 1 })
}

func TestBatchBytesBound(t *testing.T) {
	f := &fake{}
	const bound = 2000
	c := newClient(t, f.serve(t, ingesttest.Options{}), WithMaxBatchBytes(bound))
	for range 50 {
		c.Record(llmEvent(strings.Repeat("c", 200), 1))
	}
	flush(t, c)
	wantStats(t, c, Stats{Queued: 50, Sent: 50, Accepted: 50})
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.requests) < 5 {
		t.Errorf("%d requests for 50 events of ~300 bytes under a %d byte bound", len(f.requests), bound)
	}
	for _, req := range f.requests {
		if n := proto.Size(&pb.RecordRequest{Events: req}); n > bound {
			t.Errorf("request of %d bytes, more than WithMaxBatchBytes(%d)", n, bound)
		}
	}
}

func TestQueueFullRecordReturnsFalse(t *testing.T) {
	release := make(chan struct{})
	f := &fake{fail: func(call int, _ *pb.RecordRequest) error {
		if call == 0 {
			<-release
		}
		return nil
	}}
	c := newClient(t, f.serve(t, ingesttest.Options{}), WithQueueSize(4), WithMaxBatch(1))
	c.Record(llmEvent("c1", 1))
	eventually(t, "the first batch in flight", func() bool { return f.calls() == 1 })
	for i := range 4 {
		if !c.Record(llmEvent("c1", 1)) {
			t.Fatalf("Record #%d = false with room in the queue", i+2)
		}
	}
	start := time.Now()
	if c.Record(llmEvent("c1", 1)) {
		t.Fatal("Record = true with the queue full")
	}
	if took := time.Since(start); took > time.Second {
		t.Errorf("Record on a full queue took %v: it must not block", took)
	}
	wantStats(t, c, Stats{Queued: 5, Sent: 1, Dropped: 1, Pending: 5})
	close(release)
	flush(t, c)
	wantStats(t, c, Stats{Queued: 5, Sent: 5, Accepted: 5, Dropped: 1})
}

func TestRetryResendsSameIDs(t *testing.T) {
	f := &fake{fail: func(call int, _ *pb.RecordRequest) error {
		switch call {
		case 0:
			return status.Error(codes.Unavailable, "starting")
		case 1:
			return status.Error(codes.DeadlineExceeded, "slow")
		case 2:
			return status.Error(codes.ResourceExhausted, "too many requests in flight")
		}
		return nil
	}}
	c := newClient(t, f.serve(t, ingesttest.Options{}), WithBackoff(time.Millisecond, 10*time.Millisecond))
	for range 3 {
		c.Record(llmEvent("c1", 1))
	}
	flush(t, c)
	wantStats(t, c, Stats{Queued: 3, Sent: 3, Accepted: 3, Retried: 9})
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.requests) != 4 {
		t.Fatalf("%d requests, want 4 (3 refused, 1 answered)", len(f.requests))
	}
	for i, req := range f.requests[1:] {
		for j, ev := range req {
			if ev.GetEventId() != f.requests[0][j].GetEventId() {
				t.Errorf("attempt %d event %d id %q, first attempt sent %q", i+2, j, ev.GetEventId(), f.requests[0][j].GetEventId())
			}
		}
	}
}

func TestRetryHonoursRetryInfo(t *testing.T) {
	const hint = 600 * time.Millisecond
	var first, second time.Time
	f := &fake{fail: func(call int, _ *pb.RecordRequest) error {
		if call == 0 {
			first = time.Now()
			st, _ := status.New(codes.ResourceExhausted, "busy").WithDetails(&errdetails.RetryInfo{RetryDelay: durationpb.New(hint)})
			return st.Err()
		}
		second = time.Now()
		return nil
	}}
	c := newClient(t, f.serve(t, ingesttest.Options{}), WithBackoff(time.Millisecond, time.Millisecond))
	c.Record(llmEvent("c1", 1))
	flush(t, c)
	if waited := second.Sub(first); waited < hint {
		t.Errorf("retried %v after a RetryInfo of %v", waited, hint)
	}
	wantStats(t, c, Stats{Queued: 1, Sent: 1, Accepted: 1, Retried: 1})
}

func TestOversizeRequestIsSplit(t *testing.T) {
	f := &fake{}
	addr := f.serve(t, ingesttest.Options{ServerOptions: []grpc.ServerOption{grpc.MaxRecvMsgSize(4096)}})
	c := newClient(t, addr, WithMaxBatchBytes(1<<20), WithMaxBatch(1000))
	for range 100 {
		c.Record(llmEvent(strings.Repeat("c", 100), 1))
	}
	// One event alone is larger than the server takes: given up, alone.
	big := llmEvent(strings.Repeat("x", 5000), 1)
	c.Record(big)
	flush(t, c)
	st := c.Stats()
	if st.Accepted != 100 || st.GivenUp != 1 || st.Pending != 0 {
		t.Errorf("Stats() = %+v, want 100 accepted and the oversize event given up", st)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.seen[big.GetEventId()] != 0 {
		t.Error("the oversize event reached the server")
	}
}

func TestTooManyEventsIsSplit(t *testing.T) {
	f := &fake{fail: func(_ int, req *pb.RecordRequest) error {
		if n := len(req.GetEvents()); n > 10 {
			return status.Errorf(codes.InvalidArgument, "request has %d events, more than receiver.max_events_per_request (10): split it into smaller batches", n)
		}
		return nil
	}}
	c := newClient(t, f.serve(t, ingesttest.Options{}), WithMaxBatch(100))
	for range 50 {
		c.Record(llmEvent("c1", 1))
	}
	flush(t, c)
	wantStats(t, c, Stats{Queued: 50, Sent: 50, Accepted: 50})
}

func TestRejectionsCountedNeverRetried(t *testing.T) {
	f := &fake{reject: func(ev *pb.Event) bool { return ev.GetLlmCall().GetPromptTokens() < 0 }}
	c := newClient(t, f.serve(t, ingesttest.Options{}))
	c.Record(llmEvent("c1", 1))
	c.Record(llmEvent("c1", -5))
	c.Record(llmEvent("c1", 2))
	flush(t, c)
	wantStats(t, c, Stats{Queued: 3, Sent: 3, Accepted: 2, Rejected: 1})
	if n := f.calls(); n != 1 {
		t.Errorf("%d requests, want 1: a rejection is never retried", n)
	}
}

func TestPermanentErrorGivesUpAtOnce(t *testing.T) {
	f := &fake{fail: func(int, *pb.RecordRequest) error { return status.Error(codes.PermissionDenied, "no") }}
	c := newClient(t, f.serve(t, ingesttest.Options{}))
	c.Record(llmEvent("c1", 1))
	c.Record(llmEvent("c1", 1))
	flush(t, c)
	wantStats(t, c, Stats{Queued: 2, Sent: 2, GivenUp: 2})
	if n := f.calls(); n != 1 {
		t.Errorf("%d requests, want 1: PermissionDenied is not retried", n)
	}
}

func TestGiveUpAfter(t *testing.T) {
	f := &fake{fail: func(int, *pb.RecordRequest) error { return status.Error(codes.Unavailable, "down") }}
	c := newClient(t, f.serve(t, ingesttest.Options{}), WithGiveUpAfter(300*time.Millisecond), WithBackoff(10*time.Millisecond, 50*time.Millisecond))
	for range 3 {
		c.Record(llmEvent("c1", 1))
	}
	flush(t, c)
	st := c.Stats()
	if st.GivenUp != 3 || st.Pending != 0 || st.Accepted != 0 || st.Retried < 3 {
		t.Errorf("Stats() = %+v, want 3 given up after some retries", st)
	}
}

func TestHungSidecarTimesOut(t *testing.T) {
	hang := make(chan struct{})
	f := &fake{fail: func(call int, _ *pb.RecordRequest) error {
		if call == 0 {
			<-hang // until the test ends: longer than the client's timeout
		}
		return nil
	}}
	addr := f.serve(t, ingesttest.Options{})
	t.Cleanup(func() { close(hang) })
	c := newClient(t, addr, WithTimeout(200*time.Millisecond), WithBackoff(time.Millisecond, time.Millisecond))
	c.Record(llmEvent("c1", 1))
	flush(t, c)
	st := c.Stats()
	if st.Accepted != 1 || st.Retried < 1 {
		t.Errorf("Stats() = %+v, want the event resent after the timeout and answered", st)
	}
}

func TestSidecarDownAtStart(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	c := newClient(t, addr, WithBackoff(10*time.Millisecond, 50*time.Millisecond))
	for range 5 {
		c.Record(llmEvent("c1", 1))
	}
	eventually(t, "retrying against nothing", func() bool { return c.Stats().Retried > 0 })
	f := &fake{}
	f.serve(t, ingesttest.Options{Address: addr})
	flush(t, c)
	wantStats(t, c, Stats{Queued: 5, Sent: 5, Accepted: 5, Retried: c.Stats().Retried})
}

func TestTokenMetadata(t *testing.T) {
	f := &fake{}
	var mu sync.Mutex
	var got []string
	check := func(ctx context.Context) error {
		md, _ := metadata.FromIncomingContext(ctx)
		mu.Lock()
		got = append(got, md.Get("authorization")...)
		mu.Unlock()
		if v := md.Get("authorization"); len(v) != 1 || v[0] != "Bearer s3cret" {
			return status.Error(codes.Unauthenticated, "bad token")
		}
		return nil
	}
	addr := f.serve(t, ingesttest.Options{ServerOptions: []grpc.ServerOption{
		grpc.StreamInterceptor(func(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, h grpc.StreamHandler) error {
			if err := check(ss.Context()); err != nil {
				return err
			}
			return h(srv, ss)
		}),
	}})
	c := newClient(t, addr, WithToken("s3cret"))
	c.Record(llmEvent("c1", 1))
	flush(t, c)
	wantStats(t, c, Stats{Queued: 1, Sent: 1, Accepted: 1})

	// Without the token: refused, not retried, given up.
	c2 := newClient(t, addr)
	c2.Record(llmEvent("c1", 1))
	flush(t, c2)
	wantStats(t, c2, Stats{Queued: 1, Sent: 1, GivenUp: 1})
	mu.Lock()
	defer mu.Unlock()
	if len(got) != 1 || got[0] != "Bearer s3cret" {
		t.Errorf("authorization metadata seen = %q, want one \"Bearer s3cret\"", got)
	}
}

func TestUnixSocket(t *testing.T) {
	path := filepath.Join(t.TempDir(), "agentmeter.sock")
	f := &fake{}
	f.serve(t, ingesttest.Options{Network: "unix", Address: path})
	c := newClient(t, "unix://"+path)
	c.Record(llmEvent("c1", 1))
	flush(t, c)
	wantStats(t, c, Stats{Queued: 1, Sent: 1, Accepted: 1})
}

func TestCloseFlushesAndRefusesAfter(t *testing.T) {
	f := &fake{}
	c, err := New(f.serve(t, ingesttest.Options{}), WithFlushInterval(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	for range 7 {
		c.Record(llmEvent("c1", 1))
	}
	if err := c.Close(context.Background()); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if c.Record(llmEvent("c1", 1)) {
		t.Error("Record after Close = true")
	}
	if err := c.Close(context.Background()); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if err := c.Flush(context.Background()); err != nil {
		t.Errorf("Flush after Close with nothing pending: %v", err)
	}
	wantStats(t, c, Stats{Queued: 7, Sent: 7, Accepted: 7, Dropped: 1})
}

func TestCloseDeadlineGivesUpTheRest(t *testing.T) {
	release := make(chan struct{})
	defer close(release)
	f := &fake{fail: func(_ int, _ *pb.RecordRequest) error {
		<-release
		return nil
	}}
	c, err := New(f.serve(t, ingesttest.Options{}), WithMaxBatch(2))
	if err != nil {
		t.Fatal(err)
	}
	for range 5 {
		c.Record(llmEvent("c1", 1))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	if err := c.Close(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Close with a hung sidecar = %v, want DeadlineExceeded", err)
	}
	st := c.Stats()
	if st.GivenUp != 5 || st.Pending != 0 {
		t.Errorf("Stats() after Close = %+v, want all 5 given up", st)
	}
}

func TestFlushHonoursContext(t *testing.T) {
	release := make(chan struct{})
	defer close(release)
	f := &fake{fail: func(int, *pb.RecordRequest) error {
		<-release
		return nil
	}}
	c := newClient(t, f.serve(t, ingesttest.Options{}))
	c.Record(llmEvent("c1", 1))
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if err := c.Flush(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Flush = %v, want DeadlineExceeded", err)
	}
}

func TestNewRefusesBadOptions(t *testing.T) {
	for name, tc := range map[string]struct {
		target string
		opts   []Option
		want   string
	}{
		"empty target":    {"", nil, "empty target"},
		"queue 0":         {"localhost:1", []Option{WithQueueSize(0)}, "queue size"},
		"batch 0":         {"localhost:1", []Option{WithMaxBatch(0)}, "max batch must"},
		"bytes 0":         {"localhost:1", []Option{WithMaxBatchBytes(0)}, "max batch bytes"},
		"interval 0":      {"localhost:1", []Option{WithFlushInterval(0)}, "flush interval"},
		"timeout -1":      {"localhost:1", []Option{WithTimeout(-1)}, "timeout"},
		"give up 0":       {"localhost:1", []Option{WithGiveUpAfter(0)}, "give-up"},
		"backoff max<min": {"localhost:1", []Option{WithBackoff(time.Second, time.Millisecond)}, "backoff"},
		"stream idle 0":   {"localhost:1", []Option{WithStreamIdle(0)}, "stream idle"},
		"bad target":      {"unix://%zz", nil, "agentmeter client for"},
	} {
		t.Run(name, func(t *testing.T) {
			c, err := New(tc.target, tc.opts...)
			if err == nil {
				_ = c.Close(context.Background())
				t.Fatalf("New = nil error, want one containing %q", tc.want)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("New error = %q, want it to contain %q", err, tc.want)
			}
		})
	}
}

func TestRecordNil(t *testing.T) {
	c := newClient(t, "127.0.0.1:1")
	if c.Record(nil) {
		t.Error("Record(nil) = true")
	}
	if got := c.Stats().Dropped; got != 1 {
		t.Errorf("Dropped = %d, want 1", got)
	}
}

func TestConcurrentRecord(t *testing.T) {
	f := &fake{}
	c := newClient(t, f.serve(t, ingesttest.Options{}), WithQueueSize(100000))
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 500 {
				c.Record(llmEvent(fmt.Sprintf("c%d", g), int64(i)))
			}
		})
	}
	wg.Wait()
	flush(t, c)
	wantStats(t, c, Stats{Queued: 4000, Sent: 4000, Accepted: 4000})
}
