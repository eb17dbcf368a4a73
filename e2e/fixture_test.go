package e2e

import (
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	pb "github.com/agentmeter/agentmeter/proto/agentmeter/v1"
)

// call describes one LLM call event.
type call struct {
	id, conv, agent                string
	provider, model, respModel     string
	errorType                      string
	prompt, completion             int64
	cacheRead, cacheWrite, write1h int64
	reasoning, contextWindow       int64
	latency, ttft                  float64
	cost                           *float64 // nil: not reported
	at                             time.Time
}

func (c call) event() *pb.Event {
	ev := &pb.Event{
		EventId:        c.id,
		ConversationId: c.conv,
		Agent:          c.agent,
		Payload: &pb.Event_LlmCall{LlmCall: &pb.LLMCall{
			Provider:                c.provider,
			RequestModel:            c.model,
			ResponseModel:           c.respModel,
			PromptTokens:            c.prompt,
			CompletionTokens:        c.completion,
			CacheReadTokens:         c.cacheRead,
			CacheWriteTokens:        c.cacheWrite,
			CacheWrite_1HTokens:     c.write1h,
			ReasoningTokens:         c.reasoning,
			ContextWindow:           c.contextWindow,
			LatencySeconds:          c.latency,
			TimeToFirstTokenSeconds: c.ttft,
			CostUsd:                 c.cost,
			ErrorType:               c.errorType,
		}},
	}
	if !c.at.IsZero() {
		ev.Time = timestamppb.New(c.at)
	}
	return ev
}

func statusEvent(id, conv, agent string, state pb.AgentState) *pb.Event {
	return &pb.Event{
		EventId:        id,
		ConversationId: conv,
		Agent:          agent,
		Payload:        &pb.Event_AgentStatus{AgentStatus: &pb.AgentStatus{State: state}},
	}
}

// simpleCall is a successful call with only token counts set.
func simpleCall(id, model string, prompt, completion int64) *pb.Event {
	return call{id: id, conv: "conv-" + model, agent: "E2EAgent", provider: "openai",
		model: model, respModel: model, prompt: prompt, completion: completion, latency: 0.5}.event()
}

const (
	codeAct  = "CodeActAgent"
	browsing = "BrowsingAgent"
	// Models nobody prices: a call to them without a reported cost has no
	// cost, whatever price table the collector carries.
	unpricedModel = "e2e-unpriced-model"
	failingModel  = "e2e-failing-model"
)

// The fixture: nine LLM calls (two failed, two without a reported cost),
// eight status events over two conversations and two agents, one duplicate
// and one invalid event. unaryBatch goes through Record, streamBatches
// through RecordStream (or Record, one call each).
//
// Expected totals, worked out by hand from the table below:
//
//	call  agent     model               in     out   cr     cw+1h  reas  lat   ttft  ctx     cost
//	L1    codeAct   gpt-4o              1000   200   300    100    0     1.5   0.25  128000  0.0123
//	L2    codeAct   claude-sonnet-4-5   5000   800   4000   500+200 0    4.0   0.5   200000  0.0415
//	L3    codeAct   o3-mini             2000   900   0      0      600   6.2   -     -       0.0045
//	L4    codeAct   e2e-unpriced-model  300    50    0      0      0     0.7   -     -       absent
//	F1    codeAct   e2e-failing-model   0      0     -      -      -     0.05  RateLimitError, absent
//	L5    browsing  claude-opus-4-1     12000  3000  10000  0      1000  20.5  2.0   200000  0.25
//	L6    browsing  gpt-4o              400    100   0      0      0     0.9   -     -       0.0011
//	L7    codeAct   gpt-4o              600    150   200    0      0     1.1   0.2   -       0.0077
//	F2    browsing  e2e-failing-model   0      0     -      -      -     30.0  timeout, absent
var (
	fixtureTokens = map[string]float64{
		"input":       21300,
		"output":      5200,
		"cache_read":  14500,
		"cache_write": 800, // 5-minute and 1-hour cache writes alike
		"reasoning":   1600,
	}
	fixtureCost = 0.0123 + 0.0415 + 0.0045 + 0.25 + 0.0011 + 0.0077 // 0.3171
	// Successful calls L1-L7.
	fixtureCalls      = 7
	fixtureLatencySum = 1.5 + 4.0 + 6.2 + 0.7 + 20.5 + 0.9 + 1.1 // 34.9
	fixtureTTFTCount  = 4
	fixtureTTFTSum    = 0.25 + 0.5 + 2.0 + 0.2
	fixtureCtxCount   = 3
	fixtureCtxSum     = 1000.0/128000 + 5000.0/200000 + 12000.0/200000
	// Transitions by agent and state. S3 repeats conv-1's state: no transition.
	fixtureTransitions = map[[2]string]float64{
		{codeAct, "loading"}:              1,
		{codeAct, "running"}:              2,
		{codeAct, "awaiting_user_input"}:  1,
		{codeAct, "error"}:                1,
		{browsing, "running"}:             1,
		{browsing, "awaiting_user_input"}: 1,
	}
	// Conversations in each state at the end: conv-1 in error, conv-2
	// awaiting user input.
	fixtureConversations = map[[2]string]float64{
		{codeAct, "error"}:                1,
		{codeAct, "running"}:              0,
		{codeAct, "loading"}:              0,
		{codeAct, "awaiting_user_input"}:  0,
		{browsing, "awaiting_user_input"}: 1,
		{browsing, "running"}:             0,
	}
)

