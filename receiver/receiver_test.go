package receiver

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/test/bufconn"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/agentmeter/agentmeter/grpcserver"
	"github.com/agentmeter/agentmeter/processor"
	pb "github.com/agentmeter/agentmeter/proto/agentmeter/v1"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// recorder is a Consumer that keeps what it was given and marks repeated ids.
type recorder struct {
	seen    map[string]bool
	applied []string
	// refused are the ids of the events refused by validation.
	refused []string
	// fail, when set, is returned for every batch (a storage failure).
	fail error
}

func (r *recorder) Consume(_ context.Context, events []*pb.Event, _ time.Time, results []processor.Result) error {
	if r.fail != nil {
		return r.fail
	}
	for i, ev := range events {
		if r.seen[ev.GetEventId()] {
			results[i] = processor.Result{Outcome: processor.Duplicate}
			continue
		}
		if ev.GetConversation().GetCreated() != nil && ev.GetConversationId() == "live" {
			results[i] = processor.Result{Outcome: processor.Rejected, Field: "conversation.created", Reason: "conversation is live"}
			continue
		}
		r.seen[ev.GetEventId()] = true
		r.applied = append(r.applied, ev.GetEventId())
	}
	return nil
}

func (r *recorder) Refused(ev *pb.Event) { r.refused = append(r.refused, ev.GetEventId()) }

type fixture struct {
	srv    *grpcserver.Server
	recv   *Receiver
	rec    *recorder
	client pb.IngestServiceClient
	health healthpb.HealthClient
	conn   *grpc.ClientConn
}

// serverConfig is a grpcserver.Config for tests, with every bound set.
func serverConfig() grpcserver.Config {
	return grpcserver.Config{
		Endpoint: "bufconn", MaxRecvMsgSize: 1 << 20, MaxConcurrentStreams: 16, MaxConnections: 8,
		MaxInflightRPCs: 64, ReceiveTimeout: time.Minute, MaxConnectionIdle: time.Minute, HandshakeTimeout: 5 * time.Second,
	}
}

// newFixture serves a receiver with cfg (defaults filled in) on a
// grpcserver over bufconn; scfg changes the server's config.
func newFixture(t *testing.T, cfg Config, scfg ...func(*grpcserver.Config)) *fixture {
	t.Helper()
	if cfg.MaxEventsPerRequest == 0 {
		cfg.MaxEventsPerRequest = 100
	}
	if cfg.MaxInflightBytes == 0 {
		cfg.MaxInflightBytes = 64 << 20
	}
	cfg.Limits.MaxFutureSkew = 5 * time.Minute
	sc := serverConfig()
	for _, f := range scfg {
		f(&sc)
	}
	lis := bufconn.Listen(1 << 20)
	srv, err := grpcserver.New(sc, grpcserver.Deps{Listen: func(string, string) (net.Listener, error) { return lis, nil }})
	if err != nil {
		t.Fatal(err)
	}
	rec := &recorder{seen: map[string]bool{}}
	recv, err := New(cfg, Deps{Consumer: rec, Draining: srv.Draining()})
	if err != nil {
		t.Fatal(err)
	}
	recv.Register(srv)
	if err := srv.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	srv.SetServing(true)
	conn, err := grpc.NewClient("passthrough:///bufconn",
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return lis.DialContext(ctx) }),
		grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	f := &fixture{srv: srv, recv: recv, rec: rec, client: pb.NewIngestServiceClient(conn), health: healthpb.NewHealthClient(conn), conn: conn}
	t.Cleanup(func() {
		_ = conn.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
	})
	return f
}

func call(id string) *pb.Event {
	return &pb.Event{EventId: id, Agent: "CodeActAgent", Payload: &pb.Event_LlmCall{LlmCall: &pb.LLMCall{
		Provider: "openai", RequestModel: "gpt-4o", PromptTokens: 10, CompletionTokens: 5, LatencySeconds: 1,
	}}}
}

