package processor

import (
	"math"
	"time"

	"go.opentelemetry.io/otel/attribute"

	"github.com/agentmeter/agentmeter/catalog"
	"github.com/agentmeter/agentmeter/pricing"
	pb "github.com/agentmeter/agentmeter/proto/agentmeter/v1"
)

// Token types, in the order of the llmSeries.tokens array.
const (
	tokInput = iota
	tokOutput
	tokCacheRead
	tokCacheWrite
	tokReasoning
	numTokenTypes
)

var tokenTypeNames = [numTokenTypes]string{
	catalog.TokenInput, catalog.TokenOutput, catalog.TokenCacheRead, catalog.TokenCacheWrite, catalog.TokenReasoning,
}

// Cost sources, in the order of the llmSeries.cost array.
const (
	costReported = iota
	costComputed
	numCostSources
)

var costSourceNames = [numCostSources]string{catalog.CostReported, catalog.CostComputed}

// maxErrorTypes bounds the error.type values kept per series; beyond it a
// failed call's duration is recorded with error.type "_OTHER" (semconv's
// fallback value).
const maxErrorTypes = 32

// llmKey identifies the common attribute set of an LLM call.
type llmKey struct {
	operation, provider, requestModel, responseModel, agent string
}

// llmSeries holds one attribute set's totals and histograms, and its
// attribute sets, built once. Guarded by Processor.mu.
type llmSeries struct {
	tokens       [numTokenTypes]int64
	cost         [numCostSources]float64
	costSeen     [numCostSources]bool
	cacheSavings float64
	priced       bool // cacheSavings has a value
	unpriced     int64
	requestModel string

	tokenUsage [2]*histogram // input, output
	ttft       *histogram
	ctxUtil    *histogram
	// duration by error.type; "" = success.
	duration map[string]*histogram

	attrs     attribute.Set
	tokenSets [numTokenTypes]attribute.Set
	costSets  [numCostSources]attribute.Set
	errSets   map[string]attribute.Set
}

func newLLMSeries(attrs ...attribute.KeyValue) *llmSeries {
	s := &llmSeries{
		attrs:      attribute.NewSet(attrs...),
		tokenUsage: [2]*histogram{newHistogram(catalog.TokenBuckets), newHistogram(catalog.TokenBuckets)},
		ttft:       newHistogram(catalog.TimeToFirstChunk.Buckets),
		ctxUtil:    newHistogram(catalog.ContextUtilization.Buckets),
		duration:   map[string]*histogram{"": newHistogram(catalog.OperationDuration.Buckets)},
		errSets:    map[string]attribute.Set{},
	}
	with := func(kv attribute.KeyValue) attribute.Set {
		return attribute.NewSet(append(attrs[:len(attrs):len(attrs)], kv)...)
	}
	for t := range numTokenTypes {
		s.tokenSets[t] = with(catalog.AttrTokenType.String(tokenTypeNames[t]))
	}
	for c := range numCostSources {
		s.costSets[c] = with(catalog.AttrCostSource.String(costSourceNames[c]))
	}
	s.errSets[""] = s.attrs
	return s
}

// durationHist returns the duration histogram of a call that failed with
// errorType ("" = success), creating it within the bound.
func (s *llmSeries) durationHist(errorType string) *histogram {
	if h, ok := s.duration[errorType]; ok {
		return h
	}
	if len(s.duration) > maxErrorTypes {
		errorType = "_OTHER"
		if h, ok := s.duration[errorType]; ok {
			return h
		}
	}
	errorType = clone(errorType)
	h := newHistogram(catalog.OperationDuration.Buckets)
	s.duration[errorType] = h
	s.errSets[errorType] = attribute.NewSet(append(s.attrs.ToSlice(), catalog.AttrErrorType.String(errorType))...)
	return h
}

// series returns the series of a call, creating it within the bound. p.mu is held.
func (p *Processor) series(agent string, c *pb.LLMCall) *llmSeries {
	k := llmKey{
		operation:     c.GetOperation(),
		provider:      c.GetProvider(),
		requestModel:  c.GetRequestModel(),
		responseModel: c.GetResponseModel(),
		agent:         agent,
	}
	if k.operation == "" {
		k.operation = catalog.DefaultOperation
	}
	if s, ok := p.llm[k]; ok {
		return s
	}
	if len(p.llm) >= p.cfg.MaxSeries {
		p.overflowCalls++
		if p.overflow == nil {
			p.overflow = newLLMSeries(catalog.AttrOverflow.Bool(true))
			p.log.Warn("llm series bound reached; further attribute sets go to the overflow series",
				"max_series", p.cfg.MaxSeries)
		}
		return p.overflow
	}
	// The key's strings point into the request message; copy them so the
	// map keeps nothing of the caller's (see Consumer).
	k = llmKey{
		operation:     clone(k.operation),
		provider:      clone(k.provider),
		requestModel:  clone(k.requestModel),
		responseModel: clone(k.responseModel),
		agent:         clone(k.agent),
	}
	s := newSeriesFor(k)
	p.llm[k] = s
	return s
}

// newSeriesFor builds the series of key k, whose strings it keeps.
func newSeriesFor(k llmKey) *llmSeries {
	s := newLLMSeries(
		catalog.AttrOperationName.String(k.operation),
		catalog.AttrProviderName.String(k.provider),
		catalog.AttrRequestModel.String(k.requestModel),
		catalog.AttrResponseModel.String(k.responseModel),
		catalog.AttrAgentName.String(k.agent),
	)
	s.requestModel = k.requestModel
	return s
}

