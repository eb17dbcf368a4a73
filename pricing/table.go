package pricing

import (
	"crypto/sha256"
	_ "embed"
	"encoding/hex"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
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
	format  string // "litellm" or "agentmeter"
	source  string // where the table came from: a path, or the snapshot's origin
	report  Report

	// providers indexes the models by canonical provider name.
	providers map[string]*providerIndex
	// providerNames are the keys of providers, sorted.
	providerNames []string
	// providerAliases maps a provider alias (or litellm prefix) to its
	// canonical name: the built-in ones merged with the file's.
	providerAliases map[string]string

	memoMu sync.RWMutex // guards memo
	memo   map[memoKey]*Lookup

	firstUseLogs atomic.Int32 // "price found" lines logged for this table
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
	// Reasoning is the price of a reasoning token (part of the completion);
	// it is Output unless the provider prices reasoning apart.
	Reasoning float64
}

// Tier is a long-context price tier: a call whose prompt has more than
// Threshold tokens (Inclusive: at least Threshold) is priced at the tier's
// Rates, all of them.
type Tier struct {
	// Threshold is the prompt size, in tokens, above which the tier applies.
	Threshold int64
	// Inclusive makes the tier apply from Threshold tokens on, not above
	// it: litellm bills xAI's tiers so.
	Inclusive bool
	Rates
}

func (t *Tier) applies(prompt int64) bool {
	return prompt > t.Threshold || (t.Inclusive && prompt == t.Threshold)
}

// ModelPrice is the price of one model of one provider, in force from a
// date on. It is part of its Table and immutable.
type ModelPrice struct {
	provider string
	model    string
	base     Rates
	tiers    []Tier    // ascending Threshold
	from     time.Time // effective_from; zero: always
	origin   string    // where the table declares it: "litellm:<key>", "overrides:models[3]"

	// maxPrompt, when > 0, is the largest prompt the price covers: a
	// pattern match of a model with tiers covers only the prompts below
	// its first tier (see Covers).
	maxPrompt int64
	// offPeak, when not nil, replaces the rates while one of its windows
	// is open at the call's time (see CostAt).
	offPeak *offPeak
}

// EffectiveFrom returns the time from which the price is in force; zero
// for a price without effective_from.
func (p *ModelPrice) EffectiveFrom() time.Time { return p.from }

// Origin says where the table declares the price: "litellm:<key>" for an
// entry of a LiteLLM file, "models[3]" for one of an agentmeter table, and
// "overrides:models[3]" for one of pricing.overrides.
func (p *ModelPrice) Origin() string { return p.origin }

// Covers reports whether the price applies to a call with the given
// prompt size. It is false only for a model found by a pattern whose entry
// has long-context tiers, for prompts at or past the first one: a pattern
// never lends a model another model's tiers, so such a call stays unpriced.
func (p *ModelPrice) Covers(promptTokens int64) bool {
	return p != nil && (p.maxPrompt == 0 || promptTokens < p.maxPrompt)
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
		if p.tiers[i].applies(prompt) {
			return &p.tiers[i].Rates
		}
	}
	return &p.base
}

// samePrices reports whether a and b charge the same for every call.
func samePrices(a, b *ModelPrice) bool {
	return a == b || (a.base == b.base && slices.Equal(a.tiers, b.tiers) && a.maxPrompt == b.maxPrompt && sameOffPeak(a.offPeak, b.offPeak))
}

// Parse parses and validates a price table. format is "yaml" (or "yml")
// or "json" for agentmeter's own format, or "litellm" for LiteLLM's
// model_prices_and_context_window.json. Every problem found is reported,
// joined into one error, each naming its path in the document
// (models[3].cache_read) and its line.
func Parse(data []byte, format string) (*Table, error) {
	return parse(data, format)
}

// Load reads and parses the price table at path, choosing the format by the
// file's content and extension; see Source.
func Load(path string) (*Table, error) { return Source{Table: path}.Load() }