func TestRecordMixedBatch(t *testing.T) {
	f := newFixture(t, Config{})
	bad := call("neg")
	bad.GetLlmCall().PromptTokens = -1
	nan := call("nan")
	nan.GetLlmCall().LatencySeconds = math.NaN()
	created := &pb.Event{EventId: "c", ConversationId: "live", Payload: &pb.Event_Conversation{Conversation: &pb.ConversationEvent{
		Kind: &pb.ConversationEvent_Created{Created: &pb.ConversationCreated{}}}}}
	resp, err := f.client.Record(context.Background(), &pb.RecordRequest{Events: []*pb.Event{
		call("a"), bad, call("b"), {EventId: "nopayload"}, call("a"), created, nan, call("d"),
	}})
	if err != nil {
		t.Fatal(err)
	}
	if resp.Accepted != 3 || resp.Duplicates != 1 {
		t.Errorf("accepted/duplicates = %d/%d, want 3/1", resp.Accepted, resp.Duplicates)
	}
	var got []string
	for _, r := range resp.Rejected {
		got = append(got, r.EventId+"@"+r.Field)
		if r.Reason == "" {
			t.Errorf("rejection %v has no reason", r)
		}
	}
	want := "neg@llm_call.prompt_tokens nopayload@payload c@conversation.created nan@llm_call.latency_seconds"
	if strings.Join(got, " ") != want {
		t.Errorf("rejected = %v, want %s", got, want)
	}
	if strings.Join(f.rec.applied, ",") != "a,b,d" {
		t.Errorf("applied = %v, want a,b,d in order", f.rec.applied)
	}
	// The processor counts every outcome: those it decided itself (the
	// duplicate, the second created), and those refused before it.
	if got := strings.Join(f.rec.refused, ","); got != "neg,nopayload,nan" {
		t.Errorf("refused = %s, want neg,nopayload,nan (the validator's rejections, in order)", got)
	}
}

// TestRecordStoreFailureCountsNothing: a batch the processor could not
// store is answered Unavailable and sent again whole: its rejections are
// counted once, when it is answered.
func TestRecordStoreFailureCountsNothing(t *testing.T) {
	f := newFixture(t, Config{})
	bad := call("neg")
	bad.GetLlmCall().PromptTokens = -1
	req := &pb.RecordRequest{Events: []*pb.Event{call("a"), bad}}
	f.rec.fail = errors.New("disk gone")
	if _, err := f.client.Record(context.Background(), req); status.Code(err) != codes.Unavailable {
		t.Fatalf("Record on a failing store: %v, want Unavailable", err)
	}
	if len(f.rec.refused) != 0 {
		t.Errorf("refused after a failed store = %v, want none", f.rec.refused)
	}
	f.rec.fail = nil
	resp, err := f.client.Record(context.Background(), req)
	if err != nil || resp.Accepted != 1 || len(resp.Rejected) != 1 {
		t.Fatalf("Record sent again: %v, %v; want 1 accepted, 1 rejected", resp, err)
	}
	if got := strings.Join(f.rec.refused, ","); got != "neg" {
		t.Errorf("refused = %s, want neg once", got)
	}
}

func TestRecordTooManyEvents(t *testing.T) {
	f := newFixture(t, Config{MaxEventsPerRequest: 2})
	_, err := f.client.Record(context.Background(), &pb.RecordRequest{Events: []*pb.Event{call("a"), call("b"), call("c")}})
	if status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), "max_events_per_request") {
		t.Fatalf("err = %v, want InvalidArgument naming max_events_per_request", err)
	}
	if len(f.rec.applied) != 0 {
		t.Errorf("applied %v from a refused request", f.rec.applied)
	}
	// The server still serves.
	if _, err := f.client.Record(context.Background(), &pb.RecordRequest{Events: []*pb.Event{call("a")}}); err != nil {
		t.Fatal(err)
	}
}