// addTokens adds n tokens to *sum, holding the sum at math.MaxInt64 instead
// of wrapping to a negative value (which Prometheus would read as a counter
// reset); each sum held is counted. p.mu is held.
func (p *Processor) addTokens(sum *int64, n int64) {
	if n > 0 && *sum > math.MaxInt64-n {
		*sum = math.MaxInt64
		p.saturations++
		return
	}
	*sum += n
}

func clone(s string) string {
	if s == "" {
		return ""
	}
	return string(append([]byte(nil), s...))
}

// callPrice is what the price table says of a call: its computed cost and
// what its cache reads saved, when ok (the table has a price for it).
type callPrice struct {
	cost, savings float64
	ok            bool
}

// priceCall prices call c at the price in force at time at, by its response
// model, else its request model; not ok without a pricer. It does not need
// p.mu (a Pricer is safe for concurrent use).
func (p *Processor) priceCall(c *pb.LLMCall, at time.Time) callPrice {
	if p.pricer == nil {
		return callPrice{}
	}
	u := pricing.FromLLMCall(c)
	computed, savings, ok := p.pricer.Price(c.GetProvider(), c.GetResponseModel(), at, u)
	if !ok && c.GetResponseModel() != c.GetRequestModel() {
		computed, savings, ok = p.pricer.Price(c.GetProvider(), c.GetRequestModel(), at, u)
	}
	return callPrice{cost: computed, savings: savings, ok: ok}
}

// applyLLMCall aggregates one call into its series and, when it belongs to
// a conversation, into the conversation's ledger entry; pr is what the price
// table said of the call (priceCall). p.mu is held.
func (p *Processor) applyLLMCall(conv *conversation, agent string, c *pb.LLMCall, pr callPrice) {
	s := p.series(agent, c)
	prompt, completion := c.GetPromptTokens(), c.GetCompletionTokens()
	cacheWrite := c.GetCacheWriteTokens() + c.GetCacheWrite_1HTokens()
	p.addTokens(&s.tokens[tokInput], prompt)
	p.addTokens(&s.tokens[tokOutput], completion)
	p.addTokens(&s.tokens[tokCacheRead], c.GetCacheReadTokens())
	p.addTokens(&s.tokens[tokCacheWrite], cacheWrite)
	p.addTokens(&s.tokens[tokReasoning], c.GetReasoningTokens())

	// Cost: a reported cost wins over the price table; a call with
	// neither is counted as unpriced, never priced at 0.
	source, cost := -1, 0.0
	if c.CostUsd != nil {
		source, cost = costReported, *c.CostUsd
	}
	if pr.ok {
		s.cacheSavings += pr.savings
		s.priced = true
		if source < 0 {
			source, cost = costComputed, pr.cost
		}
	}
	if source >= 0 {
		s.cost[source] += cost
		s.costSeen[source] = true
	} else {
		s.unpriced++
	}

	failed := c.GetErrorType() != ""
	// A failed call records the token types it reports; a successful one
	// records both, zeros included.
	if !failed || prompt > 0 {
		s.tokenUsage[0].record(float64(prompt))
	}
	if !failed || completion > 0 {
		s.tokenUsage[1].record(float64(completion))
	}
	// Latency 0 is unknown (as for time to first token): no duration
	// observation. A client that learns it later reports it through
	// ObserveDuration.
	if lat := c.GetLatencySeconds(); lat > 0 {
		s.durationHist(c.GetErrorType()).record(lat)
	}
	if ttft := c.GetTimeToFirstTokenSeconds(); ttft > 0 {
		s.ttft.record(ttft)
	}
	cw := c.GetContextWindow()
	if cw > 0 && prompt > 0 {
		s.ctxUtil.record(float64(prompt) / float64(cw))
	}

	if conv == nil {
		return
	}
	conv.calls++
	if failed {
		conv.failed++
	}
	p.addTokens(&conv.tokens[ledgerInput], prompt)
	p.addTokens(&conv.tokens[ledgerOutput], completion)
	p.addTokens(&conv.tokens[ledgerCacheRead], c.GetCacheReadTokens())
	p.addTokens(&conv.tokens[ledgerCacheWrite], c.GetCacheWriteTokens())
	p.addTokens(&conv.tokens[ledgerCacheWrite1h], c.GetCacheWrite_1HTokens())
	p.addTokens(&conv.tokens[ledgerReasoning], c.GetReasoningTokens())
	conv.contextWindow = max(conv.contextWindow, cw)
	service := c.GetLlmService()
	if service == "" {
		service = "agent"
	}
	// Like OpenHands, a failed call that reports no tokens leaves the
	// per-turn count of its service alone.
	if !failed || prompt+completion > 0 {
		conv.setPerTurn(service, prompt+completion)
	}
	if cw > 0 && service == "agent" {
		conv.contextUtil = float64(prompt) / float64(cw)
	}
	if source >= 0 {
		conv.cost[source] += cost
		p.checkBudget(conv)
	} else {
		conv.unpriced++
	}
}

// ObserveDuration records the duration of an LLM call whose usage was
// consumed earlier without one (latency_seconds 0): OpenHands reports a
// call's tokens at once and its latency only when the agent's run ends. c
// names the call's series (operation, provider, models; agent is the
// gen_ai.agent.name) and carries the duration in LatencySeconds (> 0) and
// the failure in ErrorType; nothing else of it is read, and no call is
// counted. The caller makes sure each call's duration is observed once.
func (p *Processor) ObserveDuration(agent string, c *pb.LLMCall) {
	lat := c.GetLatencySeconds()
	if !(lat > 0) || math.IsInf(lat, 0) {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.series(agent, c).durationHist(c.GetErrorType()).record(lat)
}
