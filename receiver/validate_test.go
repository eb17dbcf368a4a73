package receiver

import (
	"math"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/timestamppb"

	pb "github.com/agentmeter/agentmeter/proto/agentmeter/v1"
)

var (
	valNow    = time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)
	valLimits = Limits{MaxFutureSkew: 5 * time.Minute}
)

// testLLMEvent is a typical valid LLM call event.
func valLLMEvent() *pb.Event {
	return &pb.Event{
		EventId:        "0197a3c2-6d1e-7b4a-9f0e-3c5d2a1b8e77",
		Time:           timestamppb.New(valNow.Add(-2 * time.Second)),
		ConversationId: "c0ffee00c0ffee00c0ffee00c0ffee00",
		Agent:          "CodeActAgent",
		Payload: &pb.Event_LlmCall{LlmCall: &pb.LLMCall{
			Provider:                "anthropic",
			Operation:               "chat",
			RequestModel:            "claude-sonnet-4-5",
			ResponseModel:           "claude-sonnet-4-5-20250929",
			ResponseId:              "msg_01XFDUDYJgAACzvnptvVoYEL",
			LlmService:              "agent",
			PromptTokens:            12000,
			CompletionTokens:        800,
			CacheReadTokens:         9000,
			CacheWriteTokens:        2000,
			CacheWrite_1HTokens:     500,
			ReasoningTokens:         300,
			ContextWindow:           200000,
			LatencySeconds:          4.2,
			TimeToFirstTokenSeconds: 0.9,
			CostUsd:                 proto.Float64(0.0123),
		}},
	}
}

func valEvent(payload func(*pb.Event)) *pb.Event {
	ev := &pb.Event{EventId: "e1", ConversationId: "c1"}
	payload(ev)
	return ev
}

func valLLM(mut func(*pb.LLMCall)) *pb.Event {
	ev := valLLMEvent()
	mut(ev.GetLlmCall())
	return ev
}

func valStatus(state pb.AgentState, reason string) *pb.Event {
	return valEvent(func(ev *pb.Event) {
		ev.Payload = &pb.Event_AgentStatus{AgentStatus: &pb.AgentStatus{State: state, Reason: reason}}
	})
}

func valConvo(c *pb.ConversationEvent) *pb.Event {
	return valEvent(func(ev *pb.Event) { ev.Payload = &pb.Event_Conversation{Conversation: c} })
}

func valCreated(budget *float64, trigger pb.ConversationTrigger) *pb.Event {
	return valConvo(&pb.ConversationEvent{Kind: &pb.ConversationEvent_Created{
		Created: &pb.ConversationCreated{MaxBudgetUsd: budget, Trigger: trigger}}})
}

func valSessionStarted(seconds float64) *pb.Event {
	return valConvo(&pb.ConversationEvent{Kind: &pb.ConversationEvent_SessionStarted{
		SessionStarted: &pb.SessionStarted{Success: true, DurationSeconds: seconds}}})
}

func valClosed(reason pb.CloseReason) *pb.Event {
	return valConvo(&pb.ConversationEvent{Kind: &pb.ConversationEvent_Closed{
		Closed: &pb.ConversationClosed{Reason: reason}}})
}

func valLimit(n int64) *pb.Event {
	return valConvo(&pb.ConversationEvent{Kind: &pb.ConversationEvent_Limit{
		Limit: &pb.ConcurrencyLimit{MaxConcurrentConversations: n}}})
}

func valFault(kind pb.RuntimeFaultKind) *pb.Event {
	return valEvent(func(ev *pb.Event) {
		ev.Payload = &pb.Event_RuntimeFault{RuntimeFault: &pb.RuntimeFault{Kind: kind, ExitCode: 137}}
	})
}

// with applies mut to ev and returns it.
func valWith(ev *pb.Event, mut func(*pb.Event)) *pb.Event {
	mut(ev)
	return ev
}

type validateCase struct {
	name   string
	ev     *pb.Event
	lim    *Limits // valLimits when nil
	field  string  // "" when valid
	reason string
}

func (c validateCase) limits() Limits {
	if c.lim != nil {
		return *c.lim
	}
	return valLimits
}

