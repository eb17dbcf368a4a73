package processor

import (
	"context"
	"math"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/agentmeter/agentmeter/catalog"
	"github.com/agentmeter/agentmeter/pricing"
	pb "github.com/agentmeter/agentmeter/proto/agentmeter/v1"
)

func created(id, conv string, budget *float64) *pb.Event {
	return &pb.Event{EventId: id, ConversationId: conv, Agent: "CodeActAgent", Payload: &pb.Event_Conversation{
		Conversation: &pb.ConversationEvent{Kind: &pb.ConversationEvent_Created{Created: &pb.ConversationCreated{
			MaxBudgetUsd: budget, Trigger: pb.ConversationTrigger_CONVERSATION_TRIGGER_GUI}}}}}
}

func closed(id, conv string, reason pb.CloseReason) *pb.Event {
	return &pb.Event{EventId: id, ConversationId: conv, Payload: &pb.Event_Conversation{
		Conversation: &pb.ConversationEvent{Kind: &pb.ConversationEvent_Closed{Closed: &pb.ConversationClosed{Reason: reason}}}}}
}

// fixedPricer prices every model of provider "priced" at $1 per input
// token and $2 per output token, and saves $0.5 per cache read.
var fixedPricer = PricerFunc(func(provider, _ string, _ time.Time, u pricing.Usage) (float64, float64, bool) {
	if provider != "priced" {
		return 0, 0, false
	}
	return float64(u.Prompt) + 2*float64(u.Completion), 0.5 * float64(u.CacheRead), true
})

func newLedgerHarness(t *testing.T, cfg Config) *harness {
	t.Helper()
	h := newHarness(t, cfg)
	h.p.pricer = fixedPricer
	return h
}

func results(h *harness, events ...*pb.Event) []Result {
	res := make([]Result, len(events))
	h.p.Consume(context.Background(), events, h.now, res)
	return res
}

