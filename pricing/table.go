package pricing

import (
	"crypto/sha256"
	_ "embed"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"
)

// memoCap bounds the (provider, model) lookup memo of a Table. When it is
// full it is cleared, so a client sending random model names costs slow
// lookups, never memory.
const memoCap = 4096

// memoMaxKeyLen is the longest provider+model (in bytes) whose lookup is
// memoised; longer names are resolved on every call.
const memoMaxKeyLen = 256

// Table is a parsed, validated price table. It is immutable after Parse or
// Load (its lookup memo aside, which is safe for concurrent use), so one
// *Table can be shared by any number of goroutines.
type Table struct {
	version string
	asOf    time.Time
	sources []string
	models  int

	// providers indexes the models by canonical provider name.
	providers map[string]*providerIndex
	// providerNames are the keys of providers, sorted.
	providerNames []string
	// providerAliases maps a provider alias (or litellm prefix) to its
	// canonical name: the built-in ones merged with the file's.
	providerAliases map[string]string

	memoMu sync.RWMutex // guards memo
	memo   map[memoKey]*ModelPrice
}

type memoKey struct{ provider, model string }

// Rates are a model's prices, in USD per million tokens, as the table
// states them.
type Rates struct {
	// Input is the price of a prompt token that is neither read from nor
	// written to the cache.
	Input float64
	// Output is the price of a completion token, reasoning tokens included.
	Output float64
	// CacheRead is the price of a prompt token read from the cache.
	CacheRead float64
	// CacheWrite is the price of a prompt token written to the cache at the
	// provider's default (5-minute) retention.
	CacheWrite float64
	// CacheWrite1h is the price of a prompt token written to the cache at
	// 1-hour retention.
	CacheWrite1h float64
}

// Tier is a long-context price tier: a call whose prompt has more than
// Threshold tokens is priced at the tier's Rates, all of them.
type Tier struct {
	// Threshold is the prompt size, in tokens, above which the tier applies.
	Threshold int64
	Rates
}

// ModelPrice is the price of one model of one provider. It is part of its
// Table and immutable.
type ModelPrice struct {
	provider string
	model    string
	base     Rates
	tiers    []Tier // ascending Threshold
}

// Provider returns the canonical provider name of the entry, e.g. "anthropic".
func (p *ModelPrice) Provider() string { return p.provider }

// Model returns the entry's model name as the table declares it.
func (p *ModelPrice) Model() string { return p.model }

// Rates returns the rates that apply to a call with the given prompt size:
// those of the highest tier whose threshold the prompt exceeds, else the
// base rates. Defaults for missing cache prices are already filled in.
func (p *ModelPrice) Rates(promptTokens int64) Rates { return *p.rates(promptTokens) }

// Tiers returns a copy of the entry's long-context tiers, lowest threshold
// first.
func (p *ModelPrice) Tiers() []Tier { return slices.Clone(p.tiers) }

func (p *ModelPrice) rates(prompt int64) *Rates {
	for i := len(p.tiers) - 1; i >= 0; i-- {
		if prompt > p.tiers[i].Threshold {
			return &p.tiers[i].Rates
		}
	}
	return &p.base
}

// samePrices reports whether a and b charge the same for every call.
func samePrices(a, b *ModelPrice) bool {
	return a == b || (a.base == b.base && slices.Equal(a.tiers, b.tiers))
}

// Parse parses and validates a price table. format is "yaml" (or "yml") or
// "json". Every problem found is reported, joined into one error, each
// naming its path in the document (models[3].cache_read) and its line.
func Parse(data []byte, format string) (*Table, error) {
	return parse(data, format)
}

// Load reads and parses the price table at path, choosing the format by the
// file's extension: .yaml, .yml or .json.
func Load(path string) (*Table, error) {
	format, err := formatOf(path)
	if err != nil {
		return nil, err
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read price table: %w", err)
	}
	t, err := parse(data, format)
	if err != nil {
		return nil, fmt.Errorf("load price table %q: %w", path, err)
	}
	return t, nil
}

func formatOf(path string) (string, error) {
	switch ext := strings.ToLower(filepath.Ext(path)); ext {
	case ".yaml", ".yml":
		return "yaml", nil
	case ".json":
		return "json", nil
	default:
		return "", fmt.Errorf("price table %q: unknown extension %q, want .yaml, .yml or .json", path, ext)
	}
}

//go:embed default_prices.yaml
var defaultPricesYAML []byte

var defaultTable = sync.OnceValue(func() *Table {
	t, err := parse(defaultPricesYAML, "yaml")
	if err != nil {
		// Unreachable: TestDefaultParses proves the embedded file parses.
		// An empty table prices nothing, which is safe.
		t, _ = newTable(nil, nil)
		t.version = "invalid-embedded-table"
	}
	return t
})

// Default returns the price table embedded in the binary
// (pricing/default_prices.yaml). It is parsed once and shared.
func Default() *Table { return defaultTable() }

// Version returns the table's declared version, or "sha256:" and the first
// 12 hex digits of the file's SHA-256 when it declares none.
func (t *Table) Version() string { return t.version }

// AsOf returns the date the table declares its prices were current, or the
// zero time when it declares none.
func (t *Table) AsOf() time.Time { return t.asOf }

// Sources returns a copy of the URLs the table declares its prices come from.
func (t *Table) Sources() []string { return slices.Clone(t.sources) }

// Models returns the number of model entries in the table.
func (t *Table) Models() int { return t.models }