func TestRecordTooLarge(t *testing.T) {
	f := newFixture(t, Config{}, func(c *grpcserver.Config) { c.MaxRecvMsgSize = 1024 })
	ev := call("big")
	ev.ConversationId = strings.Repeat("x", 2000)
	_, err := f.client.Record(context.Background(), &pb.RecordRequest{Events: []*pb.Event{ev}})
	if status.Code(err) != codes.ResourceExhausted {
		t.Fatalf("err = %v, want ResourceExhausted", err)
	}
}

func TestRecordStreamInOrder(t *testing.T) {
	f := newFixture(t, Config{})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	stream, err := f.client.RecordStream(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 20 {
		// Batch i has i%3+1 events; every third repeats the previous batch's first id.
		var events []*pb.Event
		for j := range i%3 + 1 {
			events = append(events, call(string(rune('A'+i))+string(rune('a'+j))))
		}
		if err := stream.Send(&pb.RecordRequest{Events: events}); err != nil {
			t.Fatal(err)
		}
	}
	if err := stream.CloseSend(); err != nil {
		t.Fatal(err)
	}
	for i := range 20 {
		resp, err := stream.Recv()
		if err != nil {
			t.Fatal(err)
		}
		if want := uint32(i%3 + 1); resp.Accepted != want {
			t.Fatalf("response %d accepted %d, want %d (responses out of order?)", i, resp.Accepted, want)
		}
	}
	if _, err := stream.Recv(); !errors.Is(err, io.EOF) {
		t.Fatalf("after the last response: %v, want EOF", err)
	}
}

func TestHealthAndShutdown(t *testing.T) {
	f := newFixture(t, Config{})
	ctx := context.Background()
	resp, err := f.health.Check(ctx, &healthpb.HealthCheckRequest{Service: pb.IngestService_ServiceDesc.ServiceName})
	if err != nil || resp.Status != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("health = %v, %v; want SERVING", resp, err)
	}
	// An idle stream must not hold shutdown up: it ends with Unavailable.
	stream, err := f.client.RecordStream(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Send(&pb.RecordRequest{Events: []*pb.Event{call("x")}}); err != nil {
		t.Fatal(err)
	}
	if _, err := stream.Recv(); err != nil {
		t.Fatal(err)
	}
	shutCtx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	start := time.Now()
	if err := f.srv.Shutdown(shutCtx); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d > 4*time.Second {
		t.Errorf("shutdown took %v with an idle stream", d)
	}
	if _, err := stream.Recv(); status.Code(err) != codes.Unavailable {
		t.Errorf("idle stream ended with %v, want Unavailable", err)
	}
	if err := f.srv.Shutdown(shutCtx); err != nil {
		t.Errorf("second Shutdown: %v", err)
	}
}

// TestNonUTF8 sends hand-encoded bytes (Go's protobuf refuses to marshal bad
// UTF-8): the bad event is rejected by name, the others are applied.
func TestNonUTF8(t *testing.T) {
	f := newFixture(t, Config{})
	good, err := proto.Marshal(call("good"))
	if err != nil {
		t.Fatal(err)
	}
	// An event whose llm_call.provider is "\xff".
	llmBody := protowire.AppendTag(nil, 1, protowire.BytesType)
	llmBody = protowire.AppendString(llmBody, "\xff")
	llmBody = protowire.AppendTag(llmBody, 3, protowire.BytesType)
	llmBody = protowire.AppendString(llmBody, "gpt-4o")
	bad := protowire.AppendTag(nil, 1, protowire.BytesType)
	bad = protowire.AppendString(bad, "bad")
	bad = protowire.AppendTag(bad, 10, protowire.BytesType)
	bad = protowire.AppendBytes(bad, llmBody)
	var req []byte
	for _, ev := range [][]byte{good, bad} {
		req = protowire.AppendTag(req, 1, protowire.BytesType)
		req = protowire.AppendBytes(req, ev)
	}
	out := new(pb.RecordResponse)
	if err := f.conn.Invoke(context.Background(), "/agentmeter.v1.IngestService/Record", rawMessage(req), out, grpc.ForceCodecV2(rawCodec{})); err != nil {
		t.Fatal(err)
	}
	if out.Accepted != 1 || len(out.Rejected) != 1 {
		t.Fatalf("response = %v, want 1 accepted, 1 rejected", out)
	}
	if r := out.Rejected[0]; r.Index != 1 || r.EventId != "bad" || r.Field != "llm_call.provider" {
		t.Errorf("rejection = %v, want index 1, bad, llm_call.provider", r)
	}
	if got := strings.Join(f.rec.refused, ","); got != "bad" {
		t.Errorf("refused = %s, want bad (counted by the processor)", got)
	}
}

// TestIdleStreamEndsUnavailable: a RecordStream with no batch for
// receive_timeout is ended with Unavailable (retry on a new stream), not
// cut: the batches answered on it stay applied, and the client's retry
// logic resends what was not answered.
func TestIdleStreamEndsUnavailable(t *testing.T) {
	f := newFixture(t, Config{}, func(c *grpcserver.Config) { c.ReceiveTimeout = 300 * time.Millisecond })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	stream, err := f.client.RecordStream(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Send(&pb.RecordRequest{Events: []*pb.Event{call("a")}}); err != nil {
		t.Fatal(err)
	}
	if _, err := stream.Recv(); err != nil {
		t.Fatal(err)
	}
	idle := time.Now()
	_, err = stream.Recv()
	if st := status.Convert(err); st.Code() != codes.Unavailable || !strings.Contains(st.Message(), "receive_timeout") {
		t.Fatalf("idle stream ended with %v, want Unavailable naming receive_timeout", err)
	}
	if d := time.Since(idle); d >= 300*time.Millisecond+grpcserver.ReceiveGrace {
		t.Errorf("ended after %v: the server's cancel came first", d)
	}
	if n := f.srv.Refused(pb.IngestService_ServiceDesc.ServiceName, codes.Unavailable); n != 1 {
		t.Errorf("refused Unavailable = %d, want 1", n)
	}
	if n := f.srv.Refused(pb.IngestService_ServiceDesc.ServiceName, codes.Canceled); n != 0 {
		t.Errorf("refused Canceled = %d, want 0", n)
	}
	if strings.Join(f.rec.applied, ",") != "a" {
		t.Errorf("applied = %v, want a", f.rec.applied)
	}
}

func (r *recorder) Begin(ctx context.Context, events []*pb.Event, _ []byte, now time.Time, results []processor.Result) *processor.Pending {
	return processor.Ended(r.Consume(ctx, events, now, results))
}

// deferred is a Consumer whose batches end when the test says, in any
// order, like durable mode's background writes.
type deferred struct {
	mu      sync.Mutex
	started chan int // the number of events of each batch begun
	ends    []chan struct{}
	encoded [][]byte
}

func (d *deferred) Consume(context.Context, []*pb.Event, time.Time, []processor.Result) error {
	return errors.New("deferred: Consume not used")
}

func (d *deferred) Refused(*pb.Event) {}

func (d *deferred) Begin(_ context.Context, events []*pb.Event, encoded []byte, _ time.Time, results []processor.Result) *processor.Pending {
	end := make(chan struct{})
	d.mu.Lock()
	d.ends = append(d.ends, end)
	d.encoded = append(d.encoded, append([]byte(nil), encoded...))
	d.mu.Unlock()
	clear(results) // all accepted
	d.started <- len(events)
	return processor.EndsWhen(end)
}

// deferredStream opens a RecordStream, within a 10 s deadline, on a fixture
// of cfg whose consumer is a deferred one with room for started batches.
func deferredStream(t *testing.T, cfg Config, started int) (*fixture, *deferred, grpc.BidiStreamingClient[pb.RecordRequest, pb.RecordResponse], context.Context) {
	t.Helper()
	f := newFixture(t, cfg)
	cons := &deferred{started: make(chan int, started)}
	f.recv.consumer = cons
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	stream, err := f.client.RecordStream(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return f, cons, stream, ctx
}

// TestRecordStreamPipelined: a stream starts up to streamPipeline batches
// before the first is answered, and answers them in request order even
// when they end in another.
func TestRecordStreamPipelined(t *testing.T) {
	f, cons, stream, ctx := deferredStream(t, Config{KeepEncoded: true}, 2*streamPipeline)
	const batches = streamPipeline + 3
	for i := range batches {
		var events []*pb.Event
		for j := range i + 1 {
			events = append(events, call(fmt.Sprintf("p%d-%d", i, j)))
		}
		if err := stream.Send(&pb.RecordRequest{Events: events}); err != nil {
			t.Fatal(err)
		}
	}
	for i := range streamPipeline {
		select {
		case n := <-cons.started:
			if n != i+1 {
				t.Fatalf("batch %d begun with %d events, want %d: not in request order", i, n, i+1)
			}
		case <-ctx.Done():
			t.Fatalf("only %d batches begun before any answer, want %d", i, streamPipeline)
		}
	}
	select {
	case <-cons.started:
		t.Fatalf("more than %d batches begun before the first was answered", streamPipeline)
	case <-time.After(200 * time.Millisecond):
	}
	cons.mu.Lock()
	ends := slices.Clone(cons.ends)
	enc := cons.encoded[1]
	cons.mu.Unlock()
	var req pb.RecordRequest
	if err := proto.Unmarshal(enc, &req); err != nil || len(req.Events) != 2 || req.Events[1].GetEventId() != "p1-1" {
		t.Errorf("batch 1's encoding decodes to %d events (%v), want its 2", len(req.Events), err)
	}
	resps := make(chan recvResult, batches+1)
	go func() {
		for {
			resp, err := stream.Recv()
			resps <- recvResult{resp, err}
			if err != nil {
				return
			}
		}
	}()
	for i := len(ends) - 1; i >= 1; i-- { // all but the first, last first
		close(ends[i])
	}
	select {
	case r := <-resps:
		t.Fatalf("answered %v, %v before the first batch ended", r.resp, r.err)
	case <-time.After(200 * time.Millisecond):
	}
	close(ends[0])
	for i := range batches {
		if i >= streamPipeline {
			<-cons.started
			cons.mu.Lock()
			close(cons.ends[i])
			cons.mu.Unlock()
		}
		r := <-resps
		if r.err != nil {
			t.Fatal(r.err)
		}
		if r.resp.Accepted != uint32(i+1) {
			t.Fatalf("response %d accepted %d, want %d: out of order", i, r.resp.Accepted, i+1)
		}
	}
	if n := f.recv.inflight.Load(); n != 0 {
		t.Errorf("in-flight bytes after the stream's answers = %d, want 0", n)
	}
}

type recvResult struct {
	resp *pb.RecordResponse
	err  error
}

// TestStoreErrorStatus: how each processor failure is answered.
func TestStoreErrorStatus(t *testing.T) {
	for _, tc := range []struct {
		err  error
		code codes.Code
	}{
		{fmt.Errorf("%w: pricer bug", processor.ErrPanic), codes.Internal},
		{processor.ErrStorageFull, codes.ResourceExhausted},
		{errors.New("write storage batch: i/o error"), codes.Unavailable},
	} {
		st := status.Convert(storeError(tc.err))
		if st.Code() != tc.code || st.Message() == "" {
			t.Errorf("storeError(%v) = %v %q, want %v", tc.err, st.Code(), st.Message(), tc.code)
		}
	}
}

// batchOf is a request of n LLM calls whose ids start with prefix, and
// what it is charged to the in-flight budget.
func batchOf(prefix string, n int, keepEncoded bool) (*pb.RecordRequest, int64) {
	req := &pb.RecordRequest{}
	for j := range n {
		req.Events = append(req.Events, call(fmt.Sprintf("%s-%d", prefix, j)))
	}
	cost := inflightCost(proto.Size(req), n)
	if keepEncoded {
		cost += int64(proto.Size(req))
	}
	return req, cost
}

// waitInflight polls until the receiver's in-flight bytes are want.
func waitInflight(t *testing.T, f *fixture, want int64, what string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for f.recv.inflight.Load() != want {
		if time.Now().After(deadline) {
			t.Fatalf("%s: in-flight bytes %d, want %d", what, f.recv.inflight.Load(), want)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestRecordStreamPipelineBytes: a stream holds at most a quarter of the
// in-flight budget between receipt and answer (received ahead or started),
// and receives the next request as soon as an answer makes room.
func TestRecordStreamPipelineBytes(t *testing.T) {
	_, cost := batchOf("x0", 10, true)
	// A quarter of the budget: room for three requests.
	f, cons, stream, ctx := deferredStream(t, Config{KeepEncoded: true, MaxInflightBytes: 4 * 3 * cost}, 16)
	const batches = 6
	for i := range batches {
		req, c := batchOf(fmt.Sprintf("x%d", i), 10, true)
		if c != cost {
			t.Fatalf("request %d costs %d, request 0 %d: the test needs equal ones", i, c, cost)
		}
		if err := stream.Send(req); err != nil {
			t.Fatal(err)
		}
	}
	for i := range 3 {
		select {
		case <-cons.started:
		case <-ctx.Done():
			t.Fatalf("only %d batches begun, want 3", i)
		}
	}
	select {
	case <-cons.started:
		t.Fatal("a fourth batch begun while three filled the stream's share of the budget")
	case <-time.After(200 * time.Millisecond):
	}
	if n := f.recv.inflight.Load(); n != 3*cost {
		t.Errorf("in-flight bytes %d with the stream's share full, want %d (nothing received ahead of it)", n, 3*cost)
	}
	for i := range batches {
		if i >= 3 { // room made by the answer before: the next one comes
			select {
			case <-cons.started:
			case <-ctx.Done():
				t.Fatalf("batch %d not begun after %d answers made room", i, i-2)
			}
		}
		cons.mu.Lock()
		close(cons.ends[i])
		cons.mu.Unlock()
		resp, err := stream.Recv()
		if err != nil {
			t.Fatal(err)
		}
		if resp.Accepted != 10 {
			t.Fatalf("response %d accepted %d, want 10", i, resp.Accepted)
		}
	}
	waitInflight(t, f, 0, "after every answer")
}

// stalled is a Consumer whose first Begin blocks until the stream ends and
// then fails; the others are applied at once.
type stalled struct{ first sync.Once }

func (g *stalled) Consume(context.Context, []*pb.Event, time.Time, []processor.Result) error {
	return nil
}
func (g *stalled) Refused(*pb.Event) {}
func (g *stalled) Begin(ctx context.Context, _ []*pb.Event, _ []byte, _ time.Time, results []processor.Result) *processor.Pending {
	var err error
	g.first.Do(func() {
		<-ctx.Done()
		err = status.Error(codes.Unavailable, "stalled")
	})
	clear(results)
	return processor.Ended(err)
}

// TestRecordStreamReadAheadReleased: requests received ahead of their start
// give their budget back when the stream ends before they start.
func TestRecordStreamReadAheadReleased(t *testing.T) {
	f := newFixture(t, Config{KeepEncoded: true})
	f.recv.consumer = &stalled{}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	stream, err := f.client.RecordStream(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var total int64
	for i := range 5 {
		req, cost := batchOf(fmt.Sprintf("r%d", i), 10, true)
		total += cost
		if err := stream.Send(req); err != nil {
			t.Fatal(err)
		}
	}
	// One is being started (stalled), four were received ahead of it.
	waitInflight(t, f, total, "with the first batch's start stalled")
	cancel() // the first fails: the stream ends with four never started
	waitInflight(t, f, 0, "after the stream ended")
}
