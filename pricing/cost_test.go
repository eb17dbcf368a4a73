package pricing

import (
	"math"
	"testing"

	agentmeterv1 "github.com/agentmeter/agentmeter/proto/agentmeter/v1"
)

func TestCost(t *testing.T) {
	tab, err := Parse([]byte(`
models:
  - provider: p
    name: full
    input: 2
    output: 8
    cache_read: 0.5
    cache_write: 2.5
    cache_write_1h: 4
    tiers:
      - {threshold: 1000, input: 4, output: 16, cache_read: 1, cache_write: 5, cache_write_1h: 8}
      - {threshold: 5000, input: 10, output: 20}
  - provider: p
    name: bare
    input: 2
    output: 8
  - provider: p
    name: write5m
    input: 2
    output: 8
    cache_write: 3
`), "yaml")
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name          string
		model         string
		u             Usage
		cost, savings float64
	}{
		// 100x2 + 200x0.5 + 300x2.5 + 400x4 + 50x8 = 200+100+750+1600+400 = 3050
		// savings 200 x (2-0.5) = 300
		{"all token kinds", "full", Usage{Prompt: 1000, Completion: 50, CacheRead: 200, CacheWrite: 300, CacheWrite1h: 400}, 3050e-6, 300e-6},
		// 1001 > 1000: tier 1. 101x4 + 200x1 + 300x5 + 400x8 + 50x16 = 404+200+1500+3200+800 = 6104
		// savings 200 x (4-1) = 600
		{"above threshold", "full", Usage{Prompt: 1001, Completion: 50, CacheRead: 200, CacheWrite: 300, CacheWrite1h: 400}, 6104e-6, 600e-6},
		// 6000 > 5000: tier 2, whose cache prices default to its input 10:
		// 6000x10 + 10x20 = 60200; savings 0
		{"highest tier, tier fallbacks", "full", Usage{Prompt: 6000, Completion: 10, CacheRead: 1000, CacheWrite: 1000}, 60200e-6, 0},
		// cache_read, cache_write, cache_write_1h all default to input 2:
		// 1000x2 + 10x8 = 2080; savings 0
		{"fallbacks", "bare", Usage{Prompt: 1000, Completion: 10, CacheRead: 300, CacheWrite: 300, CacheWrite1h: 300}, 2080e-6, 0},
		// cache_write_1h defaults to cache_write 3: 400x2 + 300x3 + 300x3 = 2600
		{"1h falls back to 5m write", "write5m", Usage{Prompt: 1000, CacheWrite: 300, CacheWrite1h: 300}, 2600e-6, 0},
		{"zero usage", "full", Usage{}, 0, 0},
		// Negative counts are 0; cache beyond the prompt leaves no uncached tokens:
		// 200x0.5 = 100; savings 200x1.5 = 300
		{"inconsistent usage", "full", Usage{Prompt: 100, Completion: -5, CacheRead: 200}, 100e-6, 300e-6},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, ok := tab.Price("p", tt.model)
			if !ok {
				t.Fatal("no price")
			}
			cost, savings := p.Cost(tt.u)
			if math.Abs(cost-tt.cost) > 1e-12 || math.Abs(savings-tt.savings) > 1e-12 {
				t.Errorf("Cost(%+v) = %g, %g; want %g, %g", tt.u, cost, savings, tt.cost, tt.savings)
			}
		})
	}
	var nilPrice *ModelPrice
	if c, s := nilPrice.Cost(Usage{Prompt: 5}); c != 0 || s != 0 {
		t.Errorf("nil Cost = %g, %g", c, s)
	}
}

func TestRatesAndTiers(t *testing.T) {
	p, ok := handTable(t).Price("anthropic", "claude-sonnet-4-20250514")
	if !ok {
		t.Fatal("no price")
	}
	if r := p.Rates(200000); r.Input != 3 {
		t.Errorf("Rates(200000).Input = %g, want 3: the tier applies strictly above", r.Input)
	}
	if r := p.Rates(200001); r.Input != 6 || r.Output != 22.5 || r.CacheRead != 0.6 || r.CacheWrite != 7.5 || r.CacheWrite1h != 12 {
		t.Errorf("Rates(200001) = %+v", r)
	}
	tiers := p.Tiers()
	tiers[0].Input = 0 // a copy: the table is immutable
	if p.Rates(300000).Input != 6 {
		t.Error("Tiers() returned the table's own slice")
	}
}

func TestFromLLMCall(t *testing.T) {
	c := &agentmeterv1.LLMCall{PromptTokens: 10, CompletionTokens: 5, CacheReadTokens: 3, CacheWriteTokens: 2, CacheWrite_1HTokens: 1, ReasoningTokens: 4}
	if u := FromLLMCall(c); u != (Usage{Prompt: 10, Completion: 5, CacheRead: 3, CacheWrite: 2, CacheWrite1h: 1, Reasoning: 4}) {
		t.Errorf("FromLLMCall = %+v", u)
	}
}

func TestUsageMappers(t *testing.T) {
	// litellm without the split and without the top-level fields: the
	// details carry the counts, all writes are 5-minute.
	u := FromLiteLLMUsage(LiteLLMUsage{PromptTokens: 100, CompletionTokens: 7,
		PromptTokensDetails: &LiteLLMPromptTokensDetails{CachedTokens: 40, CacheCreationTokens: 30}})
	if u != (Usage{Prompt: 100, Completion: 7, CacheRead: 40, CacheWrite: 30}) {
		t.Errorf("FromLiteLLMUsage = %+v", u)
	}
	// A 1-hour count larger than the total is capped.
	u = FromAnthropicUsage(AnthropicUsage{InputTokens: 1, CacheCreationInputTokens: 10,
		CacheCreation: &AnthropicCacheCreation{Ephemeral1hInputTokens: 50}})
	if u != (Usage{Prompt: 11, CacheWrite1h: 10}) {
		t.Errorf("FromAnthropicUsage = %+v", u)
	}
	if u := FromOpenAIUsage(OpenAIUsage{PromptTokens: 3, CompletionTokens: 4}); u != (Usage{Prompt: 3, Completion: 4}) {
		t.Errorf("FromOpenAIUsage = %+v", u)
	}
	if u := FromBedrockUsage(BedrockUsage{InputTokens: 3, OutputTokens: 4}); u != (Usage{Prompt: 3, Completion: 4}) {
		t.Errorf("FromBedrockUsage = %+v", u)
	}
}