func versionOf(declared string, data []byte) string {
	if declared != "" {
		return declared
	}
	sum := sha256.Sum256(data)
	return "sha256:" + hex.EncodeToString(sum[:])[:12]
}

// Price returns the price of model as served by provider, and false when the
// table has none. See the package documentation for how names are matched.
//
// After the first lookup of a (provider, model) pair, Price is a single map
// read and does not allocate.
func (t *Table) Price(provider, model string) (*ModelPrice, bool) {
	k := memoKey{provider, model}
	t.memoMu.RLock()
	p, hit := t.memo[k]
	t.memoMu.RUnlock()
	if hit {
		return p, p != nil
	}
	p = t.resolve(provider, model)
	if len(provider)+len(model) <= memoMaxKeyLen {
		t.memoMu.Lock()
		if len(t.memo) >= memoCap {
			clear(t.memo)
		}
		// Clone: the caller's strings may share a larger buffer.
		t.memo[memoKey{strings.Clone(provider), strings.Clone(model)}] = p
		t.memoMu.Unlock()
	}
	return p, p != nil
}

// builtinProviderAliases maps litellm provider prefixes and other common
// spellings to the OpenTelemetry gen_ai.provider.name values. A table's
// provider_aliases add to and override these.
var builtinProviderAliases = map[string]string{
	"bedrock":          "aws.bedrock",
	"bedrock_converse": "aws.bedrock",
	"aws_bedrock":      "aws.bedrock",
	"vertex_ai":        "gcp.vertex_ai",
	"vertex_ai_beta":   "gcp.vertex_ai",
	"vertexai":         "gcp.vertex_ai",
	"gemini":           "gcp.gemini",
	"azure":            "azure.ai.openai",
	"azure_ai":         "azure.ai.inference",
}

// bedrockRegionPrefixes are the geography prefixes of Bedrock cross-region
// inference profile ids (us.anthropic.claude-...).
var bedrockRegionPrefixes = []string{"us.", "us-gov.", "eu.", "apac.", "jp.", "au.", "ca.", "global."}

// resolve finds the price of (provider, model) without the memo.
func (t *Table) resolve(provider, model string) *ModelPrice {
	prov := t.canonicalProvider(strings.ToLower(strings.TrimSpace(provider)))
	name := strings.ToLower(strings.TrimSpace(model))

	// Strip litellm-style provider prefixes: "anthropic/claude-...",
	// "bedrock/converse/us.anthropic...". The prefix names the provider
	// when the call does not.
	for {
		i := strings.IndexByte(name, '/')
		if i < 0 {
			break
		}
		seg := name[:i]
		if c := t.canonicalProvider(seg); t.providers[c] != nil || c != seg {
			if prov == "" {
				prov = c
			}
			name = name[i+1:]
			continue
		}
		if prov == "aws.bedrock" && (seg == "converse" || seg == "invoke") {
			name = name[i+1:]
			continue
		}
		break
	}

	cands := []string{name}
	if base, ok := stripBedrockRegion(name); ok {
		cands = append(cands, base)
	}

	if prov != "" {
		idx := t.providers[prov]
		if idx == nil {
			return nil
		}
		p, _ := idx.match(cands)
		return p
	}

	// No provider: the model alone decides, when it is unambiguous.
	var best *ModelPrice
	var bestRank rank
	ambiguous := false
	for _, pn := range t.providerNames {
		p, r := t.providers[pn].match(cands)
		if p == nil {
			continue
		}
		switch {
		case best == nil || r.better(bestRank):
			best, bestRank, ambiguous = p, r, false
		case !bestRank.better(r) && !samePrices(p, best):
			ambiguous = true
		}
	}
	if ambiguous {
		return nil
	}
	return best
}

func (t *Table) canonicalProvider(p string) string {
	if c, ok := t.providerAliases[p]; ok {
		return c
	}
	return p
}

func stripBedrockRegion(name string) (string, bool) {
	for _, r := range bedrockRegionPrefixes {
		if rest, ok := strings.CutPrefix(name, r); ok && strings.Contains(rest, ".") {
			return rest, true
		}
	}
	return "", false
}

// providerIndex holds one provider's models.
type providerIndex struct {
	exact    map[string]*ModelPrice
	alias    map[string]*ModelPrice
	patterns []pattern // longest first; equal lengths in file order
}

type pattern struct {
	glob   string
	prefix bool // glob is "<literal>*": matched with strings.HasPrefix
	price  *ModelPrice
}

func (p *pattern) match(name string) bool {
	if p.prefix {
		return strings.HasPrefix(name, p.glob[:len(p.glob)-1])
	}
	ok, _ := matchGlob(p.glob, name)
	return ok
}

// rank orders matches: exact name, then alias, of the name as sent; then of
// the name without its Bedrock region; then the longest pattern.
type rank struct {
	level  int
	length int
}

func (r rank) better(o rank) bool {
	return r.level > o.level || (r.level == o.level && r.length > o.length)
}

func (pi *providerIndex) match(cands []string) (*ModelPrice, rank) {
	level := 5
	for _, c := range cands {
		if p := pi.exact[c]; p != nil {
			return p, rank{level: level}
		}
		if p := pi.alias[c]; p != nil {
			return p, rank{level: level - 1}
		}
		level -= 2
	}
	for i := range pi.patterns {
		pt := &pi.patterns[i]
		for _, c := range cands {
			if pt.match(c) {
				return pt.price, rank{level: 1, length: len(pt.glob)}
			}
		}
	}
	return nil, rank{}
}