// validateCases has one case per rule, valid ones too. The fuzz test seeds its
// corpus from them.
func validateCases() []validateCase {
	const badUTF8 = "a\xffb"
	long := strings.Repeat("x", 257)
	cacheSum := func(read, write, write1h, prompt string) string {
		return "cache_read_tokens (" + read + ") + cache_write_tokens (" + write +
			") + cache_write_1h_tokens (" + write1h + ") exceed prompt_tokens (" + prompt + ")"
	}
	badTime := &timestamppb.Timestamp{Seconds: 1, Nanos: -1}

	return []validateCase{
		// Valid events.
		{name: "valid typical llm call", ev: valLLMEvent()},
		{name: "valid minimal llm call", ev: &pb.Event{EventId: "e", Payload: &pb.Event_LlmCall{
			LlmCall: &pb.LLMCall{RequestModel: "gpt-4o"}}}},
		{name: "valid llm call with cost 0", ev: valLLM(func(c *pb.LLMCall) { c.CostUsd = proto.Float64(0) })},
		{name: "valid llm call with unknown ttft", ev: valLLM(func(c *pb.LLMCall) { c.TimeToFirstTokenSeconds = 0 })},
		{name: "valid ttft without latency", ev: valLLM(func(c *pb.LLMCall) { c.LatencySeconds = 0 })},
		{name: "valid ttft equal to latency", ev: valLLM(func(c *pb.LLMCall) { c.TimeToFirstTokenSeconds = c.LatencySeconds })},
		{name: "valid cache sum equal to prompt", ev: valLLM(func(c *pb.LLMCall) { c.PromptTokens = 11500 })},
		{name: "valid reasoning equal to completion", ev: valLLM(func(c *pb.LLMCall) { c.ReasoningTokens = 800 })},
		{name: "valid tokens at bound", ev: valLLM(func(c *pb.LLMCall) { c.PromptTokens, c.ContextWindow = MaxTokens, MaxTokens })},
		{name: "valid latency at bound", ev: valLLM(func(c *pb.LLMCall) { c.LatencySeconds = MaxSeconds })},
		{name: "valid cost at bound", ev: valLLM(func(c *pb.LLMCall) { c.CostUsd = proto.Float64(MaxUSD) })},
		{name: "valid non-ascii label", ev: valLLM(func(c *pb.LLMCall) { c.RequestModel = "modèle-日本" })},
		{name: "valid control character in non-label string", ev: valLLM(func(c *pb.LLMCall) { c.ResponseId = "id\twith\ttabs" })},
		{name: "valid failed call", ev: valLLM(func(c *pb.LLMCall) { c.ErrorType = "RateLimitError" })},
		{name: "valid string at default bound", ev: valWith(valLLMEvent(), func(ev *pb.Event) { ev.EventId = long[:256] })},
		{name: "valid string at custom bound", ev: valWith(valLLMEvent(), func(ev *pb.Event) { ev.EventId = long }),
			lim: &Limits{MaxStringBytes: 300, MaxFutureSkew: time.Minute}},
		{name: "valid time within skew", ev: valWith(valLLMEvent(), func(ev *pb.Event) {
			ev.Time = timestamppb.New(valNow.Add(5 * time.Minute))
		})},
		{name: "valid time far in the past", ev: valWith(valLLMEvent(), func(ev *pb.Event) { ev.Time = &timestamppb.Timestamp{} })},
		{name: "valid event without time", ev: valWith(valLLMEvent(), func(ev *pb.Event) { ev.Time = nil })},
		{name: "valid agent status", ev: valStatus(pb.AgentState_AGENT_STATE_RUNNING, "user asked to continue")},
		{name: "valid agent status reason at bound", ev: valStatus(pb.AgentState_AGENT_STATE_ERROR, strings.Repeat("r", MaxReasonBytes))},
		{name: "valid created without budget and unknown trigger", ev: valCreated(nil, pb.ConversationTrigger_CONVERSATION_TRIGGER_UNSPECIFIED)},
		{name: "valid created with budget", ev: valCreated(proto.Float64(5), pb.ConversationTrigger_CONVERSATION_TRIGGER_SLACK)},
		{name: "valid session started", ev: valSessionStarted(12.5)},
		{name: "valid closed", ev: valClosed(pb.CloseReason_CLOSE_REASON_EVICTED)},
		{name: "valid limit without conversation id", ev: valWith(valLimit(3), func(ev *pb.Event) { ev.ConversationId = "" })},
		{name: "valid limit at bound", ev: valLimit(MaxConcurrentConversations)},
		{name: "valid runtime fault without conversation id", ev: valWith(valFault(pb.RuntimeFaultKind_RUNTIME_FAULT_KIND_OOM_KILLED), func(ev *pb.Event) {
			ev.ConversationId = ""
		})},

		// A nil message in a oneof wrapper, which only a Go caller can build.
		{name: "nil llm_call", ev: valEvent(func(ev *pb.Event) { ev.Payload = &pb.Event_LlmCall{} }),
			field: "llm_call.request_model", reason: "required"},
		{name: "nil agent_status", ev: valEvent(func(ev *pb.Event) { ev.Payload = &pb.Event_AgentStatus{} }),
			field: "agent_status.state", reason: "required: must not be UNSPECIFIED (0)"},
		{name: "nil conversation", ev: valEvent(func(ev *pb.Event) { ev.Payload = &pb.Event_Conversation{} }),
			field: "conversation.kind", reason: "no kind: set one of created, session_started, closed, limit"},
		{name: "nil runtime_fault", ev: valEvent(func(ev *pb.Event) { ev.Payload = &pb.Event_RuntimeFault{} }),
			field: "runtime_fault.kind", reason: "required: must not be UNSPECIFIED (0)"},
		{name: "nil conversation.created", ev: valConvo(&pb.ConversationEvent{Kind: &pb.ConversationEvent_Created{}})},
		{name: "nil conversation.session_started", ev: valConvo(&pb.ConversationEvent{Kind: &pb.ConversationEvent_SessionStarted{}})},
		{name: "nil conversation.closed", ev: valConvo(&pb.ConversationEvent{Kind: &pb.ConversationEvent_Closed{}}),
			field: "conversation.closed.reason", reason: "required: must not be UNSPECIFIED (0)"},
		{name: "nil conversation.limit", ev: valConvo(&pb.ConversationEvent{Kind: &pb.ConversationEvent_Limit{}}),
			field: "conversation.limit.max_concurrent_conversations", reason: "must be between 1 and 1000000, got 0"},

		// event_id.
		{name: "nil event", ev: nil, field: "event_id", reason: "required"},
		{name: "event_id missing", ev: valWith(valLLMEvent(), func(ev *pb.Event) { ev.EventId = "" }),
			field: "event_id", reason: "required"},
		{name: "event_id too long", ev: valWith(valLLMEvent(), func(ev *pb.Event) { ev.EventId = long }),
			field: "event_id", reason: "is 257 bytes, more than the 256 allowed"},
		{name: "event_id too long for custom bound", ev: valWith(valLLMEvent(), func(ev *pb.Event) { ev.EventId = "123456789" }),
			lim: &Limits{MaxStringBytes: 8, MaxFutureSkew: time.Minute}, field: "event_id", reason: "is 9 bytes, more than the 8 allowed"},
		{name: "event_id not utf-8", ev: valWith(valLLMEvent(), func(ev *pb.Event) { ev.EventId = badUTF8 }),
			field: "event_id", reason: "is not valid utf-8"},

		// time.
		{name: "time invalid", ev: valWith(valLLMEvent(), func(ev *pb.Event) { ev.Time = badTime }),
			field: "time", reason: "is not a valid timestamp: " + badTime.CheckValid().Error()},
		{name: "time too far in the future", ev: valWith(valLLMEvent(), func(ev *pb.Event) {
			ev.Time = timestamppb.New(valNow.Add(2 * time.Hour))
		}), field: "time", reason: "is 2h0m0s in the future, more than the 5m0s allowed"},
		{name: "time in the future with zero skew", ev: valWith(valLLMEvent(), func(ev *pb.Event) {
			ev.Time = timestamppb.New(valNow.Add(time.Millisecond))
		}), lim: &Limits{}, field: "time", reason: "is 1ms in the future, more than the 0s allowed"},

		// conversation_id and agent.
		{name: "conversation_id too long", ev: valWith(valLLMEvent(), func(ev *pb.Event) { ev.ConversationId = long }),
			field: "conversation_id", reason: "is 257 bytes, more than the 256 allowed"},
		{name: "conversation_id missing for agent_status", ev: valWith(valStatus(pb.AgentState_AGENT_STATE_PAUSED, ""), func(ev *pb.Event) {
			ev.ConversationId = ""
		}), field: "conversation_id", reason: "required for agent_status"},
		{name: "conversation_id missing for conversation.closed", ev: valWith(valClosed(pb.CloseReason_CLOSE_REASON_IDLE), func(ev *pb.Event) {
			ev.ConversationId = ""
		}), field: "conversation_id", reason: "required for conversation events other than limit"},
		{name: "agent not utf-8", ev: valWith(valLLMEvent(), func(ev *pb.Event) { ev.Agent = badUTF8 }),
			field: "agent", reason: "is not valid utf-8"},

		// payload.
		{name: "payload missing", ev: &pb.Event{EventId: "e"},
			field: "payload", reason: "no payload: set one of llm_call, agent_status, conversation, runtime_fault"},

		// llm_call strings.
		{name: "provider with newline", ev: valLLM(func(c *pb.LLMCall) { c.Provider = "open\nai" }),
			field: "llm_call.provider", reason: "contains control character U+000A at byte 4: metric labels must be printable"},
		{name: "provider too long", ev: valLLM(func(c *pb.LLMCall) { c.Provider = long }),
			field: "llm_call.provider", reason: "is 257 bytes, more than the 256 allowed"},
		{name: "operation with DEL", ev: valLLM(func(c *pb.LLMCall) { c.Operation = "chat\x7f" }),
			field: "llm_call.operation", reason: "contains control character U+007F at byte 4: metric labels must be printable"},
		{name: "request_model missing", ev: valLLM(func(c *pb.LLMCall) { c.RequestModel = "" }),
			field: "llm_call.request_model", reason: "required"},
		{name: "request_model with C1 control", ev: valLLM(func(c *pb.LLMCall) { c.RequestModel = "gpt\u0085" }),
			field: "llm_call.request_model", reason: "contains control character U+0085 at byte 3: metric labels must be printable"},
		{name: "request_model not utf-8", ev: valLLM(func(c *pb.LLMCall) { c.RequestModel = badUTF8 }),
			field: "llm_call.request_model", reason: "is not valid utf-8"},
		{name: "response_model with NUL", ev: valLLM(func(c *pb.LLMCall) { c.ResponseModel = "\x00" }),
			field: "llm_call.response_model", reason: "contains control character U+0000 at byte 0: metric labels must be printable"},
		{name: "response_id too long", ev: valLLM(func(c *pb.LLMCall) { c.ResponseId = long }),
			field: "llm_call.response_id", reason: "is 257 bytes, more than the 256 allowed"},
		{name: "llm_service not utf-8", ev: valLLM(func(c *pb.LLMCall) { c.LlmService = badUTF8 }),
			field: "llm_call.llm_service", reason: "is not valid utf-8"},
		{name: "error_type with tab", ev: valLLM(func(c *pb.LLMCall) { c.ErrorType = "Rate\tLimit" }),
			field: "llm_call.error_type", reason: "contains control character U+0009 at byte 4: metric labels must be printable"},

		// llm_call numbers.
		{name: "prompt_tokens negative", ev: valLLM(func(c *pb.LLMCall) { c.PromptTokens = -5 }),
			field: "llm_call.prompt_tokens", reason: "must be >= 0, got -5"},
		{name: "completion_tokens too large", ev: valLLM(func(c *pb.LLMCall) { c.CompletionTokens = MaxTokens + 1 }),
			field: "llm_call.completion_tokens", reason: "must be <= 1000000000000, got 1000000000001"},
		{name: "cache_read_tokens negative", ev: valLLM(func(c *pb.LLMCall) { c.CacheReadTokens = -1 }),
			field: "llm_call.cache_read_tokens", reason: "must be >= 0, got -1"},
		{name: "cache_read_tokens exceed prompt", ev: valLLM(func(c *pb.LLMCall) {
			c.PromptTokens, c.CacheReadTokens, c.CacheWriteTokens, c.CacheWrite_1HTokens = 800, 900, 0, 0
		}), field: "llm_call.cache_read_tokens", reason: cacheSum("900", "0", "0", "800")},
		{name: "cache_write_tokens negative", ev: valLLM(func(c *pb.LLMCall) { c.CacheWriteTokens = -7 }),
			field: "llm_call.cache_write_tokens", reason: "must be >= 0, got -7"},
		{name: "cache read+write exceed prompt", ev: valLLM(func(c *pb.LLMCall) { c.PromptTokens = 10000 }),
			field: "llm_call.cache_write_tokens", reason: cacheSum("9000", "2000", "500", "10000")},
		{name: "reasoning_tokens negative", ev: valLLM(func(c *pb.LLMCall) { c.ReasoningTokens = -1 }),
			field: "llm_call.reasoning_tokens", reason: "must be >= 0, got -1"},
		{name: "reasoning_tokens exceed completion", ev: valLLM(func(c *pb.LLMCall) { c.ReasoningTokens = 801 }),
			field: "llm_call.reasoning_tokens", reason: "reasoning_tokens (801) exceed completion_tokens (800)"},
		{name: "context_window negative", ev: valLLM(func(c *pb.LLMCall) { c.ContextWindow = -200000 }),
			field: "llm_call.context_window", reason: "must be >= 0, got -200000"},
		{name: "latency_seconds NaN", ev: valLLM(func(c *pb.LLMCall) { c.LatencySeconds = math.NaN() }),
			field: "llm_call.latency_seconds", reason: "must be finite, got NaN"},
		{name: "latency_seconds infinite", ev: valLLM(func(c *pb.LLMCall) { c.LatencySeconds = math.Inf(1) }),
			field: "llm_call.latency_seconds", reason: "must be finite, got +Inf"},
		{name: "latency_seconds negative", ev: valLLM(func(c *pb.LLMCall) { c.LatencySeconds = -0.5 }),
			field: "llm_call.latency_seconds", reason: "must be >= 0, got -0.5 s"},
		{name: "latency_seconds over a day", ev: valLLM(func(c *pb.LLMCall) { c.LatencySeconds = 90000 }),
			field: "llm_call.latency_seconds", reason: "must be <= 86400 s, got 90000 s"},
		{name: "time_to_first_token_seconds negative", ev: valLLM(func(c *pb.LLMCall) { c.TimeToFirstTokenSeconds = -1 }),
			field: "llm_call.time_to_first_token_seconds", reason: "must be >= 0, got -1 s"},
		{name: "time_to_first_token_seconds exceeds latency", ev: valLLM(func(c *pb.LLMCall) { c.TimeToFirstTokenSeconds = 5 }),
			field: "llm_call.time_to_first_token_seconds", reason: "time_to_first_token_seconds (5) exceeds latency_seconds (4.2)"},
		{name: "cost_usd negative", ev: valLLM(func(c *pb.LLMCall) { c.CostUsd = proto.Float64(-0.01) }),
			field: "llm_call.cost_usd", reason: "must be >= 0, got -0.01 USD"},
		{name: "cost_usd NaN", ev: valLLM(func(c *pb.LLMCall) { c.CostUsd = proto.Float64(math.NaN()) }),
			field: "llm_call.cost_usd", reason: "must be finite, got NaN"},
		{name: "cost_usd too large", ev: valLLM(func(c *pb.LLMCall) { c.CostUsd = proto.Float64(2e6) }),
			field: "llm_call.cost_usd", reason: "must be <= 1e+06 USD, got 2e+06 USD"},
		{name: "cache_write_1h_tokens negative", ev: valLLM(func(c *pb.LLMCall) { c.CacheWrite_1HTokens = -3 }),
			field: "llm_call.cache_write_1h_tokens", reason: "must be >= 0, got -3"},
		{name: "cache sum with 1h exceeds prompt", ev: valLLM(func(c *pb.LLMCall) { c.PromptTokens = 11499 }),
			field: "llm_call.cache_write_1h_tokens", reason: cacheSum("9000", "2000", "500", "11499")},
		{name: "cache sum not exceeded thanks to a negative count", ev: valLLM(func(c *pb.LLMCall) {
			c.PromptTokens, c.CacheReadTokens, c.CacheWriteTokens, c.CacheWrite_1HTokens = 800, 900, 0, -200
		}), field: "llm_call.cache_write_1h_tokens", reason: "must be >= 0, got -200"},
		{name: "cache sum overflowing int64", ev: valLLM(func(c *pb.LLMCall) {
			c.PromptTokens, c.CacheReadTokens, c.CacheWriteTokens, c.CacheWrite_1HTokens = 800, 100, 100, math.MaxInt64
		}), field: "llm_call.cache_write_1h_tokens", reason: "must be <= 1000000000000, got 9223372036854775807"},

		// agent_status.
		{name: "agent_status state unspecified", ev: valStatus(pb.AgentState_AGENT_STATE_UNSPECIFIED, ""),
			field: "agent_status.state", reason: "required: must not be UNSPECIFIED (0)"},
		{name: "agent_status state unknown", ev: valStatus(pb.AgentState(99), ""),
			field: "agent_status.state", reason: "unknown value 99"},
		{name: "agent_status reason too long", ev: valStatus(pb.AgentState_AGENT_STATE_ERROR, strings.Repeat("r", MaxReasonBytes+1)),
			field: "agent_status.reason", reason: "is 1025 bytes, more than the 1024 allowed"},
		{name: "agent_status reason not utf-8", ev: valStatus(pb.AgentState_AGENT_STATE_ERROR, badUTF8),
			field: "agent_status.reason", reason: "is not valid utf-8"},

		// conversation.
		{name: "conversation kind missing", ev: valConvo(&pb.ConversationEvent{}),
			field: "conversation.kind", reason: "no kind: set one of created, session_started, closed, limit"},
		{name: "created max_budget_usd zero", ev: valCreated(proto.Float64(0), 0),
			field: "conversation.created.max_budget_usd", reason: "must be > 0, got 0 USD"},
		{name: "created max_budget_usd infinite", ev: valCreated(proto.Float64(math.Inf(1)), 0),
			field: "conversation.created.max_budget_usd", reason: "must be finite, got +Inf"},
		{name: "created max_budget_usd too large", ev: valCreated(proto.Float64(1e9), 0),
			field: "conversation.created.max_budget_usd", reason: "must be <= 1e+06 USD, got 1e+09 USD"},
		{name: "created trigger unknown", ev: valCreated(nil, pb.ConversationTrigger(42)),
			field: "conversation.created.trigger", reason: "unknown value 42"},
		{name: "session_started duration negative", ev: valSessionStarted(-1),
			field: "conversation.session_started.duration_seconds", reason: "must be >= 0, got -1 s"},
		{name: "session_started duration NaN", ev: valSessionStarted(math.NaN()),
			field: "conversation.session_started.duration_seconds", reason: "must be finite, got NaN"},
		{name: "closed reason unspecified", ev: valClosed(pb.CloseReason_CLOSE_REASON_UNSPECIFIED),
			field: "conversation.closed.reason", reason: "required: must not be UNSPECIFIED (0)"},
		{name: "closed reason unknown", ev: valClosed(pb.CloseReason(-1)),
			field: "conversation.closed.reason", reason: "unknown value -1"},
		{name: "limit zero", ev: valLimit(0),
			field: "conversation.limit.max_concurrent_conversations", reason: "must be between 1 and 1000000, got 0"},
		{name: "limit too large", ev: valLimit(MaxConcurrentConversations + 1),
			field: "conversation.limit.max_concurrent_conversations", reason: "must be between 1 and 1000000, got 1000001"},

		// runtime_fault.
		{name: "runtime_fault kind unspecified", ev: valFault(pb.RuntimeFaultKind_RUNTIME_FAULT_KIND_UNSPECIFIED),
			field: "runtime_fault.kind", reason: "required: must not be UNSPECIFIED (0)"},
		{name: "runtime_fault kind unknown", ev: valFault(pb.RuntimeFaultKind(5)),
			field: "runtime_fault.kind", reason: "unknown value 5"},
	}
}

