package processor

import (
	"math"
	"testing"
	"time"

	"github.com/agentmeter/agentmeter/catalog"
	pb "github.com/agentmeter/agentmeter/proto/agentmeter/v1"
)

// A call whose latency is unknown (0) is counted but not observed in the
// duration histogram; ObserveDuration adds the duration later, to the same
// series, without counting a call.
func TestLatencyUnknownThenObserved(t *testing.T) {
	h := newHarness(t, Config{DedupeWindow: time.Minute})
	h.consume(
		llm("a", "c1", func(c *pb.LLMCall) { c.LatencySeconds = 0; c.ResponseModel = "" }),
		llm("b", "c1", func(c *pb.LLMCall) { c.ResponseModel = "" }), // 2.5 s
	)
	sel := map[string]string{"gen_ai.request.model": "claude-sonnet-4"}
	if n, sum := h.hist(catalog.OperationDuration.Name, sel); n != 1 || sum != 2.5 {
		t.Fatalf("duration: count %d sum %v, want only the known 2.5 s", n, sum)
	}
	h.p.ObserveDuration("CodeActAgent", &pb.LLMCall{Provider: "anthropic", RequestModel: "claude-sonnet-4", LatencySeconds: 4})
	for _, bad := range []float64{0, -1, math.NaN(), math.Inf(1)} {
		h.p.ObserveDuration("CodeActAgent", &pb.LLMCall{Provider: "anthropic", RequestModel: "claude-sonnet-4", LatencySeconds: bad})
	}
	if n, sum := h.hist(catalog.OperationDuration.Name, sel); n != 2 || sum != 6.5 {
		t.Errorf("duration after ObserveDuration: count %d sum %v, want 2 and 6.5", n, sum)
	}
	if u, ok := h.p.Usage("c1"); !ok || u.GetCalls() != 2 {
		t.Errorf("calls = %d, want 2: ObserveDuration counts no call", u.GetCalls())
	}
}