// Version returns the table's declared version, or "sha256:" and the first
// 12 hex digits of the file's SHA-256 when it declares none. With
// overrides, the base table's version, "+", and the overrides'.
func (t *Table) Version() string { return t.version }

// AsOf returns the date the table declares its prices were current, or the
// zero time when it declares none.
func (t *Table) AsOf() time.Time { return t.asOf }

// Sources returns a copy of the URLs the table declares its prices come from.
func (t *Table) Sources() []string { return slices.Clone(t.sources) }

// Models returns the number of model entries in the table.
func (t *Table) Models() int { return t.models }

// Format returns "litellm" or "agentmeter": the format of the base table.
func (t *Table) Format() string { return t.format }

// Source says where the base table came from: its file, or for the
// built-in table the LiteLLM release it is a snapshot of.
func (t *Table) Source() string { return t.source }

// Report returns what reading the table left out.
func (t *Table) Report() Report { return t.report.clone() }

func versionOf(declared string, data []byte) string {
	if declared != "" {
		return declared
	}
	sum := sha256.Sum256(data)
	return "sha256:" + hex.EncodeToString(sum[:])[:12]
}

// MatchKind says how a lookup found its price.
type MatchKind uint8

// The ways a price is found, best first.
const (
	MatchNone    MatchKind = iota // no price
	MatchExact                    // the model's own name
	MatchAlias                    // an alias of the entry, or the name without its Bedrock region or version suffix
	MatchPattern                  // a pattern of the entry
)

func (k MatchKind) String() string {
	switch k {
	case MatchExact:
		return "exact"
	case MatchAlias:
		return "alias"
	case MatchPattern:
		return "pattern"
	}
	return "none"
}

// Lookup is the outcome of looking a (provider, model) pair up: the entry
// found and how. It is part of its Table and immutable.
type Lookup struct {
	// Match says how the entry was found; MatchNone when it was not.
	Match MatchKind
	// Name is the entry name or alias that matched, or the pattern.
	Name string
	// Provider is the canonical provider of the entry.
	Provider string
	e        *entry
	versions []*ModelPrice // the entry's prices as this match sees them
}

// At returns the price in force at time at, and false when there is none
// (no entry, or every price of the entry starts after at).
func (l *Lookup) At(at time.Time) (*ModelPrice, bool) {
	if l == nil {
		return nil, false
	}
	for i := len(l.versions) - 1; i >= 0; i-- {
		if v := l.versions[i]; !v.from.After(at) {
			return v, true
		}
	}
	return nil, false
}

// Versions returns the entry's prices, oldest effective_from first.
func (l *Lookup) Versions() []*ModelPrice {
	if l == nil {
		return nil
	}
	return slices.Clone(l.versions)
}

// entry is one model of one provider: its prices over time, oldest first.
type entry struct {
	provider string
	name     string
	versions []*ModelPrice
	// patternView is versions as a pattern match sees them: tiers removed,
	// covering only the prompts below the first one. Built on first use.
	patternOnce sync.Once
	patternView []*ModelPrice
}

func (e *entry) forPattern() []*ModelPrice {
	e.patternOnce.Do(func() {
		e.patternView = make([]*ModelPrice, len(e.versions))
		for i, v := range e.versions {
			if len(v.tiers) == 0 {
				e.patternView[i] = v
				continue
			}
			c := *v
			c.tiers = nil
			c.maxPrompt = v.tiers[0].Threshold + 1
			if v.tiers[0].Inclusive {
				c.maxPrompt = v.tiers[0].Threshold
			}
			e.patternView[i] = &c
		}
	})
	return e.patternView
}

// Price returns the price of model as served by provider in force now, and
// false when the table has none. See the package documentation for how
// names are matched; PriceAt and Lookup say more.
func (t *Table) Price(provider, model string) (*ModelPrice, bool) {
	return t.PriceAt(provider, model, time.Now())
}