func TestLedger(t *testing.T) {
	h := newLedgerHarness(t, Config{ClosedRetention: time.Minute})
	small := func(cost float64, service string) func(*pb.LLMCall) {
		return func(c *pb.LLMCall) {
			c.PromptTokens, c.CompletionTokens, c.CacheReadTokens, c.CacheWriteTokens, c.ReasoningTokens = 100, 10, 40, 0, 0
			c.CostUsd, c.LlmService = proto.Float64(cost), service
		}
	}
	res := results(h,
		created("c", "conv", proto.Float64(1.0)),
		llm("1", "conv", small(0.3, "agent")),
		llm("2", "conv", small(0.25, "condenser")), // 0.55: crosses 50%
		llm("3", "conv", func(c *pb.LLMCall) { // priced by the table: 5 + 2*1 = 7 USD, crosses 80% and 100%
			small(0, "agent")(c)
			c.CostUsd, c.Provider, c.PromptTokens, c.CompletionTokens, c.CacheReadTokens, c.ContextWindow = nil, "priced", 5, 1, 2, 100
		}),
		llm("4", "conv", func(c *pb.LLMCall) { // unpriced: no cost, unknown provider
			small(0, "agent")(c)
			c.CostUsd, c.Provider, c.ErrorType = nil, "nobody", "rate_limit"
		}),
		status("5", "conv", pb.AgentState_AGENT_STATE_RUNNING),
		created("6", "conv", nil), // second created for a live conversation
	)
	if res[6].Outcome != Rejected || res[6].Field != "conversation.created" {
		t.Fatalf("second created: %+v, want rejected on conversation.created", res[6])
	}
	for i, r := range res[:6] {
		if r.Outcome != Accepted {
			t.Fatalf("event %d: %+v, want accepted", i, r)
		}
	}
	u, ok := h.p.Usage("conv")
	if !ok {
		t.Fatal("conversation not tracked")
	}
	if math.Abs(u.CostUsd-7.55) > 1e-9 || math.Abs(u.ReportedCostUsd-0.55) > 1e-9 || u.ComputedCostUsd != 7 {
		t.Errorf("cost %v (reported %v, computed %v), want 7.55 (0.55, 7)", u.CostUsd, u.ReportedCostUsd, u.ComputedCostUsd)
	}
	if u.UnpricedCalls != 1 || u.Calls != 4 || u.FailedCalls != 1 {
		t.Errorf("unpriced/calls/failed = %d/%d/%d, want 1/4/1", u.UnpricedCalls, u.Calls, u.FailedCalls)
	}
	if tk := u.Tokens; tk.Input != 305 || tk.Output != 31 || tk.CacheRead != 122 {
		t.Errorf("tokens = %v, want input 305, output 31, cache_read 122", tk)
	}
	// per_turn_token per service: the condenser did not overwrite the agent's.
	perTurn := map[string]int64{}
	for _, pt := range u.PerTurnTokens {
		perTurn[pt.LlmService] = pt.Tokens
	}
	if perTurn["agent"] != 110 || perTurn["condenser"] != 110 || len(perTurn) != 2 {
		t.Errorf("per turn = %v", perTurn)
	}
	if u.ContextWindow != 200_000 {
		t.Errorf("context window = %d, want the max seen, 200000", u.ContextWindow)
	}
	if u.GetMaxBudgetUsd() != 1 || !u.BudgetExceeded || math.Abs(u.GetRemainingUsd()+6.55) > 1e-9 {
		t.Errorf("budget %v exceeded %v remaining %v", u.GetMaxBudgetUsd(), u.BudgetExceeded, u.GetRemainingUsd())
	}
	if u.State != pb.AgentState_AGENT_STATE_RUNNING || u.Trigger != pb.ConversationTrigger_CONVERSATION_TRIGGER_GUI {
		t.Errorf("state %v trigger %v", u.State, u.Trigger)
	}
	for _, th := range []string{"50", "80", "100"} {
		if got := h.sum(catalog.BudgetCrossings.Name, map[string]string{"threshold": th}); got != 1 {
			t.Errorf("crossings of %s%% = %v, want 1", th, got)
		}
	}
	if got := h.sum(catalog.UnpricedCalls.Name, map[string]string{"gen_ai.request.model": "claude-sonnet-4"}); got != 1 {
		t.Errorf("unpriced calls = %v, want 1", got)
	}
	if got := h.sum(catalog.LLMCost.Name, map[string]string{"cost_source": "computed"}); got != 7 {
		t.Errorf("computed cost = %v, want 7", got)
	}
	if got := h.sum(catalog.CacheSavings.Name, nil); got != 1 {
		t.Errorf("cache savings = %v, want 1", got)
	}

	// Close: cost and tokens observed once, the conversation leaves the
	// state gauge and the active gauge, a second close is rejected.
	res = results(h, closed("7", "conv", pb.CloseReason_CLOSE_REASON_EVICTED), closed("8", "conv", pb.CloseReason_CLOSE_REASON_USER))
	if res[0].Outcome != Accepted || res[1].Outcome != Rejected {
		t.Fatalf("close results %+v", res)
	}
	if n, s := h.hist(catalog.ConversationCost.Name, nil); n != 1 || math.Abs(s-7.55) > 1e-9 {
		t.Errorf("conversation cost count/sum = %d/%v, want 1/7.55", n, s)
	}
	if got := h.sum(catalog.ConversationsClosed.Name, map[string]string{"reason": "evicted"}); got != 1 {
		t.Errorf("closed{evicted} = %v", got)
	}
	if got := h.sum(catalog.AgentConversations.Name, map[string]string{"agent_state": "running"}); got != 0 {
		t.Errorf("closed conversation still in the state gauge: %v", got)
	}
	if got := h.sum(catalog.ConversationsActive.Name, nil); got != 0 {
		t.Errorf("active = %v, want 0", got)
	}
	// Still queryable within closed_retention, gone after it.
	h.p.Sweep(h.now.Add(59 * time.Second))
	if u, ok := h.p.Usage("conv"); !ok || !u.Closed {
		t.Fatalf("closed conversation not queryable within retention: %v %v", u, ok)
	}
	h.p.Sweep(h.now.Add(61 * time.Second))
	if _, ok := h.p.Usage("conv"); ok {
		t.Fatal("closed conversation still tracked after retention")
	}
	if got := h.sum(catalog.ConversationsEvicted.Name, map[string]string{"reason": "closed"}); got != 1 {
		t.Errorf("evicted{closed} = %v, want 1", got)
	}
}

