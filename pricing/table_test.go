package pricing

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strings"
	"sync"
	"testing"
)

func TestDefaultParses(t *testing.T) {
	d := Default()
	if d != Default() {
		t.Error("Default() is not parsed once")
	}
	snap := DefaultSnapshot()
	if d.Version() != "litellm-"+snap.Version || d.Format() != FormatLiteLLM || d.Source() != snap.Source() {
		t.Errorf("Version() = %q, Format() = %q, Source() = %q; snapshot %+v", d.Version(), d.Format(), d.Source(), snap)
	}
	if d.AsOf().IsZero() || d.AsOf().Format("2006-01-02") != snap.Taken {
		t.Errorf("AsOf() = %v, want the snapshot's date %s", d.AsOf(), snap.Taken)
	}
	if rep := d.Report(); rep.Priced < 1000 || rep.Priced != d.Models() || rep.SkippedTotal() == 0 {
		t.Errorf("report %+v: want over 1000 chat models priced and the other modes skipped", rep)
	}
	// Models as agents name them, through every provider mapping.
	for _, c := range []struct{ provider, model string }{
		{"openai", "gpt-4o"}, {"openai", "gpt-4o-mini"}, {"openai", "gpt-4.1"}, {"openai", "gpt-4.1-mini"},
		{"openai", "o3"}, {"openai", "o4-mini"}, {"openai", "gpt-5"}, {"openai", "gpt-5-mini"},
		{"openai", "gpt-5.6"}, {"openai", "gpt-5.3-codex"},
		{"anthropic", "claude-sonnet-4-5-20250929"},
		{"anthropic", "claude-opus-4-6"}, {"anthropic", "claude-opus-4-8"}, {"anthropic", "claude-opus-5"},
		{"anthropic", "claude-sonnet-5"}, {"anthropic", "claude-haiku-4-5-20251001"},
		{"aws.bedrock", "anthropic.claude-sonnet-4-20250514-v1:0"},
		{"aws.bedrock", "us.anthropic.claude-sonnet-4-5-20250929-v1:0"},
		{"aws.bedrock", "us.anthropic.claude-opus-4-6-v1"},
		{"aws.bedrock", "global.anthropic.claude-haiku-4-5-20251001-v1:0"},
		{"bedrock", "eu.anthropic.claude-opus-4-7"},
		{"gcp.gemini", "gemini-2.5-pro"}, {"gcp.vertex_ai", "gemini-2.5-flash"},
		{"gcp.gemini", "gemini-3.1-pro-preview"}, {"gcp.vertex_ai", "claude-opus-4-6"},
		{"x_ai", "grok-code-fast-1"}, {"xai", "grok-4.3"}, {"deepseek", "deepseek-v4-pro"},
		{"mistral_ai", "devstral-latest"}, {"mistral", "codestral-latest"},
		{"", "anthropic/claude-opus-4-6"}, {"", "bedrock/us.anthropic.claude-opus-4-6-v1"},
		{"", "gemini/gemini-3.5-flash"}, {"", "vertex_ai/claude-opus-4-6"}, {"", "xai/grok-4.3"},
		{"", "deepseek/deepseek-v4-pro"}, {"", "azure/gpt-5.1"}, {"", "azure/eu/gpt-5.1"},
	} {
		if _, ok := d.Price(c.provider, c.model); !ok {
			t.Errorf("Default has no price for (%q, %q)", c.provider, c.model)
		}
	}
}

const matchTable = `
version: test-1
provider_aliases:
  openrouter_anthropic: anthropic
models:
  - provider: anthropic
    name: claude-x-1
    aliases: [claude-x]
    patterns: ["claude-*"]
    input: 1
    output: 2
  - provider: anthropic
    name: claude-x-2
    aliases: [claude-x-latest]
    patterns: ["claude-x-*", "claude-y*"]
    input: 10
    output: 20
  - provider: anthropic
    name: claude-x-alias-target
    aliases: [claude-x-3]
    input: 100
    output: 200
  - provider: aws.bedrock
    name: anthropic.claude-x-1-v1:0
    input: 3
    output: 4
  - provider: aws.bedrock
    name: global.anthropic.claude-x-1-v1:0
    input: 2.5
    output: 4
  - provider: openai
    name: shared
    input: 5
    output: 5
  - provider: azure.ai.openai
    name: shared
    input: 5
    output: 5
  - provider: openai
    name: clash
    input: 5
    output: 5
  - provider: gcp.gemini
    name: clash
    input: 6
    output: 6
  - provider: acme
    name: gizmo
    patterns: ["gizmo/*"]
    input: 7
    output: 7
`

