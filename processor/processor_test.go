package processor

import (
	"context"
	"fmt"
	"math"
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	"google.golang.org/protobuf/proto"

	"github.com/agentmeter/agentmeter/catalog"
	pb "github.com/agentmeter/agentmeter/proto/agentmeter/v1"
)

// harness is a processor on a manual reader.
type harness struct {
	t      testing.TB
	p      *Processor
	reader *sdkmetric.ManualReader
	now    time.Time
}

func newHarness(t testing.TB, cfg Config) *harness {
	t.Helper()
	if cfg.IdleExpiry == 0 {
		cfg.IdleExpiry = 30 * time.Minute
	}
	if cfg.MaxTracked == 0 {
		cfg.MaxTracked = 100
	}
	if cfg.DedupeMaxIDs == 0 {
		cfg.DedupeMaxIDs = 1000
	}
	p, err := New(cfg, Deps{})
	if err != nil {
		t.Fatal(err)
	}
	reader := sdkmetric.NewManualReader(sdkmetric.WithProducer(p))
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	t.Cleanup(func() { _ = mp.Shutdown(context.Background()) })
	return &harness{t: t, p: p, reader: reader, now: time.Unix(1_800_000_000, 0)}
}

// consume applies events and returns which were duplicates.
func (h *harness) consume(events ...*pb.Event) []bool {
	results := make([]Result, len(events))
	h.p.Consume(context.Background(), events, h.now, results)
	dup := make([]bool, len(events))
	for i, r := range results {
		dup[i] = r.Outcome == Duplicate
	}
	return dup
}

func (h *harness) collect() metricdata.ResourceMetrics {
	h.t.Helper()
	var rm metricdata.ResourceMetrics
	if err := h.reader.Collect(context.Background(), &rm); err != nil {
		h.t.Fatal(err)
	}
	return rm
}

func find(rm metricdata.ResourceMetrics, name string) (metricdata.Metrics, bool) {
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			if m.Name == name {
				return m, true
			}
		}
	}
	return metricdata.Metrics{}, false
}

func matches(set attribute.Set, want map[string]string) bool {
	for k, v := range want {
		got, ok := set.Value(attribute.Key(k))
		if !ok || got.String() != v {
			return false
		}
	}
	return true
}

// sum adds the points of a counter or gauge whose attributes include want.
func (h *harness) sum(name string, want map[string]string) float64 {
	h.t.Helper()
	m, ok := find(h.collect(), name)
	if !ok {
		return 0
	}
	total := 0.0
	switch d := m.Data.(type) {
	case metricdata.Sum[int64]:
		for _, dp := range d.DataPoints {
			if matches(dp.Attributes, want) {
				total += float64(dp.Value)
			}
		}
	case metricdata.Sum[float64]:
		for _, dp := range d.DataPoints {
			if matches(dp.Attributes, want) {
				total += dp.Value
			}
		}
	case metricdata.Gauge[int64]:
		for _, dp := range d.DataPoints {
			if matches(dp.Attributes, want) {
				total += float64(dp.Value)
			}
		}
	default:
		h.t.Fatalf("%s: unexpected data %T", name, m.Data)
	}
	return total
}

// hist returns count and sum of the histogram points whose attributes include want.
func (h *harness) hist(name string, want map[string]string) (count uint64, sum float64) {
	h.t.Helper()
	m, ok := find(h.collect(), name)
	if !ok {
		return 0, 0
	}
	switch d := m.Data.(type) {
	case metricdata.Histogram[int64]:
		for _, dp := range d.DataPoints {
			if matches(dp.Attributes, want) {
				count += dp.Count
				sum += float64(dp.Sum)
			}
		}
	case metricdata.Histogram[float64]:
		for _, dp := range d.DataPoints {
			if matches(dp.Attributes, want) {
				count += dp.Count
				sum += dp.Sum
			}
		}
	default:
		h.t.Fatalf("%s: unexpected data %T", name, m.Data)
	}
	return count, sum
}

