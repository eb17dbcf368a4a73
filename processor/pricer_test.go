package processor

import (
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/agentmeter/agentmeter/pricing"
	pb "github.com/agentmeter/agentmeter/proto/agentmeter/v1"
)

// TestPricerGetsEventTime: a call is priced at its event's time, so that a
// delayed or replayed event meets the price in force when it happened; an
// event without a time is priced at its receipt.
func TestPricerGetsEventTime(t *testing.T) {
	h := newHarness(t, Config{})
	var got []time.Time
	var usages []pricing.Usage
	h.p.pricer = PricerFunc(func(_, _ string, at time.Time, u pricing.Usage) (float64, float64, bool) {
		got, usages = append(got, at), append(usages, u)
		return 1, 0, true
	})
	happened := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	timed := llm("t1", "", func(c *pb.LLMCall) { c.CostUsd, c.ReasoningTokens = nil, 7 })
	timed.Time = timestamppb.New(happened)
	untimed := llm("t2", "", func(c *pb.LLMCall) { c.CostUsd = nil })
	untimed.Time = nil
	h.consume(timed, untimed)
	if len(got) != 2 || !got[0].Equal(happened) || !got[1].Equal(h.now) {
		t.Errorf("priced at %v, want %v then the receipt time %v", got, happened, h.now)
	}
	if len(usages) > 0 && usages[0].Reasoning != 7 {
		t.Errorf("usage %+v: reasoning tokens not passed", usages[0])
	}
}
