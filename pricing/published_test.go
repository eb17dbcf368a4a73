package pricing

import (
	"math"
	"path/filepath"
	"testing"
	"time"
)

// published is a model's price as its provider publishes it, in USD per
// million tokens, written here by hand from the provider's page (each case
// names it), never read from the LiteLLM file.
type published struct {
	input, cacheRead, cacheWrite, cacheWrite1h, output float64
}

// anthropicList is an Anthropic model's published card: 5-minute cache
// writes at 1.25x input, 1-hour writes at 2x, cache reads at 0.1x
// (docs.anthropic.com/en/docs/about-claude/pricing). Bedrock and Vertex
// bill Claude on the same card.
func anthropicList(input, output float64) published {
	return published{input: input, cacheRead: input * 0.1, cacheWrite: input * 1.25, cacheWrite1h: input * 2, output: output}
}

// regional is a Bedrock geographic (us., eu., ...) cross-region profile's
// price: 10% above the global one, for Claude Sonnet 4.5 / Haiku 4.5 /
// Opus 4.5 and later (docs.aws.amazon.com/bedrock/latest/userguide/
// global-cross-region-inference.html: global saves ~10% against
// geographic cross-region inference).
func regional(p published) published {
	return published{input: p.input * 1.1, cacheRead: p.cacheRead * 1.1, cacheWrite: p.cacheWrite * 1.1, cacheWrite1h: p.cacheWrite1h * 1.1, output: p.output * 1.1}
}

// noWrites is a provider that bills no cache writes: a written token is
// billed as input (OpenAI before GPT-5.6, Gemini's implicit caching, xAI,
// Mistral).
func noWrites(input, cacheRead, output float64) published {
	return published{input: input, cacheRead: cacheRead, cacheWrite: input, cacheWrite1h: input, output: output}
}

// want is the cost of u at p, worked out here from the published prices:
// uncached input, cache reads, writes and completion (reasoning included:
// every provider here bills reasoning as output).
func want(p published, u Usage) float64 {
	uncached := u.Prompt - u.CacheRead - u.CacheWrite - u.CacheWrite1h
	return (float64(uncached)*p.input + float64(u.CacheRead)*p.cacheRead + float64(u.CacheWrite)*p.cacheWrite +
		float64(u.CacheWrite1h)*p.cacheWrite1h + float64(u.Completion)*p.output) / 1e6
}

// tierCase is a long-context tier as published: above threshold prompt
// tokens every token is priced at p.
type tierCase struct {
	threshold int64
	p         published
}

type publishedCase struct {
	source          string // where the prices come from
	provider, model string
	p               published
	tier            *tierCase
	writes          bool // the provider bills cache writes: test them
}