func TestValidate(t *testing.T) {
	for _, tc := range validateCases() {
		t.Run(tc.name, func(t *testing.T) {
			field, reason, ok := Validate(tc.ev, valNow, tc.limits())
			if ok != (tc.field == "") || field != tc.field || reason != tc.reason {
				t.Errorf("Validate() = (%q, %q, %v), want (%q, %q, %v)", field, reason, ok, tc.field, tc.reason, tc.field == "")
			}
		})
	}
}

// TestValidateFirstRuleBroken checks that when an event breaks several rules,
// the one named is the first in field-number order.
func TestValidateFirstRuleBroken(t *testing.T) {
	tests := []struct {
		name  string
		ev    *pb.Event
		field string
	}{
		{"event_id before payload", &pb.Event{}, "event_id"},
		{"time before conversation_id and state", valWith(valStatus(0, "\xff"), func(ev *pb.Event) {
			ev.ConversationId = ""
			ev.Time = timestamppb.New(valNow.Add(time.Hour))
		}), "time"},
		{"conversation_id before agent and payload", valWith(valStatus(99, ""), func(ev *pb.Event) {
			ev.ConversationId = ""
			ev.Agent = "\xff"
		}), "conversation_id"},
		{"agent before payload", valWith(&pb.Event{EventId: "e"}, func(ev *pb.Event) { ev.Agent = "\xff" }), "agent"},
		{"request_model before tokens", valLLM(func(c *pb.LLMCall) {
			c.RequestModel = ""
			c.PromptTokens = -1
		}), "llm_call.request_model"},
		{"completion before cache sum", valLLM(func(c *pb.LLMCall) {
			c.CompletionTokens = -1
			c.CacheReadTokens = 1 << 40
		}), "llm_call.completion_tokens"},
		{"reasoning before latency, cost and cache_write_1h", valLLM(func(c *pb.LLMCall) {
			c.ReasoningTokens = 10000
			c.LatencySeconds = math.NaN()
			c.CostUsd = proto.Float64(-1)
			c.CacheWrite_1HTokens = -1
		}), "llm_call.reasoning_tokens"},
		{"error_type before cache_write_1h sum", valLLM(func(c *pb.LLMCall) {
			c.ErrorType = "\n"
			c.CacheWrite_1HTokens = 1 << 30
		}), "llm_call.error_type"},
		{"max_budget_usd before trigger", valCreated(proto.Float64(-1), 77), "conversation.created.max_budget_usd"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			field, reason, ok := Validate(tt.ev, valNow, valLimits)
			if ok || field != tt.field {
				t.Errorf("Validate() = (%q, %q, %v), want field %q", field, reason, ok, tt.field)
			}
		})
	}
}

