package processor

import (
	"fmt"
	"strings"
	"time"

	"github.com/agentmeter/agentmeter/pricing"
	pb "github.com/agentmeter/agentmeter/proto/agentmeter/v1"
)

// Pricer prices an LLM call the agent sent no cost for. *pricing.Watcher
// is one. It must be safe for concurrent use: durable mode prices a
// batch's calls before it stores them, outside the processor's lock.
type Pricer interface {
	// Price returns the call's cost at the price in force at time at (the
	// event's time) and what its cache reads saved, in USD, and false when
	// it has no price for the model.
	Price(provider, model string, at time.Time, u pricing.Usage) (costUSD, cacheSavingsUSD float64, ok bool)
}

// PricerFunc adapts a function to Pricer.
type PricerFunc func(provider, model string, at time.Time, u pricing.Usage) (float64, float64, bool)

// Price calls f.
func (f PricerFunc) Price(provider, model string, at time.Time, u pricing.Usage) (float64, float64, bool) {
	return f(provider, model, at, u)
}

// budgetThresholds are the budget fractions whose crossing is counted.
var budgetThresholds = [...]float64{0.5, 0.8, 1}

var budgetThresholdNames = [len(budgetThresholds)]string{"50", "80", "100"}

// lifecycle holds the conversation, budget and runtime-fault totals.
// Guarded by Processor.mu.
type lifecycle struct {
	created       []int64 // by ConversationTrigger
	sessionStart  [2]*histogram
	closed        []int64 // by CloseReason
	convCost      *histogram
	convTokens    *histogram
	faults        []int64 // by RuntimeFaultKind
	crossings     [len(budgetThresholds)]int64
	limit         int64
	hasLimit      bool
	closedTracked int64 // tracked conversations that are closed
}

func newLifecycle(sessionBuckets, costBuckets, tokenBuckets []float64) lifecycle {
	return lifecycle{
		created:      make([]int64, len(pb.ConversationTrigger_name)),
		sessionStart: [2]*histogram{newHistogram(sessionBuckets), newHistogram(sessionBuckets)},
		closed:       make([]int64, len(pb.CloseReason_name)),
		convCost:     newHistogram(costBuckets),
		convTokens:   newHistogram(tokenBuckets),
		faults:       make([]int64, len(pb.RuntimeFaultKind_name)),
	}
}

// enumLabel is the label value of an enum value name: its lowercase name
// without the type prefix, "unknown" for UNSPECIFIED.
func enumLabel(name, prefix string) string {
	v := strings.ToLower(strings.TrimPrefix(name, prefix))
	if v == "unspecified" {
		return "unknown"
	}
	return v
}

// applyConversation applies a lifecycle event. p.mu is held.
func (p *Processor) applyConversation(c *conversation, ce *pb.ConversationEvent, now int64) Result {
	switch k := ce.GetKind().(type) {
	case *pb.ConversationEvent_Created:
		if c.created && !c.closed {
			return Result{Outcome: Rejected, Field: "conversation.created",
				Reason: fmt.Sprintf("conversation %q was already created and is not closed", c.id)}
		}
		if c.closed { // created again: the same conversation resumes
			c.closed, c.closeReason = false, pb.CloseReason_CLOSE_REASON_UNSPECIFIED
			p.life.closedTracked--
			if c.state != pb.AgentState_AGENT_STATE_UNSPECIFIED {
				p.status.conversations[c.statusKey]++
			}
		}
		c.created = true
		c.trigger = k.Created.GetTrigger()
		p.life.created[c.trigger]++
		if k.Created.MaxBudgetUsd != nil {
			c.budget, c.hasBudget = *k.Created.MaxBudgetUsd, true
		}
		p.checkBudget(c)
	case *pb.ConversationEvent_SessionStarted:
		i := 0
		if k.SessionStarted.GetSuccess() {
			i = 1
		}
		p.life.sessionStart[i].record(k.SessionStarted.GetDurationSeconds())
	case *pb.ConversationEvent_Closed:
		if c.closed {
			return Result{Outcome: Rejected, Field: "conversation.closed",
				Reason: fmt.Sprintf("conversation %q is already closed", c.id)}
		}
		c.closed, c.closeReason, c.closedAt = true, k.Closed.GetReason(), now
		p.life.closed[c.closeReason]++
		p.life.closedTracked++
		p.life.convCost.record(c.totalCost())
		p.life.convTokens.record(float64(c.tokens[ledgerInput]) + float64(c.tokens[ledgerOutput]))
		if c.state != pb.AgentState_AGENT_STATE_UNSPECIFIED {
			p.status.conversations[c.statusKey]-- // a closed conversation is in no state
		}
		p.convs.closed = append(p.convs.closed, c)
	}
	return Result{}
}

// checkBudget counts each budget threshold the conversation's cost crossed
// for the first time. p.mu is held.
func (p *Processor) checkBudget(c *conversation) {
	if !c.hasBudget {
		return
	}
	total := c.totalCost()
	for i, th := range budgetThresholds {
		bit := uint8(1) << i
		if c.crossed&bit != 0 || total < th*c.budget {
			continue
		}
		c.crossed |= bit
		p.life.crossings[i]++
		p.log.Warn("conversation crossed a budget threshold",
			"conversation_id", c.id, "threshold_percent", budgetThresholdNames[i],
			"cost_usd", total, "max_budget_usd", c.budget)
	}
}