func TestDefaultBudget(t *testing.T) {
	h := newLedgerHarness(t, Config{DefaultMaxBudgetUSD: proto.Float64(0.02)})
	results(h, llm("1", "conv", nil)) // 0.0123 of 0.02: 61%
	u, _ := h.p.Usage("conv")
	if u.GetMaxBudgetUsd() != 0.02 || u.BudgetExceeded {
		t.Errorf("budget %v exceeded %v", u.GetMaxBudgetUsd(), u.BudgetExceeded)
	}
	if got := h.sum(catalog.BudgetCrossings.Name, nil); got != 1 {
		t.Errorf("crossings = %v, want 1 (50%%)", got)
	}
	// A created event that names a budget overrides the default.
	results(h, created("2", "conv", proto.Float64(10)))
	if u, _ := h.p.Usage("conv"); u.GetMaxBudgetUsd() != 10 {
		t.Errorf("budget = %v, want 10", u.GetMaxBudgetUsd())
	}
	// Without a default, no budget.
	h2 := newLedgerHarness(t, Config{})
	results(h2, llm("1", "conv", nil))
	if u, _ := h2.p.Usage("conv"); u.MaxBudgetUsd != nil || u.RemainingUsd != nil {
		t.Errorf("budget without default: %v", u)
	}
}

func TestLifecycleMetrics(t *testing.T) {
	h := newLedgerHarness(t, Config{})
	started := func(id string, ok bool, d float64) *pb.Event {
		return &pb.Event{EventId: id, ConversationId: "conv", Payload: &pb.Event_Conversation{Conversation: &pb.ConversationEvent{
			Kind: &pb.ConversationEvent_SessionStarted{SessionStarted: &pb.SessionStarted{Success: ok, DurationSeconds: d}}}}}
	}
	fault := func(id string, k pb.RuntimeFaultKind) *pb.Event {
		return &pb.Event{EventId: id, ConversationId: "conv", Payload: &pb.Event_RuntimeFault{RuntimeFault: &pb.RuntimeFault{Kind: k, ExitCode: 137}}}
	}
	limit := &pb.Event{EventId: "l", Payload: &pb.Event_Conversation{Conversation: &pb.ConversationEvent{
		Kind: &pb.ConversationEvent_Limit{Limit: &pb.ConcurrencyLimit{MaxConcurrentConversations: 3}}}}}
	results(h, created("c", "conv", nil), started("s1", true, 2.5), started("s2", false, 30), limit,
		fault("f1", pb.RuntimeFaultKind_RUNTIME_FAULT_KIND_OOM_KILLED), fault("f2", pb.RuntimeFaultKind_RUNTIME_FAULT_KIND_COMMAND_TIMEOUT_HARD))
	if got := h.sum(catalog.ConversationsCreated.Name, map[string]string{"trigger": "gui"}); got != 1 {
		t.Errorf("created{gui} = %v", got)
	}
	if n, s := h.hist(catalog.SessionStartDuration.Name, map[string]string{"success": "true"}); n != 1 || s != 2.5 {
		t.Errorf("session start success = %d/%v", n, s)
	}
	if n, _ := h.hist(catalog.SessionStartDuration.Name, map[string]string{"success": "false"}); n != 1 {
		t.Errorf("session start failure count = %d", n)
	}
	if got := h.sum(catalog.ConversationsLimit.Name, nil); got != 3 {
		t.Errorf("limit = %v", got)
	}
	if got := h.sum(catalog.RuntimeFaults.Name, map[string]string{"kind": "oom_killed"}); got != 1 {
		t.Errorf("faults{oom_killed} = %v", got)
	}
	if got := h.sum(catalog.ConversationsActive.Name, nil); got != 1 {
		t.Errorf("active = %v", got)
	}
	if u, _ := h.p.Usage("conv"); u.RuntimeFaults != 2 {
		t.Errorf("runtime faults in ledger = %d", u.RuntimeFaults)
	}
}

