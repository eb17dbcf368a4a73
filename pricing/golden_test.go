package pricing

import (
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"testing"
)

// TestGolden prices real response payloads of each provider's convention
// with the default table. Each case maps the payload's usage the way an
// agent integration would, and its expected cost is worked out by hand in
// the comment (rates in USD per million tokens, so each sum is divided by
// 1e6).
func TestGolden(t *testing.T) {
	tests := []struct {
		file            string
		provider, model string
		mapUsage        func(t *testing.T, raw json.RawMessage) Usage
		wantUsage       Usage
		wantCost        float64
		wantSavings     float64
	}{
		{
			// gpt-4o: input 2.50, cache read 1.25, output 10.
			// uncached 2006-1920 = 86:  86 x 2.50 =  215
			// cache read   1920 x 1.25          = 2400
			// output        300 x 10            = 3000
			// cost    = 5615 / 1e6 = 0.005615
			// savings = 1920 x (2.50-1.25) = 2400 / 1e6 = 0.0024
			file: "openai_gpt4o_cached.json", provider: "openai", model: "gpt-4o-2024-08-06",
			mapUsage:  openAI,
			wantUsage: Usage{Prompt: 2006, Completion: 300, CacheRead: 1920},
			wantCost:  0.005615, wantSavings: 0.0024,
		},
		{
			// o4-mini: input 1.10, cache read 0.275, output 4.40.
			// uncached 1500-1024 = 476: 476 x 1.10  =  523.6
			// cache read      1024 x 0.275          =  281.6
			// output 2200 (1792 reasoning) x 4.40   = 9680
			// cost    = 10485.2 / 1e6 = 0.0104852
			// savings = 1024 x (1.10-0.275) = 844.8 / 1e6 = 0.0008448
			file: "openai_o4mini_reasoning.json", provider: "openai", model: "o4-mini-2025-04-16",
			mapUsage:  openAI,
			wantUsage: Usage{Prompt: 1500, Completion: 2200, CacheRead: 1024, Reasoning: 1792},
			wantCost:  0.0104852, wantSavings: 0.0008448,
		},
		{
			// Anthropic through litellm; litellm's model string, no provider.
			// claude-sonnet-4: input 3, output 15, read 0.30, write 5m 3.75, 1h 6.
			// prompt 14200 = 1200 uncached + 3000 written (2000 5m, 1000 1h) + 10000 read
			// uncached 1200 x 3    =  3600
			// read    10000 x 0.30 =  3000
			// 5m       2000 x 3.75 =  7500
			// 1h       1000 x 6    =  6000
			// output    850 x 15   = 12750
			// cost    = 32850 / 1e6 = 0.03285
			// savings = 10000 x (3-0.30) = 27000 / 1e6 = 0.027
			file: "litellm_anthropic_sonnet4.json", provider: "", model: "anthropic/claude-sonnet-4-20250514",
			mapUsage:  liteLLM,
			wantUsage: Usage{Prompt: 14200, Completion: 850, CacheRead: 10000, CacheWrite: 2000, CacheWrite1h: 1000, Reasoning: 300},
			wantCost:  0.03285, wantSavings: 0.027,
		},
		{
			// The same call in the Anthropic Messages API's own shape, where
			// input_tokens excludes the cache: same usage, same cost.
			file: "anthropic_messages_sonnet4.json", provider: "anthropic", model: "claude-sonnet-4-20250514",
			mapUsage:  anthropic,
			wantUsage: Usage{Prompt: 14200, Completion: 850, CacheRead: 10000, CacheWrite: 2000, CacheWrite1h: 1000},
			wantCost:  0.03285, wantSavings: 0.027,
		},
		{
			// Long context: prompt 250000 > 200000, so every token is billed at
			// the tier: input 6, output 22.50, read 0.60, write 5m 7.50.
			// uncached 50000 x 6    = 300000
			// read    180000 x 0.60 = 108000
			// 5m       20000 x 7.50 = 150000 (no split reported: all 5-minute)
			// output    4000 x 22.5 =  90000
			// cost    = 648000 / 1e6 = 0.648
			// savings = 180000 x (6-0.60) = 972000 / 1e6 = 0.972
			file: "litellm_anthropic_sonnet4_long_context.json", provider: "anthropic", model: "claude-sonnet-4-20250514",
			mapUsage:  liteLLM,
			wantUsage: Usage{Prompt: 250000, Completion: 4000, CacheRead: 180000, CacheWrite: 20000},
			wantCost:  0.648, wantSavings: 0.972,
		},
		{
			// Bedrock Converse, US cross-region profile of Sonnet 4: inputTokens
			// excludes the cache. Prompt = 800 + 6000 + 2000 = 8800.
			// Rates: input 3, output 15, read 0.30, write 3.75.
			// uncached 800 x 3    = 2400
			// read    6000 x 0.30 = 1800
			// write   2000 x 3.75 = 7500
			// output   400 x 15   = 6000
			// cost    = 17700 / 1e6 = 0.0177
			// savings = 6000 x (3-0.30) = 16200 / 1e6 = 0.0162
			file: "bedrock_converse_sonnet4.json", provider: "aws.bedrock", model: "us.anthropic.claude-sonnet-4-20250514-v1:0",
			mapUsage:  bedrock,
			wantUsage: Usage{Prompt: 8800, Completion: 400, CacheRead: 6000, CacheWrite: 2000},
			wantCost:  0.0177, wantSavings: 0.0162,
		},
		{
			// Bedrock Converse, EU profile of Haiku 4.5 (regional rates: input
			// 1.10, output 5.50, read 0.11, write 5m 1.375, 1h 2.20), with a
			// 1-hour cache write in cacheDetails; litellm's "bedrock/" prefix.
			// Prompt = 500 + 4000 + 3000 = 7500.
			// uncached 500 x 1.10  =  550
			// read    4000 x 0.11  =  440
			// 5m      2000 x 1.375 = 2750
			// 1h      1000 x 2.20  = 2200
			// output   300 x 5.50  = 1650
			// cost    = 7590 / 1e6 = 0.00759
			// savings = 4000 x (1.10-0.11) = 3960 / 1e6 = 0.00396
			file: "bedrock_converse_haiku45_1h.json", provider: "", model: "bedrock/eu.anthropic.claude-haiku-4-5-20251001-v1:0",
			mapUsage:  bedrock,
			wantUsage: Usage{Prompt: 7500, Completion: 300, CacheRead: 4000, CacheWrite: 2000, CacheWrite1h: 1000},
			wantCost:  0.00759, wantSavings: 0.00396,
		},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			data, err := os.ReadFile(filepath.Join("testdata", "golden", tt.file))
			if err != nil {
				t.Fatal(err)
			}
			var payload struct {
				Usage json.RawMessage `json:"usage"`
			}
			if err := json.Unmarshal(data, &payload); err != nil {
				t.Fatal(err)
			}
			u := tt.mapUsage(t, payload.Usage)
			if u != tt.wantUsage {
				t.Errorf("usage = %+v, want %+v", u, tt.wantUsage)
			}
			p, ok := handTable(t).Price(tt.provider, tt.model)
			if !ok {
				t.Fatalf("Price(%q, %q): no price", tt.provider, tt.model)
			}
			cost, savings := p.Cost(u)
			if math.Abs(cost-tt.wantCost) > 1e-12 {
				t.Errorf("cost = %.15f, want %.15f", cost, tt.wantCost)
			}
			if math.Abs(savings-tt.wantSavings) > 1e-12 {
				t.Errorf("savings = %.15f, want %.15f", savings, tt.wantSavings)
			}
		})
	}
}

func decodeJSON[T any](t *testing.T, raw json.RawMessage) T {
	t.Helper()
	var v T
	if err := json.Unmarshal(raw, &v); err != nil {
		t.Fatalf("decode usage: %v", err)
	}
	return v
}

func openAI(t *testing.T, raw json.RawMessage) Usage {
	return FromOpenAIUsage(decodeJSON[OpenAIUsage](t, raw))
}

func anthropic(t *testing.T, raw json.RawMessage) Usage {
	return FromAnthropicUsage(decodeJSON[AnthropicUsage](t, raw))
}

func liteLLM(t *testing.T, raw json.RawMessage) Usage {
	return FromLiteLLMUsage(decodeJSON[LiteLLMUsage](t, raw))
}

func bedrock(t *testing.T, raw json.RawMessage) Usage {
	return FromBedrockUsage(decodeJSON[BedrockUsage](t, raw))
}

// handTable is the hand-written table that was built in until 2025-11
// (testdata/builtin-2025-11-24.yaml): the usage mappers' golden cases and
// the cost tests are worked out by hand against it.
func handTable(t testing.TB) *Table {
	t.Helper()
	tab, err := Load(filepath.Join("testdata", "builtin-2025-11-24.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	return tab
}