// PriceAt returns the price of model as served by provider in force at
// time at, and false when the table has none.
//
// After the first lookup of a (provider, model) pair, PriceAt is a single
// map read and does not allocate.
func (t *Table) PriceAt(provider, model string, at time.Time) (*ModelPrice, bool) {
	l, _ := t.lookup(provider, model)
	return l.At(at)
}

// Lookup returns how (provider, model) is found in the table; its Match is
// MatchNone when it is not.
func (t *Table) Lookup(provider, model string) *Lookup {
	l, _ := t.lookup(provider, model)
	if l == nil {
		return &Lookup{}
	}
	return l
}

// lookup returns the memoised lookup of (provider, model), nil when none,
// and whether this call resolved it (a first use).
func (t *Table) lookup(provider, model string) (*Lookup, bool) {
	k := memoKey{provider, model}
	t.memoMu.RLock()
	l, hit := t.memo[k]
	t.memoMu.RUnlock()
	if hit {
		return l, false
	}
	l = t.resolve(provider, model)
	if len(provider)+len(model) <= memoMaxKeyLen {
		t.memoMu.Lock()
		if len(t.memo) >= memoCap {
			clear(t.memo)
		}
		// Clone: the caller's strings may share a larger buffer.
		t.memo[memoKey{strings.Clone(provider), strings.Clone(model)}] = l
		t.memoMu.Unlock()
	}
	return l, true
}

// builtinProviderAliases maps litellm provider names and prefixes and other
// common spellings to the OpenTelemetry gen_ai.provider.name values. A
// table's provider_aliases add to and override these. Any litellm
// provider starting "vertex_ai-" is gcp.vertex_ai as well.
var builtinProviderAliases = map[string]string{
	"bedrock":                "aws.bedrock",
	"bedrock_converse":       "aws.bedrock",
	"aws_bedrock":            "aws.bedrock",
	"vertex_ai":              "gcp.vertex_ai",
	"vertex_ai_beta":         "gcp.vertex_ai",
	"vertexai":               "gcp.vertex_ai",
	"gemini":                 "gcp.gemini",
	"azure":                  "azure.ai.openai",
	"azure_text":             "azure.ai.openai",
	"azure_ai":               "azure.ai.inference",
	"xai":                    "x_ai",
	"mistral":                "mistral_ai",
	"text-completion-openai": "openai",
	"cohere_chat":            "cohere",
	"watsonx":                "ibm.watsonx.ai",
}

// bedrockRegionPrefixes are the geography prefixes of Bedrock cross-region
// inference profile ids (us.anthropic.claude-...).
var bedrockRegionPrefixes = []string{"us.", "us-gov.", "eu.", "apac.", "jp.", "au.", "ca.", "global."}