// TestValidateFieldPaths checks that every field path Validate names is a
// path of proto field (or oneof) names from the Event.
func TestValidateFieldPaths(t *testing.T) {
	for _, tc := range validateCases() {
		if tc.field == "" {
			continue
		}
		if !valFieldPathExists(tc.field) {
			t.Errorf("%s: %q is not a field path of agentmeter.v1.Event", tc.name, tc.field)
		}
	}
}

func valFieldPathExists(path string) bool {
	md := (&pb.Event{}).ProtoReflect().Descriptor()
	names := strings.Split(path, ".")
	for i, name := range names {
		last := i == len(names)-1
		if fd := md.Fields().ByName(protoreflect.Name(name)); fd != nil {
			if last {
				return true
			}
			if fd.Message() == nil {
				return false
			}
			md = fd.Message()
			continue
		}
		return last && md.Oneofs().ByName(protoreflect.Name(name)) != nil
	}
	return false
}

// TestValidateDoesNotAllocate checks every valid case, not only the
// benchmark's event.
func TestValidateDoesNotAllocate(t *testing.T) {
	for _, tc := range validateCases() {
		if tc.field != "" {
			continue
		}
		lim := tc.limits()
		if n := testing.AllocsPerRun(100, func() {
			if _, _, ok := Validate(tc.ev, valNow, lim); !ok {
				t.Fatalf("%s: invalid", tc.name)
			}
		}); n != 0 {
			t.Errorf("%s: %v allocs per Validate, want 0", tc.name, n)
		}
	}
}

