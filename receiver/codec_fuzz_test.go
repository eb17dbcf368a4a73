package receiver

import (
	"fmt"
	"testing"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	pb "github.com/agentmeter/agentmeter/proto/agentmeter/v1"
)

// FuzzDecodeLeniently feeds arbitrary bytes to the fallback decoder of
// RecordRequest: it must never panic, and what it accepts must hold one
// event per top-level events field, each either decoded or named as bad.
func FuzzDecodeLeniently(f *testing.F) {
	good, _ := proto.Marshal(&pb.RecordRequest{Events: []*pb.Event{call("a"), call("b")}})
	f.Add(good)
	bad := protowire.AppendTag(nil, 1, protowire.BytesType)
	bad = protowire.AppendString(bad, "\xff\xfe")
	req := protowire.AppendTag(nil, 1, protowire.BytesType)
	req = protowire.AppendBytes(req, bad)
	f.Add(append(good, req...))
	f.Add([]byte{0x0a, 0x05, 0x0a, 0x03, 0xff, 0xff, 0xff})
	f.Fuzz(func(t *testing.T, data []byte) {
		var r pb.RecordRequest
		issues, ok := decodeLeniently(data, &r)
		if !ok {
			return
		}
		if len(issues) == 0 {
			t.Fatal("ok without issues: the strict decoder should have taken it")
		}
		for i, is := range issues {
			if i < 0 || i >= len(r.Events) {
				t.Fatalf("issue for event %d of %d", i, len(r.Events))
			}
			if is.field == "" || is.reason == "" {
				t.Fatalf("issue without field or reason: %+v", is)
			}
		}
		// The response echoes event ids: they must marshal.
		for _, ev := range r.Events {
			if _, err := proto.Marshal(&pb.Rejection{EventId: printable(ev.GetEventId())}); err != nil {
				t.Fatalf("event id %q does not marshal: %v", ev.GetEventId(), err)
			}
		}
	})
}

func TestPlaceholderKeepsPayloadType(t *testing.T) {
	for _, ev := range []*pb.Event{
		call("a"),
		{EventId: "b", Payload: &pb.Event_AgentStatus{AgentStatus: &pb.AgentStatus{State: pb.AgentState_AGENT_STATE_RUNNING}}},
		{EventId: "c", Payload: &pb.Event_Conversation{Conversation: &pb.ConversationEvent{}}},
		{EventId: "d", Payload: &pb.Event_RuntimeFault{RuntimeFault: &pb.RuntimeFault{Kind: 1}}},
		{EventId: "e"},
	} {
		b, err := proto.Marshal(ev)
		if err != nil {
			t.Fatal(err)
		}
		got := placeholder(b)
		if gotType, want := fmt.Sprintf("%T", got.GetPayload()), fmt.Sprintf("%T", ev.GetPayload()); got.EventId != ev.EventId || gotType != want {
			t.Errorf("placeholder(%v) = id %q type %s, want %q type %s", ev, got.EventId, gotType, ev.EventId, want)
		}
	}
}
