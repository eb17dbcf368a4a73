package receiver

import (
	"context"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/agentmeter/agentmeter/processor"
	pb "github.com/agentmeter/agentmeter/proto/agentmeter/v1"
)

// emptyEvents encodes a RecordRequest of n empty events: 2 bytes each on
// the wire.
func emptyEvents(n int) []byte {
	b := make([]byte, 0, 2*n)
	for range n {
		b = protowire.AppendTag(b, 1, protowire.BytesType)
		b = protowire.AppendBytes(b, nil)
	}
	return b
}

// badUTF8Event is an encoded event whose llm_call.provider is "\xff".
func badUTF8Event(id string) []byte {
	llm := protowire.AppendTag(nil, 1, protowire.BytesType)
	llm = protowire.AppendString(llm, "\xff")
	ev := protowire.AppendTag(nil, 1, protowire.BytesType)
	ev = protowire.AppendString(ev, id)
	ev = protowire.AppendTag(ev, 10, protowire.BytesType)
	return protowire.AppendBytes(ev, llm)
}

func appendEvent(req, ev []byte) []byte {
	req = protowire.AppendTag(req, 1, protowire.BytesType)
	return protowire.AppendBytes(req, ev)
}

func newTestReceiver(t testing.TB, cfg Config) *Receiver {
	t.Helper()
	if cfg.MaxInflightBytes == 0 {
		cfg.MaxInflightBytes = 64 << 20
	}
	r, err := New(cfg, Deps{Consumer: &recorder{seen: map[string]bool{}}})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func decode(r *Receiver, wire []byte) *request {
	q := &request{r: r}
	if err := q.DecodeGRPC(mem.BufferSlice{mem.SliceBuffer(wire)}); err != nil {
		panic(err) // DecodeGRPC records problems; it never fails
	}
	return q
}

// TestOverCountRefusedBeforeDecode: a request of 10x max_events_per_request
// empty events is refused with InvalidArgument from the wire count, before
// any event is allocated: a handful of allocations, not one per event.
func TestOverCountRefusedBeforeDecode(t *testing.T) {
	r := newTestReceiver(t, Config{MaxEventsPerRequest: 10000})
	wire := emptyEvents(100_000)
	q := decode(r, wire)
	if st := status.Convert(q.refused); st.Code() != codes.InvalidArgument || !strings.Contains(st.Message(), "100000 events") {
		t.Fatalf("refused = %v, want InvalidArgument counting 100000 events", q.refused)
	}
	if len(q.msg.Events) != 0 || q.charged != 0 {
		t.Fatalf("decoded %d events, charged %d: the count must come first", len(q.msg.Events), q.charged)
	}
	allocs := testing.AllocsPerRun(20, func() { decode(r, wire) })
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	decode(r, wire)
	runtime.ReadMemStats(&after)
	bytes := after.TotalAlloc - before.TotalAlloc
	t.Logf("refusing 100000 empty events (%d bytes on the wire): %.0f allocations, %d bytes", len(wire), allocs, bytes)
	if allocs > 16 || bytes > 16<<10 {
		t.Errorf("refusing an over-count request took %.0f allocations and %d bytes; decoding it would take ~100000 and ~14 MB", allocs, bytes)
	}
}

// TestInflightEstimate keeps eventOverhead honest: what DecodeGRPC charges
// for a request is at least what decoding it allocates, for the shapes
// that cost the most per wire byte.
func TestInflightEstimate(t *testing.T) {
	full := call("5f0c2a9e-1b7d-4e3a-9c1f-000000000000")
	full.ConversationId = "3c9f2a1b-7e4d-4c8a-b2f1-0d9e8c7b6a5f"
	full.GetLlmCall().CostUsd = proto.Float64(0.1)
	status := &pb.Event{EventId: "s", Payload: &pb.Event_AgentStatus{AgentStatus: &pb.AgentStatus{State: pb.AgentState_AGENT_STATE_RUNNING}}}
	tiny := call("x")
	setStrings(tiny.ProtoReflect(), "x")
	for _, tc := range []struct {
		name string
		ev   *pb.Event
	}{
		{"empty events", &pb.Event{}},
		{"status events", status},
		{"full llm calls", full},
		{"one-byte strings everywhere", tiny},
	} {
		t.Run(tc.name, func(t *testing.T) {
			events := make([]*pb.Event, 10000)
			for i := range events {
				events[i] = tc.ev
			}
			wire, err := proto.Marshal(&pb.RecordRequest{Events: events})
			if err != nil {
				t.Fatal(err)
			}
			r := newTestReceiver(t, Config{MaxEventsPerRequest: 10000})
			var before, after runtime.MemStats
			runtime.GC()
			runtime.ReadMemStats(&before)
			q := decode(r, wire)
			runtime.ReadMemStats(&after)
			if q.refused != nil {
				t.Fatal(q.refused)
			}
			used := int64(after.TotalAlloc - before.TotalAlloc)
			t.Logf("%d bytes on the wire, %d allocated by decoding, %d charged", len(wire), used, q.charged)
			if used > q.charged {
				t.Errorf("decoding allocated %d bytes, more than the %d charged: raise eventOverhead", used, q.charged)
			}
			q.release()
			if n := r.inflight.Load(); n != 0 {
				t.Errorf("in flight after release = %d, want 0", n)
			}
		})
	}
}

// setStrings sets every string field of m and of its set messages to v.
func setStrings(m protoreflect.Message, v string) {
	fields := m.Descriptor().Fields()
	for i := range fields.Len() {
		fd := fields.Get(i)
		switch {
		case fd.Kind() == protoreflect.StringKind && !fd.IsList() && !fd.IsMap():
			m.Set(fd, protoreflect.ValueOfString(v))
		case fd.Message() != nil && !fd.IsList() && !fd.IsMap() && m.Has(fd):
			setStrings(m.Mutable(fd).Message(), v)
		}
	}
}

// TestOverCountWithBadUTF8DoesNotLeak is the regression test of the side
// map: requests over max_events_per_request that also hold a non-UTF-8
// string were refused but stayed referenced forever. Now the decode result
// lives in the request; after many of them the heap is back where it was.
func TestOverCountWithBadUTF8DoesNotLeak(t *testing.T) {
	f := newFixture(t, Config{MaxEventsPerRequest: 1000})
	overCount := emptyEvents(20_000)
	overCount = appendEvent(overCount, badUTF8Event("bad"))
	withinCount := appendEvent(emptyEvents(500), badUTF8Event("bad"))
	send := func(wire []byte) error {
		return f.conn.Invoke(context.Background(), "/agentmeter.v1.IngestService/Record", rawMessage(wire), new(pb.RecordResponse), grpc.ForceCodecV2(rawCodec{}))
	}
	heap := func() uint64 {
		runtime.GC()
		var m runtime.MemStats
		runtime.ReadMemStats(&m)
		return m.HeapAlloc
	}
	// Warm up the transport's buffers.
	_ = send(overCount)
	_ = send(withinCount)
	base := heap()
	for range 50 {
		if err := send(overCount); status.Code(err) != codes.InvalidArgument {
			t.Fatalf("over-count request = %v, want InvalidArgument", err)
		}
		if err := send(withinCount); err != nil {
			t.Fatalf("request with one bad event = %v, want its events answered", err)
		}
	}
	grown := int64(heap()) - int64(base)
	t.Logf("heap grew by %d bytes over 100 requests", grown)
	if grown > 4<<20 {
		t.Errorf("heap grew by %d bytes over 100 refused or partly bad requests: something keeps them", grown)
	}
	if n := f.recv.inflight.Load(); n != 0 {
		t.Errorf("in-flight bytes after the requests = %d, want 0", n)
	}
}

// blocking is a Consumer that holds every batch until released.
type blocking struct {
	entered chan struct{}
	release chan struct{}
}

func (b *blocking) Consume(_ context.Context, events []*pb.Event, _ time.Time, results []processor.Result) error {
	b.entered <- struct{}{}
	<-b.release
	clear(results)
	return nil
}

func (b *blocking) Refused(*pb.Event) {}

// TestInflightBytesBudget: while requests worth max_inflight_mib are being
// applied, the next is refused with ResourceExhausted and a RetryInfo;
// once they are done, it goes through.
func TestInflightBytesBudget(t *testing.T) {
	f := newFixture(t, Config{MaxInflightBytes: 4 << 10})
	cons := &blocking{entered: make(chan struct{}), release: make(chan struct{})}
	f.recv.consumer = cons
	batch := func(prefix string, n int) *pb.RecordRequest {
		req := &pb.RecordRequest{}
		for i := range n {
			req.Events = append(req.Events, call(prefix+string(rune('a'+i))))
		}
		return req
	}
	var wg sync.WaitGroup
	wg.Go(func() {
		if _, err := f.client.Record(context.Background(), batch("x", 20)); err != nil {
			t.Error(err)
		}
	})
	<-cons.entered
	var trailer metadata.MD
	_, err := f.client.Record(context.Background(), batch("y", 1), grpc.Trailer(&trailer))
	st := status.Convert(err)
	if got := trailer.Get("grpc-retry-pushback-ms"); len(got) != 1 || got[0] != "250" {
		t.Errorf("grpc-retry-pushback-ms = %v, want 250", got)
	}
	if st.Code() != codes.ResourceExhausted || !strings.Contains(st.Message(), "max_inflight_mib") {
		t.Fatalf("second request = %v, want ResourceExhausted naming max_inflight_mib", err)
	}
	var retry bool
	for _, d := range st.Details() {
		_, retry = d.(*errdetails.RetryInfo)
	}
	if !retry {
		t.Errorf("no RetryInfo in %v", st.Details())
	}
	close(cons.release)
	wg.Wait()
	go func() {
		for range cons.entered {
		}
	}()
	if _, err := f.client.Record(context.Background(), batch("y", 1)); err != nil {
		t.Fatalf("after the budget freed: %v", err)
	}
	close(cons.entered)
	if n := f.recv.inflight.Load(); n != 0 {
		t.Errorf("in-flight bytes = %d, want 0", n)
	}
}

func TestMalformedRequestIsInvalidArgument(t *testing.T) {
	f := newFixture(t, Config{})
	for _, wire := range [][]byte{
		{0x0a, 0x05, 0x01},             // events field longer than the message
		{0x0b},                         // a group that never ends
		appendEvent(nil, []byte{0xff}), // an event that is not protobuf
	} {
		err := f.conn.Invoke(context.Background(), "/agentmeter.v1.IngestService/Record", rawMessage(wire), new(pb.RecordResponse), grpc.ForceCodecV2(rawCodec{}))
		if status.Code(err) != codes.InvalidArgument {
			t.Errorf("Record(% x) = %v, want InvalidArgument", wire, err)
		}
	}
}

// FuzzCountEvents: the wire count agrees with protobuf's decoding whenever
// protobuf accepts the bytes, wherever the transport's buffers split them,
// and never panics.
func FuzzCountEvents(f *testing.F) {
	good, _ := proto.Marshal(&pb.RecordRequest{Events: []*pb.Event{call("a"), call("b"), {}}})
	f.Add(good, uint16(7))
	f.Add(emptyEvents(3), uint16(1))
	f.Add(appendEvent(emptyEvents(2), badUTF8Event("x")), uint16(5))
	f.Add([]byte{0x08, 0x01, 0x0a, 0x00}, uint16(2))
	f.Add([]byte{0x0b, 0x0c}, uint16(1))
	f.Add([]byte{0x13, 0x0a, 0x00, 0x14, 0x0a, 0x00}, uint16(3))
	f.Fuzz(func(t *testing.T, data []byte, split uint16) {
		at := int(split) % (len(data) + 1)
		slice := mem.BufferSlice{mem.SliceBuffer(data[:at]), mem.SliceBuffer(data[at:])}
		n, ok := countEvents(slice)
		var req pb.RecordRequest
		if err := proto.Unmarshal(data, &req); err != nil {
			return
		}
		if !ok || n != len(req.Events) {
			t.Fatalf("countEvents = %d, %v; protobuf decodes %d events", n, ok, len(req.Events))
		}
	})
}

// BenchmarkDecode is the decoding of a request of 100 LLM calls: protobuf
// alone, the wire count alone, and DecodeGRPC (the wire count, the budget,
// then protobuf).
func BenchmarkDecode(b *testing.B) {
	events := benchEvents(100)
	wire, err := proto.Marshal(&pb.RecordRequest{Events: events})
	if err != nil {
		b.Fatal(err)
	}
	r := newTestReceiver(b, Config{MaxEventsPerRequest: 10000})
	b.Run("proto.Unmarshal", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			var req pb.RecordRequest
			if err := proto.Unmarshal(wire, &req); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("countEvents", func(b *testing.B) {
		b.ReportAllocs()
		slice := mem.BufferSlice{mem.SliceBuffer(wire)}
		for b.Loop() {
			if n, ok := countEvents(slice); !ok || n != 100 {
				b.Fatal(n, ok)
			}
		}
	})
	b.Run("DecodeGRPC", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			q := decode(r, wire)
			if q.refused != nil {
				b.Fatal(q.refused)
			}
			q.release()
		}
	})
}

func (b *blocking) Begin(ctx context.Context, events []*pb.Event, _ []byte, now time.Time, results []processor.Result) *processor.Pending {
	return processor.Ended(b.Consume(ctx, events, now, results))
}
