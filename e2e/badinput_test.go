package e2e

import (
	"bytes"
	"context"
	"fmt"
	"math"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	pb "github.com/agentmeter/agentmeter/proto/agentmeter/v1"
)

// rawCodec sends a []byte as the already encoded message, so that a test can
// send what the protobuf library refuses to marshal (a string that is not
// UTF-8), and decodes responses as protobuf.
type rawCodec struct{}

func (rawCodec) Marshal(v any) (mem.BufferSlice, error) {
	b, ok := v.([]byte)
	if !ok {
		return nil, fmt.Errorf("rawCodec: marshal %T, want []byte", v)
	}
	return mem.BufferSlice{mem.SliceBuffer(b)}, nil
}

func (rawCodec) Unmarshal(data mem.BufferSlice, v any) error {
	return proto.Unmarshal(data.Materialize(), v.(proto.Message))
}

func (rawCodec) Name() string { return "proto" }

// TestBadInput: invalid events are listed by index and field while the valid
// ones of the same batch count; duplicates count once; oversized requests
// are refused whole; the collector serves on afterwards.
func TestBadInput(t *testing.T) {
	t.Parallel()
	const maxEvents = 64
	c := startCollector(t, options{MaxEventsPerRequest: maxEvents, MaxRecvMsgSizeMiB: 1})
	now := time.Now()

	// The placeholder is swapped for bytes that are not UTF-8 after
	// marshalling; both are 11 bytes, so the framing stays valid.
	const placeholder, notUTF8 = "XXBADUTF8XX", "bad\xff\xfeutf8\xc3("
	bad := func(id string, mutate func(*pb.LLMCall)) *pb.Event {
		ev := call{id: id, conv: "conv-b", agent: "E2EAgent", provider: "openai", model: "bad-input-model",
			respModel: "bad-input-model", prompt: 100, completion: 10, latency: 0.5}.event()
		mutate(ev.GetLlmCall())
		return ev
	}
	noop := func(*pb.LLMCall) {}
	batch := []*pb.Event{
		0: simpleCall("b-ok-0", "bad-input-model", 100, 10),
		1: bad("b-negative", func(c *pb.LLMCall) { c.PromptTokens = -5 }),
		2: statusEvent("b-ok-2", "conv-b", "E2EAgent", pb.AgentState_AGENT_STATE_RUNNING),
		3: bad("b-cache", func(c *pb.LLMCall) { c.CacheReadTokens = 150 }),
		4: bad("b-nan", func(c *pb.LLMCall) { c.LatencySeconds = math.NaN() }),
		5: bad("", noop),
		6: simpleCall("b-ok-6", "bad-input-model", 200, 20),
		7: {EventId: "b-nopayload", ConversationId: "conv-b", Agent: "E2EAgent"},
		8: statusEvent("b-enum", "conv-b", "E2EAgent", pb.AgentState(99)),
		9: bad("b-utf8", func(c *pb.LLMCall) { c.Provider = placeholder }),
		10: func() *pb.Event {
			ev := bad("b-future", noop)
			ev.Time = timestamppb.New(now.Add(30 * 24 * time.Hour))
			return ev
		}(),
		11: simpleCall("b-ok-11", "bad-input-model", 300, 30),
	}
	raw, err := proto.Marshal(&pb.RecordRequest{Events: batch})
	if err != nil {
		t.Fatalf("marshal the batch: %v", err)
	}
	if bytes.Count(raw, []byte(placeholder)) != 1 {
		t.Fatalf("placeholder not found once in the encoded batch")
	}
	raw = bytes.Replace(raw, []byte(placeholder), []byte(notUTF8), 1)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp := new(pb.RecordResponse)
	if err := c.conn.Invoke(ctx, pb.IngestService_Record_FullMethodName, raw, resp, grpc.ForceCodecV2(rawCodec{})); err != nil {
		t.Fatalf("Record(mixed batch): %v", err)
	}
	wantRejected := map[uint32][2]string{ // index -> event_id, field
		1:  {"b-negative", "llm_call.prompt_tokens"},
		3:  {"b-cache", "llm_call.cache_read_tokens"},
		4:  {"b-nan", "llm_call.latency_seconds"},
		5:  {"", "event_id"},
		7:  {"b-nopayload", "payload"},
		8:  {"b-enum", "agent_status.state"},
		9:  {"b-utf8", "llm_call.provider"},
		10: {"b-future", "time"},
	}
	if resp.GetAccepted() != 4 || resp.GetDuplicates() != 0 {
		t.Errorf("mixed batch: accepted %d, duplicates %d; want 4 and 0", resp.GetAccepted(), resp.GetDuplicates())
	}
	seen := map[uint32]bool{}
	for _, r := range resp.GetRejected() {
		want, ok := wantRejected[r.GetIndex()]
		switch {
		case !ok:
			t.Errorf("mixed batch: event %d rejected (%v), but it is valid", r.GetIndex(), r)
		case seen[r.GetIndex()]:
			t.Errorf("mixed batch: event %d rejected twice", r.GetIndex())
		case r.GetEventId() != want[0] || r.GetField() != want[1] || r.GetReason() == "":
			t.Errorf("mixed batch: rejection of event %d = {event_id %q field %q reason %q}, want event_id %q field %q and a reason",
				r.GetIndex(), r.GetEventId(), r.GetField(), r.GetReason(), want[0], want[1])
		}
		seen[r.GetIndex()] = true
	}
	for i, want := range wantRejected {
		if !seen[i] {
			t.Errorf("mixed batch: event %d (%s, bad %s) not rejected", i, want[0], want[1])
		}
	}

	fams, _ := c.scrape()
	checkTokens := func(fams families, what string, wantIn, wantOut float64) {
		t.Helper()
		sel := labels{"gen_ai_request_model": "bad-input-model"}
		in, _ := fams.value("agentmeter_llm_tokens_total", with(sel, "gen_ai_token_type", "input"))
		out, _ := fams.value("agentmeter_llm_tokens_total", with(sel, "gen_ai_token_type", "output"))
		if in != wantIn || out != wantOut {
			t.Errorf("%s: input/output tokens %v/%v, want %v/%v", what, in, out, wantIn, wantOut)
		}
	}
	checkTokens(fams, "after the mixed batch", 600, 60)
	for _, tc := range []struct {
		sel  labels
		want float64
	}{
		{labels{"event_type": "llm_call", "outcome": "accepted"}, 3},
		{labels{"event_type": "llm_call", "outcome": "rejected"}, 6},
		{labels{"event_type": "agent_status", "outcome": "accepted"}, 1},
		{labels{"event_type": "agent_status", "outcome": "rejected"}, 1},
		{labels{"outcome": "rejected"}, 8},
		// Only the event without a payload has no type; the one with a
		// string that is not UTF-8 is still an llm_call.
		{labels{"event_type": "none", "outcome": "rejected"}, 1},
	} {
		if got, _ := fams.value("agentmeter_receiver_events_total", tc.sel); got != tc.want {
			t.Errorf("after the mixed batch: agentmeter_receiver_events_total%v = %v, want %v", tc.sel, got, tc.want)
		}
	}
	if got, _ := fams.value("agentmeter_agent_status_transitions_total", labels{"agent_state": "running"}); got != 1 {
		t.Errorf("after the mixed batch: running transitions = %v, want 1", got)
	}

	// Duplicates within one request and across requests.
	dupA := simpleCall("dup-a", "bad-input-model", 1000, 100)
	resp = c.record(dupA, proto.Clone(dupA).(*pb.Event), simpleCall("dup-b", "bad-input-model", 2000, 200))
	checkResponse(t, "Record(dup-a, dup-a, dup-b)", resp, &pb.RecordResponse{Accepted: 2, Duplicates: 1})
	resp = c.record(proto.Clone(dupA).(*pb.Event), simpleCall("dup-c", "bad-input-model", 4000, 400))
	checkResponse(t, "Record(dup-a, dup-c)", resp, &pb.RecordResponse{Accepted: 1, Duplicates: 1})
	// dup-b again, now on a stream.
	ctx2, cancel2 := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel2()
	stream, err := c.ingest.RecordStream(ctx2)
	if err != nil {
		t.Fatalf("RecordStream: %v", err)
	}
	if err := stream.Send(&pb.RecordRequest{Events: []*pb.Event{simpleCall("dup-b", "bad-input-model", 2000, 200)}}); err != nil {
		t.Fatalf("RecordStream.Send: %v", err)
	}
	sresp, err := stream.Recv()
	if err != nil {
		t.Fatalf("RecordStream.Recv: %v", err)
	}
	checkResponse(t, "RecordStream(dup-b)", sresp, &pb.RecordResponse{Duplicates: 1})
	_ = stream.CloseSend()

	fams, _ = c.scrape()
	checkTokens(fams, "after the duplicates", 600+1000+2000+4000, 60+100+200+400)
	if got, _ := fams.value("agentmeter_receiver_events_total", labels{"event_type": "llm_call", "outcome": "duplicate"}); got != 3 {
		t.Errorf("agentmeter_receiver_events_total{llm_call,duplicate} = %v, want 3", got)
	}

	// More events than max_events_per_request: refused whole.
	tooMany := make([]*pb.Event, maxEvents+1)
	for i := range tooMany {
		tooMany[i] = simpleCall(fmt.Sprintf("many-%d", i), "bad-input-model", 1, 1)
	}
	_, err = c.ingest.Record(ctx, &pb.RecordRequest{Events: tooMany})
	if status.Code(err) != codes.InvalidArgument {
		t.Errorf("Record(%d events, max %d): %v, want InvalidArgument", len(tooMany), maxEvents, err)
	}
	// Exactly the maximum is fine.
	resp = c.record(tooMany[:maxEvents]...)
	checkResponse(t, fmt.Sprintf("Record(%d events)", maxEvents), resp, &pb.RecordResponse{Accepted: maxEvents})

	// A message over max_recv_msg_size_mib (1 MiB): refused whole.
	huge := statusEvent("huge", "conv-b", "E2EAgent", pb.AgentState_AGENT_STATE_PAUSED)
	huge.GetAgentStatus().Reason = strings.Repeat("x", 3<<19) // 1.5 MiB
	_, err = c.ingest.Record(ctx, &pb.RecordRequest{Events: []*pb.Event{huge}})
	if status.Code(err) != codes.ResourceExhausted {
		t.Errorf("Record(1.5 MiB message, max 1 MiB): %v, want ResourceExhausted", err)
	}

	// Still serving.
	if err := c.waitReady(5 * time.Second); err != nil {
		t.Errorf("after the bad input: %v", err)
	}
	resp = c.record(simpleCall("after-1", "bad-input-model", 5, 5))
	checkResponse(t, "Record after the bad input", resp, &pb.RecordResponse{Accepted: 1})
	fams, _ = c.scrape()
	checkTokens(fams, "at the end", 600+1000+2000+4000+maxEvents+5, 60+100+200+400+maxEvents+5)
	if got, _ := fams.value("agentmeter_agent_status_transitions_total", labels{"agent_state": "paused"}); got != 0 {
		t.Errorf("the refused oversized message was applied: paused transitions = %v", got)
	}

	c.stop()
}