func llm(id, conv string, mod func(*pb.LLMCall)) *pb.Event {
	c := &pb.LLMCall{
		Provider: "anthropic", RequestModel: "claude-sonnet-4", ResponseModel: "claude-sonnet-4-20250514",
		LlmService:   "agent",
		PromptTokens: 1000, CompletionTokens: 200, CacheReadTokens: 600, CacheWriteTokens: 100, ReasoningTokens: 50,
		ContextWindow: 200_000, LatencySeconds: 2.5, TimeToFirstTokenSeconds: 0.4, CostUsd: proto.Float64(0.0123),
	}
	if mod != nil {
		mod(c)
	}
	return &pb.Event{EventId: id, ConversationId: conv, Agent: "CodeActAgent", Payload: &pb.Event_LlmCall{LlmCall: c}}
}

func status(id, conv string, s pb.AgentState) *pb.Event {
	return &pb.Event{EventId: id, ConversationId: conv, Agent: "CodeActAgent",
		Payload: &pb.Event_AgentStatus{AgentStatus: &pb.AgentStatus{State: s}}}
}

func TestLLMCallTotals(t *testing.T) {
	h := newHarness(t, Config{DedupeWindow: time.Minute})
	h.consume(
		llm("a", "c1", nil),
		llm("b", "c1", func(c *pb.LLMCall) { c.CostUsd = nil }),
		llm("c", "c2", func(c *pb.LLMCall) {
			c.ErrorType, c.PromptTokens, c.CompletionTokens, c.CacheReadTokens, c.CacheWriteTokens, c.ReasoningTokens = "timeout", 0, 0, 0, 0, 0
			c.CostUsd, c.TimeToFirstTokenSeconds, c.LatencySeconds = nil, 0, 30
		}),
		llm("d", "c2", func(c *pb.LLMCall) { c.Operation = "text_completion"; c.CacheWrite_1HTokens = 100 }),
	)
	tokens := catalog.LLMTokens.Name
	for _, tc := range []struct {
		typ  string
		want float64
	}{{"input", 3000}, {"output", 600}, {"cache_read", 1800}, {"cache_write", 400}, {"reasoning", 150}} {
		if got := h.sum(tokens, map[string]string{"gen_ai.token.type": tc.typ}); got != tc.want {
			t.Errorf("tokens %s = %v, want %v", tc.typ, got, tc.want)
		}
	}
	if got := h.sum(tokens, map[string]string{"gen_ai.operation.name": "text_completion", "gen_ai.token.type": "input"}); got != 1000 {
		t.Errorf("text_completion input tokens = %v, want 1000", got)
	}
	if got := h.sum(catalog.LLMCost.Name, map[string]string{"cost_source": "reported"}); math.Abs(got-0.0246) > 1e-12 {
		t.Errorf("cost = %v, want 0.0246", got)
	}
	// Token usage: 3 successful calls record input and output; the failed one reports none.
	if n, s := h.hist(catalog.TokenUsage.Name, map[string]string{"gen_ai.token.type": "input"}); n != 3 || s != 3000 {
		t.Errorf("token usage input count/sum = %d/%v, want 3/3000", n, s)
	}
	if n, _ := h.hist(catalog.OperationDuration.Name, nil); n != 4 {
		t.Errorf("duration count = %d, want 4", n)
	}
	if n, s := h.hist(catalog.OperationDuration.Name, map[string]string{"error.type": "timeout"}); n != 1 || s != 30 {
		t.Errorf("failed duration count/sum = %d/%v, want 1/30", n, s)
	}
	if n, _ := h.hist(catalog.TimeToFirstChunk.Name, nil); n != 3 {
		t.Errorf("ttft count = %d, want 3 (unknown ttft is not recorded)", n)
	}
	if n, s := h.hist(catalog.ContextUtilization.Name, nil); n != 3 || math.Abs(s-0.015) > 1e-12 {
		t.Errorf("context utilization count/sum = %d/%v, want 3/0.015", n, s)
	}
}