func TestPriceMatching(t *testing.T) {
	tab, err := Parse([]byte(matchTable), "yaml")
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name            string
		provider, model string
		want            string // ModelPrice.Model(), "" = no price
		wantProvider    string
	}{
		{"exact", "anthropic", "claude-x-1", "claude-x-1", "anthropic"},
		{"alias", "anthropic", "claude-x", "claude-x-1", "anthropic"},
		{"exact beats pattern", "anthropic", "claude-x-2", "claude-x-2", "anthropic"},
		{"alias beats pattern", "anthropic", "claude-x-3", "claude-x-alias-target", "anthropic"},
		{"longest pattern wins", "anthropic", "claude-x-9", "claude-x-2", "anthropic"},
		{"shorter pattern", "anthropic", "claude-z", "claude-x-1", "anthropic"},
		{"case and space insensitive", " Anthropic ", "CLAUDE-X-1", "claude-x-1", "anthropic"},
		{"prefix pattern crosses slash", "acme", "gizmo/v2/large", "gizmo", "acme"},
		{"unknown model", "anthropic", "gpt-4o", "", ""},
		{"unknown provider", "mistral", "claude-x-1", "", ""},
		{"provider scopes the model", "openai", "claude-x-1", "", ""},
		{"litellm prefix", "anthropic", "anthropic/claude-x-1", "claude-x-1", "anthropic"},
		{"litellm prefix names the provider", "", "anthropic/claude-x", "claude-x-1", "anthropic"},
		{"file provider alias as prefix", "", "openrouter_anthropic/claude-x", "claude-x-1", "anthropic"},
		{"file provider alias as provider", "openrouter_anthropic", "claude-x", "claude-x-1", "anthropic"},
		{"builtin alias bedrock", "bedrock", "anthropic.claude-x-1-v1:0", "anthropic.claude-x-1-v1:0", "aws.bedrock"},
		{"bedrock region stripped", "aws.bedrock", "us.anthropic.claude-x-1-v1:0", "anthropic.claude-x-1-v1:0", "aws.bedrock"},
		{"bedrock region exact entry wins", "aws.bedrock", "global.anthropic.claude-x-1-v1:0", "global.anthropic.claude-x-1-v1:0", "aws.bedrock"},
		{"litellm bedrock route", "", "bedrock/converse/eu.anthropic.claude-x-1-v1:0", "anthropic.claude-x-1-v1:0", "aws.bedrock"},
		{"empty provider unambiguous", "", "claude-x-latest", "claude-x-2", "anthropic"},
		{"empty provider, same prices", "", "shared", "shared", "azure.ai.openai"},
		{"empty provider ambiguous", "", "clash", "", ""},
		{"empty model", "anthropic", "", "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for range 2 { // the second lookup comes from the memo
				p, ok := tab.Price(tt.provider, tt.model)
				if ok != (tt.want != "") {
					t.Fatalf("Price(%q, %q) ok = %v, want %v", tt.provider, tt.model, ok, tt.want != "")
				}
				if !ok {
					if p != nil {
						t.Fatalf("Price returned %v with false", p)
					}
					continue
				}
				if p.Model() != tt.want || p.Provider() != tt.wantProvider {
					t.Errorf("Price(%q, %q) = %s/%s, want %s/%s", tt.provider, tt.model, p.Provider(), p.Model(), tt.wantProvider, tt.want)
				}
			}
		})
	}
}

