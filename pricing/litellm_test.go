package pricing

import (
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func loadSmall(t *testing.T) *Table {
	t.Helper()
	tab, err := Source{Table: filepath.Join("testdata", "litellm", "small.json")}.Load()
	if err != nil {
		t.Fatal(err)
	}
	return tab
}

// TestLiteLLMRead: the format is told from the file; chat, responses and
// completion entries are priced, the rest skipped and counted; entries with
// bad values are listed, never priced; the price fields a call cannot
// express are counted as unused.
func TestLiteLLMRead(t *testing.T) {
	tab := loadSmall(t)
	if tab.Format() != FormatLiteLLM || !strings.HasPrefix(tab.Version(), "sha256:") {
		t.Errorf("format %q, version %q", tab.Format(), tab.Version())
	}
	rep := tab.Report()
	if rep.Entries != 17 || rep.Priced != 8 {
		t.Errorf("entries %d priced %d, want 17 and 8: %+v", rep.Entries, rep.Priced, rep)
	}
	for reason, n := range map[string]int{"mode embedding": 1, "mode image_generation": 1, "no output_cost_per_token": 1} {
		if rep.Skipped[reason] != n {
			t.Errorf("skipped[%q] = %d, want %d (%v)", reason, rep.Skipped[reason], n, rep.Skipped)
		}
	}
	wantUnusable := []string{
		"negative: input_cost_per_token: must not be negative, got -1e-06",
		`quoted: input_cost_per_token: must be a number, got "\"1e-06\""`,
		"not-an-object: must be an object",
	}
	if strings.Join(rep.Unusable, "\n") != strings.Join(wantUnusable, "\n") {
		t.Errorf("unusable:\n%s\nwant:\n%s", strings.Join(rep.Unusable, "\n"), strings.Join(wantUnusable, "\n"))
	}
	if len(rep.Conflicts) != 1 || !strings.Contains(rep.Conflicts[0], "mistral_ai clash") {
		t.Errorf("conflicts %v, want mistral_ai clash", rep.Conflicts)
	}
	for _, f := range []string{"input_cost_per_token_flex", "input_cost_per_token_batches", "input_cost_per_token_above_1000_tokens_batches"} {
		if rep.Unused[f] != 1 {
			t.Errorf("unused[%q] = %d, want 1 (%v)", f, rep.Unused[f], rep.Unused)
		}
	}
	if _, ok := rep.Unused["supports_vision"]; ok {
		t.Error("metadata counted as an unused price")
	}
	for _, name := range []string{"clash", "negative", "quoted", "text-embedding-x", "no-output"} {
		if l := tab.Lookup("", name); l.Match != MatchNone {
			t.Errorf("%s is priced (%v)", name, l.Match)
		}
	}
	if _, ok := tab.Price("openai", "responses-model"); !ok {
		t.Error("a responses-mode entry is not priced")
	}
}

func near(a, b float64) bool { return math.Abs(a-b) <= 1e-12 }

// TestLiteLLMTiers: every *_above_<N>k_tokens tier, any number of them,
// each rate it does not state carried from the level below; cache and
// reasoning defaults; xAI's inclusive thresholds; tiered_pricing brackets.
func TestLiteLLMTiers(t *testing.T) {
	tab := loadSmall(t)
	p, ok := tab.Price("openai", "tiered-4")
	if !ok {
		t.Fatal("no price")
	}
	tests := []struct {
		prompt int64
		want   Rates
	}{
		{128000, Rates{Input: 1, Output: 2, CacheRead: 0.1, CacheWrite: 1.25, CacheWrite1h: 2, Reasoning: 3}},
		{128001, Rates{Input: 2, Output: 4, CacheRead: 0.1, CacheWrite: 1.25, CacheWrite1h: 2, Reasoning: 3}},
		{200000, Rates{Input: 2, Output: 4, CacheRead: 0.1, CacheWrite: 1.25, CacheWrite1h: 2, Reasoning: 3}},
		{200001, Rates{Input: 4, Output: 4, CacheRead: 0.4, CacheWrite: 1.25, CacheWrite1h: 8, Reasoning: 3}},
	}
	for _, tt := range tests {
		if got := p.Rates(tt.prompt); got != tt.want {
			t.Errorf("Rates(%d) = %+v, want %+v", tt.prompt, got, tt.want)
		}
	}
	// Reasoning tokens are part of the completion, priced apart.
	cost, _ := p.Cost(Usage{Prompt: 1000, Completion: 500, Reasoning: 200})
	if want := (1000*1.0 + 300*2.0 + 200*3.0) / 1e6; !near(cost, want) {
		t.Errorf("cost %v, want %v", cost, want)
	}

	x, _ := tab.Price("x_ai", "grok-test")
	if r := x.Rates(199999); r.Input != 1 {
		t.Errorf("xai below the threshold: %+v", r)
	}
	if r := x.Rates(200000); r.Input != 2 || r.Output != 4 || r.CacheRead != 2 {
		t.Errorf("xai at the threshold (inclusive): %+v", r)
	}

	b, _ := tab.Price("dashscope", "brackets")
	for _, tt := range []struct {
		prompt        int64
		input, output float64
	}{{1, 1, 5}, {32000, 1, 5}, {32001, 1.8, 9}, {128000, 1.8, 9}, {128001, 3, 15}, {256001, 3, 15}} {
		if r := b.Rates(tt.prompt); r.Input != tt.input || r.Output != tt.output {
			t.Errorf("brackets Rates(%d) = %+v, want input %v output %v", tt.prompt, r, tt.input, tt.output)
		}
	}
	if r := b.Rates(10); r.CacheRead != 0.1 {
		t.Errorf("bracket cache read %v", r.CacheRead)
	}
}

// TestLiteLLMProviders: litellm_provider and key prefixes map to
// gen_ai.provider.name values; Bedrock ids match with and without their
// region and version.
func TestLiteLLMProviders(t *testing.T) {
	tab := loadSmall(t)
	tests := []struct {
		provider, model string
		entry           string
		match           MatchKind
	}{
		{"aws.bedrock", "us.vendor.model-v1:0", "us.vendor.model-v1:0", MatchExact},
		{"bedrock", "us.vendor.model-v1", "us.vendor.model-v1:0", MatchAlias},
		{"aws.bedrock", "eu.vendor.model-v1:0", "vendor.model-v1:0", MatchAlias},
		{"", "bedrock/converse/vendor.model-v1:0", "vendor.model-v1:0", MatchExact},
		{"gcp.vertex_ai", "vendor-model", "vendor-model", MatchExact},
		{"", "vertex_ai/vendor-model", "vendor-model", MatchExact},
		{"x_ai", "grok-test", "grok-test", MatchExact},
		{"xai", "xai/grok-test", "grok-test", MatchExact},
		{"deepseek", "dup", "dup", MatchExact},
		{"", "deepseek/dup", "dup", MatchExact},
	}
	for _, tt := range tests {
		l := tab.Lookup(tt.provider, tt.model)
		p, ok := l.At(time.Now())
		if !ok || l.Match != tt.match || p.Model() != tt.entry {
			t.Errorf("Lookup(%q, %q) = %v %v %v, want %s by %v", tt.provider, tt.model, ok, l.Match, p.Model(), tt.entry, tt.match)
		}
	}
	if p, _ := tab.Price("deepseek", "dup"); p.Rates(1).CacheRead != 0.1 {
		t.Errorf("input_cost_per_token_cache_hit is not the cache read price: %+v", p.Rates(1))
	}
}

// TestLiteLLMRefused: files that are not a LiteLLM table at all are refused
// whole, with the line.
func TestLiteLLMRefused(t *testing.T) {
	for name, data := range map[string]string{
		"truncated":   `{"m": {"litellm_provider": "openai", "mode": "chat", "input_cost_per_token": 1e-06, "output_cost_per_token": 2e-06}, "n": {"litellm_pro`,
		"array":       `[1, 2]`,
		"repeated":    "{\"m\": {\"litellm_provider\": \"openai\", \"input_cost_per_token\": 1, \"output_cost_per_token\": 1},\n\"m\": {}}",
		"no chat":     `{"e": {"litellm_provider": "openai", "mode": "embedding", "input_cost_per_token": 1e-07}}`,
		"trailing":    `{"m": {"litellm_provider": "openai", "input_cost_per_token": 1, "output_cost_per_token": 1}} {}`,
		"empty":       ``,
		"not json":    `models: []`,
		"not entries": `{"a": 1}`,
	} {
		if _, err := Parse([]byte(data), FormatLiteLLM); err == nil {
			t.Errorf("%s: accepted", name)
		} else {
			t.Logf("%s: %v", name, err)
		}
	}
}

func TestDetectFormat(t *testing.T) {
	dir := t.TempDir()
	for _, tt := range []struct{ name, body, want string }{
		{"a.json", `{"models": [{"provider": "p", "name": "m", "input": 1, "output": 1}]}`, FormatAgentmeter},
		{"b.json", `{"sample_spec": {"mode": "chat"}, "m": {"litellm_provider": "openai", "input_cost_per_token": 1e-06, "output_cost_per_token": 1e-06}}`, FormatLiteLLM},
		{"c.yaml", "models: [{provider: p, name: m, input: 1, output: 1}]", FormatAgentmeter},
	} {
		tab, err := Source{Table: writeFile(t, dir, tt.name, tt.body)}.Load()
		if err != nil || tab.Format() != tt.want {
			t.Errorf("%s: %v, format %v, want %s", tt.name, err, tab, tt.want)
		}
	}
	if _, err := (Source{Table: writeFile(t, dir, "d.json", `{"x": 1}`)}).Load(); err == nil || !strings.Contains(err.Error(), "declare pricing.format") {
		t.Errorf("undetectable: %v", err)
	}
	// Declared: a LiteLLM file read as agentmeter's is refused, and back.
	if _, err := (Source{Table: filepath.Join("testdata", "litellm", "small.json"), Format: FormatAgentmeter}).Load(); err == nil {
		t.Error("a LiteLLM file read as agentmeter's was accepted")
	}
	if _, err := (Source{Table: writeFile(t, dir, "e.txt", `{"m": {"litellm_provider": "openai", "input_cost_per_token": 1e-06, "output_cost_per_token": 1e-06}}`), Format: FormatLiteLLM}).Load(); err != nil {
		t.Errorf("declared litellm with any extension: %v", err)
	}
}

// TestOverrides: an override replaces the base price of its model, or from
// its effective_from on; aliases and private models are added; a call is
// priced at the price in force at its time.
func TestOverrides(t *testing.T) {
	dir := t.TempDir()
	over := writeFile(t, dir, "over.yaml", `
version: neg-1
models:
  - provider: openai
    name: tiered-4
    input: 0.5
    output: 1
  - provider: anthropic
    name: claude-private
    aliases: [claude-latest-private]
    input: 1
    output: 2
  - provider: anthropic
    name: claude-private
    effective_from: 2026-06-01
    input: 0.8
    output: 1.6
  - provider: aws.bedrock
    name: vendor.model-v1:0
    effective_from: 2026-03-01T00:00:00Z
    input: 4
    output: 20
`)
	tab, err := Source{Table: filepath.Join("testdata", "litellm", "small.json"), Overrides: over}.Load()
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasSuffix(tab.Version(), "+neg-1") {
		t.Errorf("version %q", tab.Version())
	}
	at := func(s string) time.Time {
		tm, err := time.Parse(time.RFC3339, s)
		if err != nil {
			t.Fatal(err)
		}
		return tm
	}
	for _, tt := range []struct {
		provider, model, at string
		input               float64
		origin              string
	}{
		{"openai", "tiered-4", "2020-01-01T00:00:00Z", 0.5, "overrides:models[0]"},
		{"anthropic", "claude-latest-private", "2026-05-31T23:59:59Z", 1, "overrides:models[1]"},
		{"anthropic", "claude-private", "2026-06-01T00:00:00Z", 0.8, "overrides:models[2]"},
		{"aws.bedrock", "vendor.model-v1:0", "2026-02-28T23:59:59Z", 5, "litellm:vendor.model-v1:0"},
		{"aws.bedrock", "vendor.model-v1:0", "2026-03-01T00:00:00Z", 4, "overrides:models[3]"},
		{"aws.bedrock", "eu.vendor.model-v1:0", "2026-03-02T00:00:00Z", 4, "overrides:models[3]"},
	} {
		p, ok := tab.PriceAt(tt.provider, tt.model, at(tt.at))
		if !ok || p.Rates(1).Input != tt.input || p.Origin() != tt.origin {
			t.Errorf("PriceAt(%s, %s, %s) = %v %+v %s, want input %v from %s", tt.provider, tt.model, tt.at, ok, p.Rates(1), p.Origin(), tt.input, tt.origin)
		}
	}
	// Tiers of an override entry replace the base's: none here.
	if p, _ := tab.Price("openai", "tiered-4"); len(p.Tiers()) != 0 {
		t.Errorf("override kept the base tiers: %+v", p.Tiers())
	}

	// A price that starts later leaves earlier calls unpriced.
	only := writeFile(t, dir, "later.yaml", "models: [{provider: p, name: m, effective_from: 2030-01-01, input: 1, output: 1}]")
	tab, err = Source{Table: filepath.Join("testdata", "litellm", "small.json"), Overrides: only}.Load()
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := tab.PriceAt("p", "m", at("2029-12-31T00:00:00Z")); ok {
		t.Error("priced before its effective_from")
	}

	for name, body := range map[string]string{
		"same date twice":    "models: [{provider: p, name: m, effective_from: 2026-01-01, input: 1, output: 1}, {provider: p, name: m, effective_from: 2026-01-01, input: 2, output: 2}]",
		"bad date":           "models: [{provider: p, name: m, effective_from: 2026-13-01, input: 1, output: 1}]",
		"later with aliases": "models: [{provider: p, name: m, input: 1, output: 1}, {provider: p, name: m, effective_from: 2026-01-01, aliases: [x], input: 2, output: 2}]",
	} {
		path := writeFile(t, dir, "bad.yaml", body)
		if _, err := (Source{Overrides: path}).Load(); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

// TestPatternLendsNoTiers: a model found only by a pattern gets the
// entry's base price below the entry's first tier and is unpriced from it
// on; an exact entry always beats a pattern.
func TestPatternLendsNoTiers(t *testing.T) {
	dir := t.TempDir()
	over := writeFile(t, dir, "over.yaml", `
models:
  - provider: anthropic
    name: claude-sonnet-4-20250514
    patterns: ["claude-sonnet-4-*"]
    input: 3
    output: 15
    tiers: [{threshold: 200000, input: 6, output: 22.5}]
`)
	w, err := NewWatcher(Source{Overrides: over}, nil)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	// claude-sonnet-4-6 is in the snapshot: exact, flat to 1M.
	l := w.Current().Lookup("anthropic", "claude-sonnet-4-6")
	if l.Match != MatchExact {
		t.Fatalf("claude-sonnet-4-6: %v", l.Match)
	}
	cost, _, ok := w.Price("anthropic", "claude-sonnet-4-6", now, Usage{Prompt: 300000, Completion: 1000})
	if want := (300000*3.0 + 1000*15.0) / 1e6; !ok || !near(cost, want) {
		t.Errorf("claude-sonnet-4-6 at 300k: %v %v, want %v (no long-context tier)", cost, ok, want)
	}
	// A model only the pattern finds: base price below 200k, unpriced above.
	if l := w.Current().Lookup("anthropic", "claude-sonnet-4-99"); l.Match != MatchPattern {
		t.Fatalf("claude-sonnet-4-99: %v", l.Match)
	}
	if cost, _, ok := w.Price("anthropic", "claude-sonnet-4-99", now, Usage{Prompt: 200000, Completion: 1000}); !ok || !near(cost, (200000*3.0+1000*15.0)/1e6) {
		t.Errorf("pattern at the threshold: %v %v", cost, ok)
	}
	if _, _, ok := w.Price("anthropic", "claude-sonnet-4-99", now, Usage{Prompt: 200001, Completion: 1000}); ok {
		t.Error("a pattern lent its entry's long-context tier")
	}
	// The entry itself gets its tier.
	if cost, _, ok := w.Price("anthropic", "claude-sonnet-4-20250514", now, Usage{Prompt: 200001}); !ok || !near(cost, 200001*6.0/1e6) {
		t.Errorf("exact entry above its tier: %v %v", cost, ok)
	}
}

func TestSnapshotIntact(t *testing.T) {
	data, err := os.ReadFile(filepath.Join("snapshot", "snapshot.json"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(data), DefaultSnapshot().SHA256) || DefaultSnapshot().Version == "" || Default().Version() == "invalid-embedded-table" {
		t.Errorf("snapshot %+v, table %s", DefaultSnapshot(), Default().Version())
	}
}

// TestOffPeak: DeepSeek's off_peak_pricing, from the snapshot: its rates
// replace the standard ones while a window is open at the call's time
// (start inclusive, end exclusive; weekends all day), reasoning at the
// off-peak output price.
func TestOffPeak(t *testing.T) {
	p, ok := Default().Price("deepseek", "deepseek-v4-pro")
	if !ok || !p.HasOffPeak() {
		t.Fatal("deepseek-v4-pro has no off-peak prices in the snapshot")
	}
	std := p.Rates(1)
	// The snapshot's off-peak rates (per million): input 0.66, output 1.98,
	// cache read 0.022.
	off := Rates{Input: 0.66, Output: 1.98, CacheRead: 0.022, CacheWrite: std.CacheWrite, CacheWrite1h: std.CacheWrite1h, Reasoning: 1.98}
	for _, tt := range []struct {
		at   string
		want Rates
	}{
		{"2026-12-02T03:00:00Z", std}, // Wednesday, between windows
		{"2026-12-02T00:59:59Z", off}, // 00:00-01:00
		{"2026-12-02T01:00:00Z", std}, // the end is exclusive
		{"2026-12-02T04:00:00Z", off}, // 04:00-06:00
		{"2026-12-02T09:59:00Z", std},
		{"2026-12-02T10:00:00Z", off}, // 10:00-00:00 runs to midnight
		{"2026-12-02T23:59:00Z", off},
		{"2026-12-05T03:00:00Z", off}, // Saturday: all day
		{"2026-12-06T08:00:00Z", off}, // Sunday
	} {
		at, _ := time.Parse(time.RFC3339, tt.at)
		if got := p.RatesAt(1, at); got != tt.want {
			t.Errorf("RatesAt(%s) = %+v, want %+v", tt.at, got, tt.want)
		}
	}
	u := Usage{Prompt: 1000, CacheRead: 600, Completion: 300, Reasoning: 100}
	at, _ := time.Parse(time.RFC3339, "2026-12-05T03:00:00Z")
	cost, _ := p.CostAt(u, at)
	if want := (400*0.66 + 600*0.022 + 300*1.98) / 1e6; !near(cost, want) {
		t.Errorf("off-peak cost %v, want %v", cost, want)
	}
	if c, _ := p.Cost(u); near(c, cost) {
		t.Error("Cost applied off-peak prices")
	}
}

// TestFirstUseLogged: the first lookup of a model in a table logs how its
// price was found (info for an alias or a pattern, debug otherwise), once.
func TestFirstUseLogged(t *testing.T) {
	var buf syncBuffer
	logger := slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelInfo}))
	w, err := NewWatcher(Source{Table: filepath.Join("testdata", "litellm", "small.json")}, logger)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	u := Usage{Prompt: 10, Completion: 10}
	w.Price("aws.bedrock", "eu.vendor.model-v1:0", now, u)
	w.Price("aws.bedrock", "eu.vendor.model-v1:0", now, u)
	w.Price("openai", "tiered-4", now, u) // exact: debug, not logged at info
	logged := buf.String()
	if n := strings.Count(logged, "price found"); n != 1 {
		t.Fatalf("%d \"price found\" lines, want 1:\n%s", n, logged)
	}
	for _, want := range []string{"match=alias", "matched=vendor.model-v1:0", "origin=litellm:vendor.model-v1:0", "model=eu.vendor.model-v1:0"} {
		if !strings.Contains(logged, want) {
			t.Errorf("log lacks %q:\n%s", want, logged)
		}
	}
}