// publishedCases are current models of every provider agentmeter maps,
// each priced by the built-in snapshot. A model whose snapshot price
// disagrees with its provider's page is not here but in
// TestSnapshotDisagreesWithPublished.
var publishedCases = []publishedCase{
	// ------------------------------------------------------------ OpenAI
	// developers.openai.com/api/docs/models/gpt-5.4 and gpt-5.5: prompts
	// with >272K input tokens are priced at 2x input and 1.5x output.
	{source: "developers.openai.com/api/docs/models/gpt-5.5", provider: "openai", model: "gpt-5.5",
		p: noWrites(5, 0.50, 30), tier: &tierCase{272000, noWrites(10, 1.00, 45)}},
	{source: "developers.openai.com/api/docs/models/gpt-5.4", provider: "openai", model: "gpt-5.4",
		p: noWrites(2.50, 0.25, 15), tier: &tierCase{272000, noWrites(5, 0.50, 22.50)}},
	{source: "openai.com/api/pricing (2026-06)", provider: "openai", model: "gpt-5.4-mini", p: noWrites(0.75, 0.075, 4.50)},
	{source: "openai.com/api/pricing (2026-06)", provider: "openai", model: "gpt-5.4-nano", p: noWrites(0.20, 0.02, 1.25)},
	{source: "community.openai.com GPT-5.4 pricing post (gpt-5.2 row)", provider: "openai", model: "gpt-5.2", p: noWrites(1.75, 0.175, 14)},
	{source: "openai.com/api/pricing (2025)", provider: "openai", model: "gpt-5", p: noWrites(1.25, 0.125, 10)},
	{source: "openai.com/api/pricing (2025)", provider: "openai", model: "gpt-5-mini", p: noWrites(0.25, 0.025, 2)},
	{source: "openai.com/api/pricing (2025)", provider: "openai", model: "gpt-4.1", p: noWrites(2, 0.50, 8)},
	{source: "openai.com/api/pricing (2025)", provider: "openai", model: "o4-mini", p: noWrites(1.10, 0.275, 4.40)},
	// --------------------------------------------------------- Anthropic
	{source: "docs.anthropic.com pricing; Opus 4.6 $5/$25", provider: "anthropic", model: "claude-opus-4-6", p: anthropicList(5, 25), writes: true},
	{source: "docs.anthropic.com pricing; Sonnet 4.6 $3/$15, flat to 1M", provider: "anthropic", model: "claude-sonnet-4-6", p: anthropicList(3, 15), writes: true},
	{source: "docs.anthropic.com pricing; Haiku 4.5 $1/$5", provider: "anthropic", model: "claude-haiku-4-5", p: anthropicList(1, 5), writes: true},
	{source: "docs.anthropic.com pricing; Opus 4.5 $5/$25", provider: "anthropic", model: "claude-opus-4-5", p: anthropicList(5, 25), writes: true},
	{source: "benchr.org GPT-5.6 comparison: Claude Opus 4.8 $5/$25", provider: "anthropic", model: "claude-opus-4-8", p: anthropicList(5, 25), writes: true},
	{source: "Bedrock Claude pricing summary: Opus 4.7 $5/$25", provider: "anthropic", model: "claude-opus-4-7", p: anthropicList(5, 25), writes: true},
	// ----------------------------------------------------------- Bedrock
	{source: "AWS global CRIS = list price", provider: "aws.bedrock", model: "global.anthropic.claude-opus-4-6-v1", p: anthropicList(5, 25), writes: true},
	{source: "AWS geographic CRIS = list + 10%", provider: "aws.bedrock", model: "us.anthropic.claude-opus-4-6-v1", p: regional(anthropicList(5, 25)), writes: true},
	{source: "AWS geographic CRIS = list + 10%", provider: "aws.bedrock", model: "eu.anthropic.claude-opus-4-6-v1", p: regional(anthropicList(5, 25)), writes: true},
	{source: "AWS global CRIS = list price", provider: "aws.bedrock", model: "global.anthropic.claude-sonnet-4-6", p: anthropicList(3, 15), writes: true},
	{source: "AWS geographic CRIS = list + 10%", provider: "aws.bedrock", model: "us.anthropic.claude-sonnet-4-6", p: regional(anthropicList(3, 15)), writes: true},
	{source: "AWS global CRIS = list price", provider: "aws.bedrock", model: "global.anthropic.claude-haiku-4-5-20251001-v1:0", p: anthropicList(1, 5), writes: true},
	{source: "AWS geographic CRIS = list + 10%", provider: "aws.bedrock", model: "eu.anthropic.claude-haiku-4-5-20251001-v1:0", p: regional(anthropicList(1, 5)), writes: true},
	// The in-Region model id, sent without its ":0" version.
	{source: "AWS in-Region Opus 4.5 = list price", provider: "aws.bedrock", model: "anthropic.claude-opus-4-5-20251101-v1", p: anthropicList(5, 25), writes: true},
	// ------------------------------------------------------------ Vertex
	{source: "cloud.google.com Claude on Vertex, global endpoint = list", provider: "gcp.vertex_ai", model: "claude-opus-4-6", p: anthropicList(5, 25), writes: true},
	{source: "cloud.google.com/vertex-ai/generative-ai/pricing: Gemini 3.1 Pro $2/$12, >200K $4/$18, cached 10%", provider: "gcp.vertex_ai", model: "gemini-3.1-pro-preview",
		p: noWrites(2, 0.20, 12), tier: &tierCase{200000, noWrites(4, 0.40, 18)}},
	{source: "cloud.google.com/vertex-ai/generative-ai/pricing: Gemini 2.5 Pro $1.25/$10, >200K $2.50/$15", provider: "gcp.vertex_ai", model: "gemini-2.5-pro",
		p: noWrites(1.25, 0.125, 10), tier: &tierCase{200000, noWrites(2.50, 0.25, 15)}},
	// ------------------------------------------------------------ Gemini
	{source: "ai.google.dev/gemini-api/docs/pricing: Gemini 3.1 Pro", provider: "gcp.gemini", model: "gemini-3.1-pro-preview",
		p: noWrites(2, 0.20, 12), tier: &tierCase{200000, noWrites(4, 0.40, 18)}},
	{source: "ai.google.dev/gemini-api/docs/pricing: Gemini 2.5 Pro", provider: "gcp.gemini", model: "gemini-2.5-pro",
		p: noWrites(1.25, 0.125, 10), tier: &tierCase{200000, noWrites(2.50, 0.25, 15)}},
	{source: "ai.google.dev/gemini-api/docs/pricing: Gemini 2.5 Flash $0.30/$2.50, cached $0.03", provider: "gcp.gemini", model: "gemini-2.5-flash", p: noWrites(0.30, 0.03, 2.50)},
	{source: "ai.google.dev/gemini-api/docs/pricing: Gemini 3 Flash $0.50/$3, cached $0.05", provider: "gcp.gemini", model: "gemini-3-flash-preview", p: noWrites(0.50, 0.05, 3)},
	// --------------------------------------------------------------- xAI
	// docs.x.ai/docs/models: Grok 4.3 $1.25 in, $0.20 cached, $2.50 out;
	// "different rates" above 200K, not published with numbers.
	{source: "docs.x.ai/docs/models (grok-4.3)", provider: "x_ai", model: "grok-4.3", p: noWrites(1.25, 0.20, 2.50)},
	// ----------------------------------------------------------- Mistral
	{source: "mistral.ai/news/devstral-2-vibe-cli: Devstral 2 $0.40/$2", provider: "mistral_ai", model: "devstral-latest", p: noWrites(0.40, 0.04, 2)},
	{source: "mistral.ai/pricing: Devstral Small 2 $0.10/$0.30", provider: "mistral_ai", model: "devstral-small-latest", p: noWrites(0.10, 0.01, 0.30)},
	{source: "mistral.ai/pricing: Mistral Large 3 $0.50/$1.50", provider: "mistral_ai", model: "mistral-large-3", p: noWrites(0.50, 0.05, 1.50)},
	{source: "mistral.ai/pricing: Codestral 25.08 $0.30/$0.90", provider: "mistral_ai", model: "codestral-2508", p: noWrites(0.30, 0.03, 0.90)},
}