func TestDuplicates(t *testing.T) {
	h := newHarness(t, Config{DedupeWindow: time.Minute, DedupeMaxIDs: 4})
	dup := h.consume(llm("a", "", nil), llm("a", "", nil), llm("b", "", nil))
	if fmt.Sprint(dup) != "[false true false]" {
		t.Fatalf("dup = %v, want [false true false]", dup)
	}
	dup = h.consume(llm("b", "", nil), llm("c", "", nil))
	if fmt.Sprint(dup) != "[true false]" {
		t.Fatalf("dup = %v, want [true false]", dup)
	}
	if got := h.sum(catalog.LLMTokens.Name, map[string]string{"gen_ai.token.type": "input"}); got != 3000 {
		t.Errorf("input tokens = %v, want 3000 (duplicates applied once)", got)
	}
	// Within the window, a and b are still held though c started a new generation.
	h.now = h.now.Add(59 * time.Second)
	if dup := h.consume(llm("a", "", nil), llm("b", "", nil), llm("c", "", nil)); fmt.Sprint(dup) != "[true true true]" {
		t.Fatalf("dup = %v within the window, want all true", dup)
	}
	// Two windows later everything is forgotten.
	h.now = h.now.Add(2 * time.Minute)
	if dup := h.consume(llm("a", "", nil), llm("c", "", nil)); dup[0] || dup[1] {
		t.Fatalf("dup = %v after the window, want none", dup)
	}
	// The bound: never more than 4 ids held, the oldest generation goes first.
	h.consume(llm("w", "", nil), llm("x", "", nil), llm("y", "", nil), llm("z", "", nil))
	if n := h.p.dedupe.len(); n > 4 {
		t.Errorf("ids held = %d, want <= 4", n)
	}
	if dup := h.consume(llm("a", "", nil)); dup[0] {
		t.Error("a is still held beyond the 4-id bound")
	}
	if dup := h.consume(llm("z", "", nil)); !dup[0] {
		t.Error("z, the newest id, was forgotten")
	}
}

func TestDedupeDisabled(t *testing.T) {
	h := newHarness(t, Config{})
	if dup := h.consume(llm("a", "", nil), llm("a", "", nil)); dup[0] || dup[1] {
		t.Fatalf("dup = %v with dedupe disabled", dup)
	}
}

func TestStatus(t *testing.T) {
	h := newHarness(t, Config{DedupeWindow: time.Minute})
	S := pb.AgentState_AGENT_STATE_RUNNING
	h.consume(
		status("1", "c1", pb.AgentState_AGENT_STATE_LOADING),
		status("2", "c1", S),
		status("3", "c1", S), // a repeat is not a transition
		status("4", "c2", S),
		status("5", "c2", pb.AgentState_AGENT_STATE_ERROR),
		status("6", "c1", pb.AgentState_AGENT_STATE_AWAITING_USER_INPUT),
	)
	tr := catalog.StatusTransitions.Name
	for state, want := range map[string]float64{"loading": 1, "running": 2, "error": 1, "awaiting_user_input": 1} {
		if got := h.sum(tr, map[string]string{"agent_state": state}); got != want {
			t.Errorf("transitions to %s = %v, want %v", state, got, want)
		}
	}
	g := catalog.AgentConversations.Name
	for state, want := range map[string]float64{"loading": 0, "running": 0, "error": 1, "awaiting_user_input": 1} {
		if got := h.sum(g, map[string]string{"agent_state": state, "gen_ai.agent.name": "CodeActAgent"}); got != want {
			t.Errorf("conversations in %s = %v, want %v", state, got, want)
		}
	}
	// Idle expiry drops both from the gauge, and counts them.
	h.p.Sweep(h.now.Add(31 * time.Minute))
	if got := h.sum(g, nil); got != 0 {
		t.Errorf("conversations after expiry = %v, want 0", got)
	}
	if got := h.sum(catalog.ConversationsEvicted.Name, map[string]string{"reason": "idle"}); got != 2 {
		t.Errorf("evicted idle = %v, want 2", got)
	}
}

