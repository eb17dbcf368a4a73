package receiver

import (
	"math"
	"testing"
	"unicode"
	"unicode/utf8"

	"google.golang.org/protobuf/proto"

	pb "github.com/agentmeter/agentmeter/proto/agentmeter/v1"
)

// FuzzValidate decodes arbitrary bytes as an Event and validates it: Validate
// must not panic, must name a real field path when it rejects, and an event it
// accepts must keep every rule, restated here independently of validate.go.
func FuzzValidate(f *testing.F) {
	for _, tc := range validateCases() {
		b, err := proto.Marshal(tc.ev)
		if err != nil {
			continue // invalid UTF-8 does not survive the wire
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		ev := &pb.Event{}
		if err := proto.Unmarshal(data, ev); err != nil {
			return
		}
		field, reason, ok := Validate(ev, valNow, valLimits)
		f2, r2, ok2 := Validate(ev, valNow, valLimits)
		if f2 != field || r2 != reason || ok2 != ok {
			t.Fatalf("Validate is not deterministic: (%q, %q, %v) then (%q, %q, %v)", field, reason, ok, f2, r2, ok2)
		}
		if !ok {
			if reason == "" || !valFieldPathExists(field) {
				t.Fatalf("rejected with field %q, reason %q", field, reason)
			}
			return
		}
		if field != "" || reason != "" {
			t.Fatalf("accepted with field %q, reason %q", field, reason)
		}
		checkAccepted(t, ev)
	})
}

// checkAccepted fails t when an accepted event breaks a rule.
func checkAccepted(t *testing.T, ev *pb.Event) {
	t.Helper()
	str := func(name, s string, maxBytes int, required, label bool) {
		t.Helper()
		if (required && s == "") || len(s) > maxBytes || !utf8.ValidString(s) {
			t.Fatalf("accepted %s = %q", name, s)
		}
		if label && containsFunc(s, unicode.IsControl) {
			t.Fatalf("accepted label %s = %q with a control character", name, s)
		}
	}
	tokens := func(name string, n int64) {
		t.Helper()
		if n < 0 || n > MaxTokens {
			t.Fatalf("accepted %s = %d", name, n)
		}
	}
	amount := func(name string, v, maxV float64, positive bool) {
		t.Helper()
		if math.IsNaN(v) || math.IsInf(v, 0) || v < 0 || v > maxV || (positive && v == 0) {
			t.Fatalf("accepted %s = %v", name, v)
		}
	}

	str("event_id", ev.GetEventId(), DefaultMaxStringBytes, true, false)
	if ts := ev.GetTime(); ts != nil {
		if ts.CheckValid() != nil || ts.AsTime().After(valNow.Add(valLimits.MaxFutureSkew)) {
			t.Fatalf("accepted time %v", ts)
		}
	}
	str("conversation_id", ev.GetConversationId(), DefaultMaxStringBytes, false, false)
	str("agent", ev.GetAgent(), DefaultMaxStringBytes, false, false)

	switch p := ev.GetPayload().(type) {
	case *pb.Event_LlmCall:
		c := p.LlmCall
		str("provider", c.GetProvider(), DefaultMaxStringBytes, false, true)
		str("operation", c.GetOperation(), DefaultMaxStringBytes, false, true)
		str("request_model", c.GetRequestModel(), DefaultMaxStringBytes, true, true)
		str("response_model", c.GetResponseModel(), DefaultMaxStringBytes, false, true)
		str("response_id", c.GetResponseId(), DefaultMaxStringBytes, false, false)
		str("llm_service", c.GetLlmService(), DefaultMaxStringBytes, false, false)
		str("error_type", c.GetErrorType(), DefaultMaxStringBytes, false, true)
		tokens("prompt_tokens", c.GetPromptTokens())
		tokens("completion_tokens", c.GetCompletionTokens())
		tokens("cache_read_tokens", c.GetCacheReadTokens())
		tokens("cache_write_tokens", c.GetCacheWriteTokens())
		tokens("cache_write_1h_tokens", c.GetCacheWrite_1HTokens())
		tokens("reasoning_tokens", c.GetReasoningTokens())
		tokens("context_window", c.GetContextWindow())
		// Each count is at most 1e12 here, so the sum cannot overflow.
		if c.GetCacheReadTokens()+c.GetCacheWriteTokens()+c.GetCacheWrite_1HTokens() > c.GetPromptTokens() {
			t.Fatalf("accepted cache tokens above prompt_tokens: %v", c)
		}
		if c.GetReasoningTokens() > c.GetCompletionTokens() {
			t.Fatalf("accepted reasoning_tokens above completion_tokens: %v", c)
		}
		amount("latency_seconds", c.GetLatencySeconds(), MaxSeconds, false)
		amount("time_to_first_token_seconds", c.GetTimeToFirstTokenSeconds(), MaxSeconds, false)
		if c.GetLatencySeconds() > 0 && c.GetTimeToFirstTokenSeconds() > c.GetLatencySeconds() {
			t.Fatalf("accepted ttft above latency: %v", c)
		}
		if c.CostUsd != nil {
			amount("cost_usd", c.GetCostUsd(), MaxUSD, false)
		}
	case *pb.Event_AgentStatus:
		if ev.GetConversationId() == "" {
			t.Fatal("accepted agent_status without conversation_id")
		}
		if s := p.AgentStatus.GetState(); s == pb.AgentState_AGENT_STATE_UNSPECIFIED || pb.AgentState_name[int32(s)] == "" {
			t.Fatalf("accepted agent_status.state %d", s)
		}
		str("agent_status.reason", p.AgentStatus.GetReason(), MaxReasonBytes, false, false)
	case *pb.Event_Conversation:
		_, isLimit := p.Conversation.GetKind().(*pb.ConversationEvent_Limit)
		if !isLimit && ev.GetConversationId() == "" {
			t.Fatal("accepted conversation event without conversation_id")
		}
		switch k := p.Conversation.GetKind().(type) {
		case *pb.ConversationEvent_Created:
			if k.Created.MaxBudgetUsd != nil {
				amount("max_budget_usd", k.Created.GetMaxBudgetUsd(), MaxUSD, true)
			}
			if tr := k.Created.GetTrigger(); pb.ConversationTrigger_name[int32(tr)] == "" {
				t.Fatalf("accepted trigger %d", tr)
			}
		case *pb.ConversationEvent_SessionStarted:
			amount("duration_seconds", k.SessionStarted.GetDurationSeconds(), MaxSeconds, false)
		case *pb.ConversationEvent_Closed:
			if r := k.Closed.GetReason(); r == pb.CloseReason_CLOSE_REASON_UNSPECIFIED || pb.CloseReason_name[int32(r)] == "" {
				t.Fatalf("accepted close reason %d", r)
			}
		case *pb.ConversationEvent_Limit:
			if n := k.Limit.GetMaxConcurrentConversations(); n < 1 || n > MaxConcurrentConversations {
				t.Fatalf("accepted max_concurrent_conversations %d", n)
			}
		default:
			t.Fatal("accepted conversation event without kind")
		}
	case *pb.Event_RuntimeFault:
		if k := p.RuntimeFault.GetKind(); k == pb.RuntimeFaultKind_RUNTIME_FAULT_KIND_UNSPECIFIED || pb.RuntimeFaultKind_name[int32(k)] == "" {
			t.Fatalf("accepted runtime_fault.kind %d", k)
		}
	default:
		t.Fatal("accepted event without payload")
	}
}

func containsFunc(s string, f func(rune) bool) bool {
	for _, r := range s {
		if f(r) {
			return true
		}
	}
	return false
}
