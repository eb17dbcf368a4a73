package pricing

import "time"

// Usage is an LLM call's token counts, in agentmeter's convention (that of
// OpenAI, litellm and OpenTelemetry): Prompt INCLUDES CacheRead, CacheWrite
// and CacheWrite1h; Completion INCLUDES the reasoning tokens.
type Usage struct {
	// Prompt is every input token of the call, cached or not.
	Prompt int64
	// Completion is every output token, reasoning included.
	Completion int64
	// CacheRead is the prompt tokens read from the provider's cache.
	CacheRead int64
	// CacheWrite is the prompt tokens written to the cache at the default
	// (5-minute) retention.
	CacheWrite int64
	// CacheWrite1h is the prompt tokens written to the cache at 1-hour
	// retention; not part of CacheWrite.
	CacheWrite1h int64
	// Reasoning is the completion tokens spent reasoning; part of
	// Completion.
	Reasoning int64
}

// Cost prices a call. With r the rates for u.Prompt (see Rates):
//
//	uncached  = Prompt − CacheRead − CacheWrite − CacheWrite1h
//	reasoning = min(Reasoning, Completion)
//	cost      = uncached×r.Input + CacheRead×r.CacheRead + CacheWrite×r.CacheWrite
//	            + CacheWrite1h×r.CacheWrite1h
//	            + (Completion − reasoning)×r.Output + reasoning×r.Reasoning
//	savings  = max(0, CacheRead×(r.Input − r.CacheRead))
//
// in USD (the rates are per million tokens). Negative counts are taken as 0,
// and so is a negative uncached count (cache tokens that exceed the prompt:
// the usage was not in agentmeter's convention). Cost does not allocate; a
// nil ModelPrice costs 0.
//
// Cost prices at the standard rates; CostAt applies off-peak prices too.
func (p *ModelPrice) Cost(u Usage) (costUSD, cacheSavingsUSD float64) {
	if p == nil {
		return 0, 0
	}
	return cost(u, p.rates(u.Prompt))
}

// CostAt is Cost for a call made at time at: when the model has off-peak
// prices (LiteLLM's off_peak_pricing) and one of their windows is open at
// that time, they replace the standard rates of the call's tier.
func (p *ModelPrice) CostAt(u Usage, at time.Time) (costUSD, cacheSavingsUSD float64) {
	if p == nil {
		return 0, 0
	}
	r := p.rates(u.Prompt)
	if p.offPeak != nil && p.offPeak.open(at) {
		op := p.offPeak.apply(*r)
		return cost(u, &op)
	}
	return cost(u, r)
}

// RatesAt returns the rates that apply to a call with the given prompt size
// made at time at, off-peak prices included.
func (p *ModelPrice) RatesAt(promptTokens int64, at time.Time) Rates {
	r := *p.rates(promptTokens)
	if p.offPeak != nil && p.offPeak.open(at) {
		r = p.offPeak.apply(r)
	}
	return r
}

// HasOffPeak reports whether the price has off-peak windows.
func (p *ModelPrice) HasOffPeak() bool { return p.offPeak != nil }

func cost(u Usage, r *Rates) (costUSD, cacheSavingsUSD float64) {
	prompt, completion := nonNeg(u.Prompt), nonNeg(u.Completion)
	read, write, write1h := nonNeg(u.CacheRead), nonNeg(u.CacheWrite), nonNeg(u.CacheWrite1h)
	uncached := max(prompt-read-write-write1h, 0)
	reasoning := min(nonNeg(u.Reasoning), completion)

	cost := float64(uncached)*r.Input +
		float64(read)*r.CacheRead +
		float64(write)*r.CacheWrite +
		float64(write1h)*r.CacheWrite1h +
		float64(completion-reasoning)*r.Output +
		float64(reasoning)*r.Reasoning
	savings := max(float64(read)*(r.Input-r.CacheRead), 0)
	return cost / 1e6, savings / 1e6
}

func nonNeg(x int64) int64 { return max(x, 0) }