func TestVersion(t *testing.T) {
	data := []byte("models:\n  - {provider: p, name: m, input: 1, output: 1}\n")
	tab, err := Parse(data, "yaml")
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(data)
	if want := "sha256:" + hex.EncodeToString(sum[:])[:12]; tab.Version() != want {
		t.Errorf("Version() = %q, want %q", tab.Version(), want)
	}
	tab, err = Parse([]byte("version: \"2\"\n"+string(data)), "yaml")
	if err != nil {
		t.Fatal(err)
	}
	if tab.Version() != "2" {
		t.Errorf("Version() = %q, want 2", tab.Version())
	}
}

func TestJSONMatchesYAML(t *testing.T) {
	y := `version: v
as_of: 2025-01-02
sources: [https://example.com/pricing]
models:
  - provider: p
    name: m
    aliases: [m2]
    input: 1.5
    output: 3
    cache_read: 0.15
    tiers:
      - {threshold: 1000, input: 3, output: 6}
`
	j := `{"version": "v", "as_of": "2025-01-02", "sources": ["https://example.com/pricing"],
 "models": [{"provider": "p", "name": "m", "aliases": ["m2"], "input": 1.5, "output": 3, "cache_read": 0.15,
   "tiers": [{"threshold": 1000, "input": 3, "output": 6}]}]}`
	ty, err := Parse([]byte(y), "yaml")
	if err != nil {
		t.Fatal(err)
	}
	tj, err := Parse([]byte(j), "json")
	if err != nil {
		t.Fatal(err)
	}
	py, _ := ty.Price("p", "m2")
	pj, _ := tj.Price("p", "m2")
	if py == nil || pj == nil || !samePrices(py, pj) || ty.AsOf() != tj.AsOf() || ty.Version() != tj.Version() {
		t.Errorf("yaml %+v and json %+v tables differ", py, pj)
	}
}

func TestMemoBounded(t *testing.T) {
	tab, err := Parse([]byte(matchTable), "yaml")
	if err != nil {
		t.Fatal(err)
	}
	for i := range 3 * memoCap {
		tab.Price("anthropic", fmt.Sprintf("random-%d", i))
	}
	tab.Price("anthropic", strings.Repeat("x", memoMaxKeyLen+1))
	tab.memoMu.RLock()
	n := len(tab.memo)
	tab.memoMu.RUnlock()
	if n > memoCap {
		t.Errorf("memo holds %d entries, cap %d", n, memoCap)
	}
	if p, ok := tab.Price("anthropic", "claude-x"); !ok || p.Model() != "claude-x-1" {
		t.Error("lookups wrong after the memo was cleared")
	}
}

func TestPriceConcurrent(t *testing.T) {
	tab, err := Parse([]byte(matchTable), "yaml")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 2000 {
				tab.Price("anthropic", fmt.Sprintf("claude-%d", (i*g)%(memoCap/2)))
				if _, ok := tab.Price("anthropic", "claude-x"); !ok {
					t.Error("claude-x not found")
					return
				}
			}
		})
	}
	wg.Wait()
}

func TestLoadByExtension(t *testing.T) {
	dir := t.TempDir()
	for name, body := range map[string]string{
		"p.yaml": "models: [{provider: p, name: m, input: 1, output: 2}]",
		"p.yml":  "models: [{provider: p, name: m, input: 1, output: 2}]",
		"p.json": `{"models": [{"provider": "p", "name": "m", "input": 1, "output": 2}]}`,
	} {
		path := writeFile(t, dir, name, body)
		tab, err := Load(path)
		if err != nil {
			t.Errorf("Load(%s): %v", name, err)
			continue
		}
		if _, ok := tab.Price("p", "m"); !ok {
			t.Errorf("Load(%s): model missing", name)
		}
	}
	if _, err := Load(writeFile(t, dir, "p.toml", "")); err == nil || !strings.Contains(err.Error(), "unknown extension") {
		t.Errorf("Load(.toml) error = %v", err)
	}
	if _, err := Load(dir + "/missing.yaml"); err == nil {
		t.Error("Load(missing) succeeded")
	}
}