func TestConversationBound(t *testing.T) {
	h := newHarness(t, Config{MaxTracked: 2})
	h.consume(
		status("1", "c1", pb.AgentState_AGENT_STATE_RUNNING),
		status("2", "c2", pb.AgentState_AGENT_STATE_RUNNING),
		status("3", "c3", pb.AgentState_AGENT_STATE_RUNNING),
	)
	if got := h.sum(catalog.AgentConversations.Name, nil); got != 2 {
		t.Errorf("tracked = %v, want 2", got)
	}
	if got := h.sum(catalog.ConversationsEvicted.Name, map[string]string{"reason": "capacity"}); got != 1 {
		t.Errorf("evicted capacity = %v, want 1", got)
	}
}

func TestSeriesBound(t *testing.T) {
	h := newHarness(t, Config{MaxSeries: 2})
	for i := range 5 {
		model := fmt.Sprintf("m%d", i)
		h.consume(llm(model, "", func(c *pb.LLMCall) { c.RequestModel = model }))
	}
	if got := h.sum(catalog.LLMTokens.Name, map[string]string{"gen_ai.token.type": "input"}); got != 5000 {
		t.Errorf("input tokens = %v, want 5000 (nothing lost to the bound)", got)
	}
	if got := h.sum(catalog.LLMTokens.Name, map[string]string{"otel.metric.overflow": "true", "gen_ai.token.type": "input"}); got != 3000 {
		t.Errorf("overflow input tokens = %v, want 3000", got)
	}
	if got := h.sum(catalog.SeriesOverflow.Name, nil); got != 3 {
		t.Errorf("overflow calls = %v, want 3", got)
	}
}

func TestErrorTypeBound(t *testing.T) {
	h := newHarness(t, Config{})
	for i := range maxErrorTypes + 5 {
		h.consume(llm("", "", func(c *pb.LLMCall) { c.ErrorType = fmt.Sprintf("e%d", i) }))
	}
	if n, _ := h.hist(catalog.OperationDuration.Name, map[string]string{"error.type": "_OTHER"}); n != 5 {
		t.Errorf("_OTHER count = %d, want 5", n)
	}
}

func TestShutdownWithoutStart(t *testing.T) {
	h := newHarness(t, Config{})
	for range 2 {
		if err := h.p.Shutdown(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	if err := h.p.Start(context.Background()); err == nil {
		t.Fatal("Start after Shutdown succeeded")
	}
}

func TestStartShutdown(t *testing.T) {
	h := newHarness(t, Config{IdleExpiry: time.Second})
	if err := h.p.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := h.p.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
}

func TestStateNames(t *testing.T) {
	for v, want := range map[pb.AgentState]string{
		pb.AgentState_AGENT_STATE_AWAITING_USER_INPUT:        "awaiting_user_input",
		pb.AgentState_AGENT_STATE_RATE_LIMITED:               "rate_limited",
		pb.AgentState_AGENT_STATE_AWAITING_USER_CONFIRMATION: "awaiting_user_confirmation",
		pb.AgentState(99): "unknown",
	} {
		if got := StateName(v); got != want {
			t.Errorf("StateName(%v) = %q, want %q", v, got, want)
		}
	}
}

func TestProduceLeavesOutEmptyMetrics(t *testing.T) {
	h := newHarness(t, Config{})
	sms, err := h.p.Produce(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range sms[0].Metrics {
		if points(m.Data) == 0 {
			t.Errorf("%s has no data point but was produced", m.Name)
		}
		if m.Name == catalog.TokenUsage.Name {
			t.Errorf("%s produced before any call", m.Name)
		}
	}
	h.consume(llm("a", "", nil))
	if _, ok := find(h.collect(), catalog.TokenUsage.Name); !ok {
		t.Errorf("%s missing after a call", catalog.TokenUsage.Name)
	}
}