func TestListUsage(t *testing.T) {
	h := newLedgerHarness(t, Config{})
	for i, id := range []string{"a", "b", "c", "d", "e"} {
		h.now = h.now.Add(time.Second)
		state := pb.AgentState_AGENT_STATE_RUNNING
		if i%2 == 1 {
			state = pb.AgentState_AGENT_STATE_FINISHED
		}
		results(h, status(id, id, state))
	}
	var got []string
	token := ""
	for range 10 {
		page, next, err := h.p.ListUsage(pb.AgentState_AGENT_STATE_UNSPECIFIED, token, 2)
		if err != nil {
			t.Fatal(err)
		}
		for _, u := range page {
			got = append(got, u.ConversationId)
		}
		if next == "" {
			break
		}
		token = next
	}
	if want := "[e d c b a]"; fmtSlice(got) != want {
		t.Errorf("pages = %v, want %s (newest first)", got, want)
	}
	page, _, _ := h.p.ListUsage(pb.AgentState_AGENT_STATE_FINISHED, "", 10)
	if len(page) != 2 || page[0].ConversationId != "d" {
		t.Errorf("finished = %v", page)
	}
	if _, _, err := h.p.ListUsage(0, "!!garbage", 10); err == nil {
		t.Error("garbage page token accepted")
	}
}

func fmtSlice(s []string) string {
	out := "["
	for i, v := range s {
		if i > 0 {
			out += " "
		}
		out += v
	}
	return out + "]"
}

func TestWatch(t *testing.T) {
	h := newLedgerHarness(t, Config{MaxTracked: 1})
	if _, _, ok := h.p.Watch("conv"); ok {
		t.Fatal("watching an unknown conversation")
	}
	results(h, llm("1", "conv", nil))
	changes, stop, ok := h.p.Watch("conv")
	if !ok {
		t.Fatal("not tracked")
	}
	defer stop()
	results(h, llm("2", "conv", nil), llm("3", "conv", nil))
	select {
	case <-changes:
	default:
		t.Fatal("no change signalled")
	}
	select {
	case <-changes:
		t.Fatal("two changes not coalesced")
	default:
	}
	// Evicted for capacity: the channel closes.
	results(h, llm("4", "other", nil))
	if _, open := <-changes; open {
		t.Fatal("channel open after the conversation was evicted")
	}
}

func TestConsumeAllocs(t *testing.T) {
	h := newLedgerHarness(t, Config{DedupeWindow: time.Hour, DedupeMaxIDs: 1 << 20, ClosedRetention: time.Minute})
	events := benchEvents(1000)
	for _, ev := range events[:100] {
		results(h, ev) // conversations and series known
	}
	one, res := make([]*pb.Event, 1), make([]Result, 1)
	i := 100
	allocs := testing.AllocsPerRun(500, func() {
		one[0] = events[i%len(events)]
		i++
		h.p.Consume(context.Background(), one, h.now, res)
	})
	if allocs != 0 {
		t.Errorf("allocs per event for a known conversation = %v, want 0", allocs)
	}
}

func TestRejectedEventLeavesLedger(t *testing.T) {
	h := newLedgerHarness(t, Config{})
	results(h, created("c1", "conv", nil))
	before, _ := h.p.Usage("conv")
	h.now = h.now.Add(time.Minute)
	if res := results(h, created("c2", "conv", nil)); res[0].Outcome != Rejected {
		t.Fatalf("second created: %+v", res[0])
	}
	after, _ := h.p.Usage("conv")
	if !after.LastEventTime.AsTime().Equal(before.LastEventTime.AsTime()) {
		t.Errorf("a rejected event moved last_event_time from %v to %v", before.LastEventTime.AsTime(), after.LastEventTime.AsTime())
	}
	if got := h.sum(catalog.ConversationsCreated.Name, nil); got != 1 {
		t.Errorf("created = %v, want 1", got)
	}
}

func TestFailedCallKeepsPerTurn(t *testing.T) {
	h := newLedgerHarness(t, Config{})
	results(h, llm("1", "conv", nil), llm("2", "conv", func(c *pb.LLMCall) {
		c.ErrorType, c.PromptTokens, c.CompletionTokens, c.CacheReadTokens, c.CacheWriteTokens, c.ReasoningTokens = "RateLimitError", 0, 0, 0, 0, 0
	}))
	u, _ := h.p.Usage("conv")
	if len(u.PerTurnTokens) != 1 || u.PerTurnTokens[0].Tokens != 1200 {
		t.Errorf("per turn = %v, want agent 1200 (a failed call without tokens changes nothing)", u.PerTurnTokens)
	}
	if u.Calls != 2 || u.FailedCalls != 1 {
		t.Errorf("calls/failed = %d/%d, want 2/1", u.Calls, u.FailedCalls)
	}
}