// resolve finds the lookup of (provider, model) without the memo; nil when
// there is no price.
func (t *Table) resolve(provider, model string) *Lookup {
	prov := t.canonicalProvider(strings.ToLower(strings.TrimSpace(provider)))
	name := strings.ToLower(strings.TrimSpace(model))

	// Strip litellm-style provider prefixes: "anthropic/claude-...",
	// "bedrock/converse/us.anthropic...". The prefix names the provider
	// when the call does not. A name the provider lists whole (LiteLLM's
	// "azure/eu/gpt-5.1") is kept as it is.
	for {
		i := strings.IndexByte(name, '/')
		if i < 0 {
			break
		}
		if idx := t.providers[prov]; idx != nil && (idx.exact[name] != nil || idx.alias[name] != nil) {
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
	// Bedrock model ids end in a version (":0"); agents send them with or
	// without it.
	for _, c := range slices.Clone(cands) {
		if strings.HasSuffix(c, ":0") {
			cands = append(cands, strings.TrimSuffix(c, ":0"))
		} else if !strings.Contains(c, ":") {
			cands = append(cands, c+":0")
		}
	}

	if prov != "" {
		idx := t.providers[prov]
		if idx == nil {
			return nil
		}
		l, _ := idx.match(cands)
		return l
	}

	// No provider: the model alone decides, when it is unambiguous.
	var best *Lookup
	var bestRank rank
	ambiguous := false
	for _, pn := range t.providerNames {
		l, r := t.providers[pn].match(cands)
		if l == nil {
			continue
		}
		switch {
		case best == nil || r.better(bestRank):
			best, bestRank, ambiguous = l, r, false
		case !bestRank.better(r) && !sameVersions(l.versions, best.versions):
			ambiguous = true
		}
	}
	if ambiguous {
		return nil
	}
	return best
}

func sameVersions(a, b []*ModelPrice) bool {
	return slices.EqualFunc(a, b, func(x, y *ModelPrice) bool { return x.from.Equal(y.from) && samePrices(x, y) })
}

func (t *Table) canonicalProvider(p string) string {
	if c, ok := t.providerAliases[p]; ok {
		return c
	}
	if strings.HasPrefix(p, "vertex_ai-") {
		return "gcp.vertex_ai"
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
	exact    map[string]*entry
	alias    map[string]*entry
	patterns []pattern // longest first; equal lengths in file order
	// lookups holds the Lookup of each exact name and alias, built with
	// the index, so that a match allocates nothing.
	lookups map[string]*Lookup
}

type pattern struct {
	glob   string
	prefix bool // glob is "<literal>*": matched with strings.HasPrefix
	e      *entry
	l      *Lookup
}

func (p *pattern) match(name string) bool {
	if p.prefix {
		return strings.HasPrefix(name, p.glob[:len(p.glob)-1])
	}
	ok, _ := matchGlob(p.glob, name)
	return ok
}

// rank orders matches: exact name, then alias, of the name as sent; then of
// the name without its Bedrock region or version; then the longest pattern.
type rank struct {
	level  int
	length int
}

func (r rank) better(o rank) bool {
	return r.level > o.level || (r.level == o.level && r.length > o.length)
}

func (pi *providerIndex) match(cands []string) (*Lookup, rank) {
	level := 2*len(cands) + 1
	for i, c := range cands {
		if pi.exact[c] != nil {
			l := pi.lookups["="+c]
			if i > 0 {
				l = pi.lookups["~"+c]
			}
			return l, rank{level: level}
		}
		if pi.alias[c] != nil {
			return pi.lookups["~"+c], rank{level: level - 1}
		}
		level -= 2
	}
	for i := range pi.patterns {
		pt := &pi.patterns[i]
		for _, c := range cands {
			if pt.match(c) {
				return pt.l, rank{level: 1, length: len(pt.glob)}
			}
		}
	}
	return nil, rank{}
}

// finish builds the lookups of the index once its entries are final.
func (pi *providerIndex) finish() {
	pi.lookups = make(map[string]*Lookup, 2*len(pi.exact)+len(pi.alias))
	for name, e := range pi.exact {
		pi.lookups["="+name] = &Lookup{Match: MatchExact, Name: e.name, Provider: e.provider, e: e, versions: e.versions}
		pi.lookups["~"+name] = &Lookup{Match: MatchAlias, Name: e.name, Provider: e.provider, e: e, versions: e.versions}
	}
	for name, e := range pi.alias {
		pi.lookups["~"+name] = &Lookup{Match: MatchAlias, Name: name, Provider: e.provider, e: e, versions: e.versions}
	}
	slices.SortStableFunc(pi.patterns, func(a, b pattern) int { return len(b.glob) - len(a.glob) })
	for i := range pi.patterns {
		p := &pi.patterns[i]
		p.l = &Lookup{Match: MatchPattern, Name: p.glob, Provider: p.e.provider, e: p.e, versions: p.e.forPattern()}
	}
}