// TestPublishedPrices prices calls of current models with the built-in
// snapshot and checks each cost, to 1e-12 USD, against the provider's
// published prices written above: a call below any tier (cache reads,
// reasoning, and for providers that bill them 5-minute and 1-hour cache
// writes), and for a model with a long-context tier a call exactly at the
// threshold and one token above it.
func TestPublishedPrices(t *testing.T) {
	w, err := NewWatcher(Source{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	at := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	providers := map[string]bool{}
	for _, c := range publishedCases {
		providers[c.provider] = true
		t.Run(c.provider+"/"+c.model, func(t *testing.T) {
			small := Usage{Prompt: 12000, CacheRead: 8000, Completion: 1800, Reasoning: 600}
			if c.writes {
				small.CacheWrite, small.CacheWrite1h = 1500, 500
			}
			checks := []struct {
				name string
				u    Usage
				p    published
			}{{"below any tier", small, c.p}}
			if c.tier != nil {
				n := c.tier.threshold
				checks = append(checks,
					struct {
						name string
						u    Usage
						p    published
					}{"at the threshold", Usage{Prompt: n, CacheRead: n / 2, Completion: 1000}, c.p},
					struct {
						name string
						u    Usage
						p    published
					}{"one token above", Usage{Prompt: n + 1, CacheRead: n / 2, Completion: 1000}, c.tier.p})
			}
			for _, ck := range checks {
				got, _, ok := w.Price(c.provider, c.model, at, ck.u)
				if !ok {
					t.Fatalf("%s: unpriced (source: %s)", ck.name, c.source)
				}
				if exp := want(ck.p, ck.u); math.Abs(got-exp) > 1e-12 {
					t.Errorf("%s: cost %.15f, published prices give %.15f (source: %s)", ck.name, got, exp, c.source)
				}
			}
		})
	}
	if len(publishedCases) < 30 {
		t.Errorf("%d models, want at least 30", len(publishedCases))
	}
	for _, p := range []string{"openai", "anthropic", "aws.bedrock", "gcp.vertex_ai", "gcp.gemini", "x_ai", "mistral_ai"} {
		if !providers[p] {
			t.Errorf("no published-price case for %s", p)
		}
	}
}

// TestSnapshotDisagreesWithPublished lists the models whose price in the
// built-in snapshot is not the one their provider published (as found when
// the snapshot was taken). It fails when a refresh brings a model in line,
// so that the model moves to publishedCases. The fix for a running
// collector is pricing.overrides: testdata/overrides/published-2026.yaml
// carries these prices, and TestPublishedOverrides prices with it.
func TestSnapshotDisagreesWithPublished(t *testing.T) {
	for _, c := range []struct {
		provider, model, source string
		input, output           float64 // published
	}{
		{"openai", "gpt-5.6-terra", "OpenAI GPT-5.6 announcement, 2026-06-26: $2.50/$15", 2.50, 15},
		{"openai", "gpt-5.6-sol", "OpenAI GPT-5.6 announcement, 2026-06-26: $5/$30", 5, 30},
		{"openai", "gpt-5.6-luna", "OpenAI GPT-5.6 announcement, 2026-06-26: $1/$6", 1, 6},
		{"deepseek", "deepseek-v4-flash", "api-docs.deepseek.com/quick_start/pricing, 2026-07: $0.14/$0.28", 0.14, 0.28},
		{"deepseek", "deepseek-v4-pro", "api-docs.deepseek.com/quick_start/pricing, 2026-07: $0.435/$0.87", 0.435, 0.87},
		{"x_ai", "grok-4.20-0309-reasoning", "docs.x.ai/developers/models.md: $2.00/$6.00", 2, 6},
	} {
		p, ok := Default().Price(c.provider, c.model)
		if !ok {
			t.Errorf("%s %s: not in the snapshot any more", c.provider, c.model)
			continue
		}
		if r := p.Rates(1); r.Input == c.input && r.Output == c.output {
			t.Errorf("%s %s: the snapshot now agrees with %s: move it to publishedCases", c.provider, c.model, c.source)
		}
	}
}

// TestPublishedOverrides: the published prices layered over the snapshot
// with pricing.overrides price OpenAI's cache writes and DeepSeek's cache
// reads as published, from each price's effective date on; before it the
// snapshot's price stays in force.
func TestPublishedOverrides(t *testing.T) {
	w, err := NewWatcher(Source{Overrides: filepath.Join("testdata", "overrides", "published-2026.yaml")}, nil)
	if err != nil {
		t.Fatal(err)
	}
	after := time.Date(2026, 7, 2, 0, 0, 0, 0, time.UTC)
	for _, c := range []struct {
		provider, model string
		p               published
		u               Usage
	}{
		// OpenAI GPT-5.6 Terra: cache writes at 1.25x input.
		{"openai", "gpt-5.6-terra", published{input: 2.50, cacheRead: 0.25, cacheWrite: 3.125, cacheWrite1h: 3.125, output: 15},
			Usage{Prompt: 50000, CacheRead: 30000, CacheWrite: 12000, Completion: 2500, Reasoning: 900}},
		{"deepseek", "deepseek-v4-flash", noWrites(0.14, 0.0028, 0.28), Usage{Prompt: 64000, CacheRead: 60000, Completion: 3000}},
		{"deepseek", "deepseek-v4-pro", noWrites(0.435, 0.003625, 0.87), Usage{Prompt: 64000, CacheRead: 60000, Completion: 3000}},
	} {
		got, _, ok := w.Price(c.provider, c.model, after, c.u)
		if exp := want(c.p, c.u); !ok || math.Abs(got-exp) > 1e-12 {
			t.Errorf("%s %s: %v %.15f, published %.15f", c.provider, c.model, ok, got, exp)
		}
		before := time.Date(2026, 5, 1, 0, 0, 0, 0, time.UTC)
		snap, _ := Default().Price(c.provider, c.model)
		sc, _ := snap.CostAt(c.u, before)
		if got, _, ok := w.Price(c.provider, c.model, before, c.u); !ok || got != sc {
			t.Errorf("%s %s before the override's date: %v %v, want the snapshot's %v", c.provider, c.model, ok, got, sc)
		}
	}
}
