package pricing_test

import (
	"fmt"
	"log"

	"github.com/agentmeter/agentmeter/pricing"
)

// A call with no cost reported is priced with the embedded table: the model
// as litellm names it, the usage as Anthropic reports it.
func Example() {
	u := pricing.FromAnthropicUsage(pricing.AnthropicUsage{
		InputTokens:              1200,
		CacheCreationInputTokens: 3000,
		CacheReadInputTokens:     10000,
		CacheCreation:            &pricing.AnthropicCacheCreation{Ephemeral5mInputTokens: 2000, Ephemeral1hInputTokens: 1000},
		OutputTokens:             850,
	})
	p, ok := pricing.Default().Price("", "anthropic/claude-sonnet-4-5-20250929")
	if !ok {
		log.Fatal("no price")
	}
	cost, saved := p.Cost(u)
	fmt.Printf("%s %s: $%.5f, cache saved $%.3f\n", p.Provider(), p.Model(), cost, saved)
	// Output: anthropic claude-sonnet-4-5-20250929: $0.03285, cache saved $0.027
}

// A table of your own, with a long-context tier.
func ExampleParse() {
	tab, err := pricing.Parse([]byte(`
version: "2025-11-01"
models:
  - provider: gcp.gemini
    name: gemini-2.5-pro
    input: 1.25
    output: 10
    cache_read: 0.125
    tiers:
      - {threshold: 200000, input: 2.50, output: 15, cache_read: 0.25}
`), "yaml")
	if err != nil {
		log.Fatal(err)
	}
	p, _ := tab.Price("gcp.gemini", "gemini-2.5-pro")
	small, _ := p.Cost(pricing.Usage{Prompt: 100000, Completion: 1000})
	large, _ := p.Cost(pricing.Usage{Prompt: 300000, Completion: 1000})
	fmt.Printf("%s: $%.3f, $%.3f\n", tab.Version(), small, large)
	// Output: 2025-11-01: $0.135, $0.765
}