// TestASCIIOnly checks the word-at-a-time scan against a byte-at-a-time one,
// for every byte value at every position of strings up to 20 bytes long.
func TestASCIIOnly(t *testing.T) {
	for n := 1; n <= 20; n++ {
		for pos := range n {
			for c := range 256 {
				b := []byte(strings.Repeat("a", n))
				b[pos] = byte(c)
				s := string(b)
				if got, want := asciiOnly(s, false), c < 0x80; got != want {
					t.Errorf("asciiOnly(%q, false) = %v, want %v", s, got, want)
				}
				if got, want := asciiOnly(s, true), c >= 0x20 && c < 0x7f; got != want {
					t.Errorf("asciiOnly(%q, true) = %v, want %v", s, got, want)
				}
			}
		}
	}
	if !asciiOnly("", true) {
		t.Error(`asciiOnly("", true) = false, want true`)
	}
}

func TestValidateAgentIsALabel(t *testing.T) {
	ev := &pb.Event{EventId: "e", Agent: "Code\nAct", Payload: &pb.Event_LlmCall{LlmCall: &pb.LLMCall{RequestModel: "m"}}}
	field, reason, ok := Validate(ev, time.Now(), Limits{MaxFutureSkew: time.Minute})
	if ok || field != "agent" || !strings.Contains(reason, "control character") {
		t.Fatalf("Validate = %q, %q, %v; want agent rejected for a control character", field, reason, ok)
	}
}