// fixtureResponses are the expected answers to unaryBatch and then to each
// of streamBatches.
var fixtureResponses = []*pb.RecordResponse{
	{Accepted: 7},
	{Accepted: 2},
	{Accepted: 4},
	{Accepted: 4, Duplicates: 1, Rejected: []*pb.Rejection{{Index: 5, EventId: "a-invalid-1", Field: "llm_call.request_model"}}},
}

func fixture(now time.Time) (unaryBatch []*pb.Event, streamBatches [][]*pb.Event) {
	l1 := call{id: "a-L1", conv: "conv-1", agent: codeAct, provider: "openai", model: "gpt-4o", respModel: "gpt-4o-2024-08-06",
		prompt: 1000, completion: 200, cacheRead: 300, cacheWrite: 100, contextWindow: 128000,
		latency: 1.5, ttft: 0.25, cost: proto.Float64(0.0123), at: now.Add(-3 * time.Second)}
	l2 := call{id: "a-L2", conv: "conv-1", agent: codeAct, provider: "anthropic", model: "claude-sonnet-4-5", respModel: "claude-sonnet-4-5-20250929",
		prompt: 5000, completion: 800, cacheRead: 4000, cacheWrite: 500, write1h: 200, contextWindow: 200000,
		latency: 4.0, ttft: 0.5, cost: proto.Float64(0.0415), at: now.Add(-2 * time.Second)}
	l3 := call{id: "a-L3", conv: "conv-1", agent: codeAct, provider: "openai", model: "o3-mini", respModel: "o3-mini",
		prompt: 2000, completion: 900, reasoning: 600, latency: 6.2, cost: proto.Float64(0.0045)}
	l4 := call{id: "a-L4", conv: "conv-1", agent: codeAct, provider: "e2e-provider", model: unpricedModel, respModel: unpricedModel,
		prompt: 300, completion: 50, latency: 0.7}
	f1 := call{id: "a-F1", conv: "conv-1", agent: codeAct, provider: "openai", model: failingModel,
		errorType: "RateLimitError", latency: 0.05}
	l5 := call{id: "a-L5", conv: "conv-2", agent: browsing, provider: "anthropic", model: "claude-opus-4-1", respModel: "claude-opus-4-1",
		prompt: 12000, completion: 3000, cacheRead: 10000, reasoning: 1000, contextWindow: 200000,
		latency: 20.5, ttft: 2.0, cost: proto.Float64(0.25)}
	l6 := call{id: "a-L6", conv: "conv-2", agent: browsing, provider: "openai", model: "gpt-4o", respModel: "gpt-4o-2024-08-06",
		prompt: 400, completion: 100, latency: 0.9, cost: proto.Float64(0.0011)}
	l7 := call{id: "a-L7", conv: "conv-1", agent: codeAct, provider: "openai", model: "gpt-4o", respModel: "gpt-4o-2024-08-06",
		prompt: 600, completion: 150, cacheRead: 200, latency: 1.1, ttft: 0.2, cost: proto.Float64(0.0077)}
	f2 := call{id: "a-F2", conv: "conv-2", agent: browsing, provider: "openai", model: failingModel,
		errorType: "timeout", latency: 30.0}
	invalid := call{id: "a-invalid-1", conv: "conv-1", agent: codeAct, provider: "openai", prompt: 10, latency: 0.1} // no request_model

	const (
		loading  = pb.AgentState_AGENT_STATE_LOADING
		running  = pb.AgentState_AGENT_STATE_RUNNING
		awaiting = pb.AgentState_AGENT_STATE_AWAITING_USER_INPUT
		failed   = pb.AgentState_AGENT_STATE_ERROR
	)
	unaryBatch = []*pb.Event{
		l1.event(), l2.event(), l3.event(), l4.event(), f1.event(),
		statusEvent("a-S1", "conv-1", codeAct, loading),
		statusEvent("a-S2", "conv-1", codeAct, running),
	}
	streamBatches = [][]*pb.Event{
		{l5.event(), statusEvent("a-S3", "conv-1", codeAct, running)},
		{l6.event(), statusEvent("a-S4", "conv-1", codeAct, awaiting), statusEvent("a-S5", "conv-2", browsing, running), l7.event()},
		{
			statusEvent("a-S6", "conv-1", codeAct, running),
			f2.event(),
			statusEvent("a-S7", "conv-2", browsing, awaiting),
			statusEvent("a-S8", "conv-1", codeAct, failed),
			l1.event(), // a retry: duplicate
			invalid.event(),
		},
	}
	return unaryBatch, streamBatches
}
