package pricing

import (
	"errors"
	"fmt"
	"math"
	"net/url"
	"path"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/agentmeter/agentmeter/internal/yamldecode"
)

// Limits on a table, so that a hostile or broken file cannot make parsing
// expensive.
const (
	maxTableBytes      = 8 << 20
	maxModels          = 10000
	maxTiersPerModel   = 16
	maxNamesPerModel   = 256
	maxJSONDepth       = 32
	maxProviderAliases = 1024
)

// decoder reads agentmeter's own table format.
type decoder struct {
	yamldecode.Walker
}

// spec is a model entry as read, in either format, before it is indexed.
type spec struct {
	path     string // models[3], or the LiteLLM key
	node     *yaml.Node
	provider string // as written, lowercased
	name     string
	aliases  []located
	patterns []located
	price    *ModelPrice
}

// rawModel is a model entry of agentmeter's format as decoded, before
// defaults.
type rawModel struct {
	rates rawRates
	tiers []rawTier
	from  time.Time
}

type rawTier struct {
	threshold int64
	rates     rawRates
}

// rawRates are the prices as decoded; a nil field was absent.
type rawRates struct {
	input, output, cacheRead, cacheWrite, cacheWrite1h, reasoning *float64
}

// resolve fills in the documented defaults for missing cache and reasoning
// prices.
func (r rawRates) resolve() Rates {
	var out Rates
	if r.input != nil {
		out.Input = *r.input
	}
	if r.output != nil {
		out.Output = *r.output
	}
	out.CacheRead = orDefault(r.cacheRead, out.Input)
	out.CacheWrite = orDefault(r.cacheWrite, out.Input)
	out.CacheWrite1h = orDefault(r.cacheWrite1h, out.CacheWrite)
	out.Reasoning = orDefault(r.reasoning, out.Output)
	return out
}

func orDefault(p *float64, def float64) float64 {
	if p != nil {
		return *p
	}
	return def
}

type located struct {
	value string
	path  string
	node  *yaml.Node
}

// meta is what a table declares about itself.
type meta struct {
	version string
	asOf    time.Time
	sources []string
	aliases map[string]string
}

// parse parses a table of a known format with no overrides.
func parse(data []byte, format string) (*Table, error) {
	specs, m, rep, err := read(data, format)
	if err != nil {
		return nil, err
	}
	t, errs := build(specs, nil, m.aliases)
	if len(errs) > 0 {
		return nil, yamldecode.Join(errs)
	}
	t.version = versionOf(m.version, data)
	t.asOf, t.sources, t.report = m.asOf, m.sources, rep
	t.format = "agentmeter"
	if format == "litellm" {
		t.format = "litellm"
	}
	return t, nil
}

// read reads the entries of a table of a known format: "yaml", "yml",
// "json" (agentmeter's) or "litellm".
func read(data []byte, format string) ([]spec, meta, Report, error) {
	if len(data) > maxTableBytes {
		return nil, meta{}, Report{}, fmt.Errorf("price table is %d bytes, more than the limit of %d", len(data), maxTableBytes)
	}
	if format == FormatLiteLLM {
		specs, rep, err := readLiteLLM(data)
		if err != nil {
			return nil, meta{}, Report{}, fmt.Errorf("parse LiteLLM price table: %w", err)
		}
		return specs, meta{}, rep, nil
	}
	var root *yaml.Node
	var err error
	switch strings.ToLower(format) {
	case "yaml", "yml":
		root, err = yamldecode.ParseYAML(data)
	case "json":
		root, err = yamldecode.ParseJSON(data, maxJSONDepth)
	default:
		return nil, meta{}, Report{}, fmt.Errorf("unknown price table format %q, want yaml, json or litellm", format)
	}
	if err != nil {
		return nil, meta{}, Report{}, fmt.Errorf("parse price table: %w", err)
	}
	if root == nil {
		return nil, meta{}, Report{}, errors.New("price table is empty")
	}
	d := &decoder{}
	m, specs := d.root(root)
	if len(d.Problems()) > 0 {
		// Check the entries against each other as well, so that every
		// problem of the file is reported at once.
		_, errs := build(specs, nil, m.aliases)
		return nil, meta{}, Report{}, yamldecode.Join(append(d.Problems(), errs...))
	}
	return specs, m, Report{Entries: len(specs), Priced: len(specs)}, nil
}

func (d *decoder) str(n *yaml.Node, path string) string {
	n = yamldecode.Deref(n)
	if n == nil || n.Kind != yaml.ScalarNode || n.ShortTag() == "!!null" {
		d.Fail(n, path, "must be a string")
		return ""
	}
	return n.Value
}

func (d *decoder) strings(n *yaml.Node, path string) []located {
	var out []located
	d.Sequence(n, path, maxNamesPerModel, func(_ int, item *yaml.Node, p string) {
		out = append(out, located{value: d.str(item, p), path: p, node: yamldecode.Deref(item)})
	})
	return out
}

// price decodes a price: a finite number >= 0.
func (d *decoder) price(n *yaml.Node, path string) *float64 {
	f, msg := number(n)
	if msg != "" {
		d.Fail(yamldecode.Deref(n), path, "%s", msg)
		return nil
	}
	return &f
}

// number decodes a price: a finite number >= 0, or says what is wrong.
func number(n *yaml.Node) (float64, string) {
	n = yamldecode.Deref(n)
	if n == nil || n.Kind != yaml.ScalarNode || (n.ShortTag() != "!!int" && n.ShortTag() != "!!float") {
		return 0, "must be a number"
	}
	f, ok := parseNumber(n.Value)
	switch {
	case !ok:
		return 0, fmt.Sprintf("must be a number, got %q", n.Value)
	case math.IsNaN(f) || math.IsInf(f, 0):
		return 0, fmt.Sprintf("must be a finite number, got %s", n.Value)
	case f < 0:
		return 0, fmt.Sprintf("must not be negative, got %s", n.Value)
	}
	return f, ""
}

func parseNumber(s string) (float64, bool) {
	s = strings.ReplaceAll(s, "_", "")
	switch strings.ToLower(s) {
	case ".inf", "+.inf":
		return math.Inf(1), true
	case "-.inf":
		return math.Inf(-1), true
	case ".nan":
		return math.NaN(), true
	}
	if f, err := strconv.ParseFloat(s, 64); err == nil {
		return f, true
	}
	if i, err := strconv.ParseInt(s, 0, 64); err == nil {
		return float64(i), true
	}
	return 0, false
}

// date decodes a date YYYY-MM-DD or an RFC 3339 time.
func (d *decoder) date(n *yaml.Node, path string) time.Time {
	s := d.str(n, path)
	if s == "" {
		return time.Time{}
	}
	if t, err := time.Parse(time.DateOnly, s); err == nil {
		return t
	}
	if t, err := time.Parse(time.RFC3339, s); err == nil {
		return t
	}
	d.Fail(yamldecode.Deref(n), path, "must be a date YYYY-MM-DD or an RFC 3339 time, got %q", s)
	return time.Time{}
}

func (d *decoder) root(n *yaml.Node) (m meta, specs []spec) {
	haveModels := false
	d.Mapping(n, "", func(key string, v *yaml.Node, p string) bool {
		switch key {
		case "version":
			m.version = strings.TrimSpace(d.str(v, p))
		case "as_of":
			if s := d.str(v, p); s != "" {
				t, err := time.Parse(time.DateOnly, s)
				if err != nil {
					d.Fail(yamldecode.Deref(v), p, "must be a date YYYY-MM-DD, got %q", s)
				}
				m.asOf = t
			}
		case "sources":
			for _, s := range d.strings(v, p) {
				u, err := url.Parse(s.value)
				if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
					d.Fail(s.node, s.path, "must be an http(s) URL, got %q", s.value)
					continue
				}
				m.sources = append(m.sources, s.value)
			}
		case "provider_aliases":
			m.aliases = map[string]string{}
			d.Mapping(v, p, func(alias string, target *yaml.Node, ap string) bool {
				if len(m.aliases) >= maxProviderAliases {
					d.Fail(yamldecode.Deref(v), p, "more than %d provider aliases", maxProviderAliases)
					return true
				}
				tv := strings.ToLower(strings.TrimSpace(d.str(target, ap)))
				if tv == "" {
					d.Fail(yamldecode.Deref(target), ap, "must name a provider")
				}
				m.aliases[strings.ToLower(strings.TrimSpace(alias))] = tv
				return true
			})
		case "models":
			haveModels = true
			d.Sequence(v, p, maxModels, func(_ int, item *yaml.Node, mp string) {
				specs = append(specs, d.model(item, mp))
			})
		default:
			return false
		}
		return true
	})
	if !haveModels && len(d.Problems()) == 0 {
		d.Fail(nil, "models", "required: the table has no models")
	}
	return m, specs
}

func (d *decoder) model(n *yaml.Node, path string) spec {
	s := spec{path: path, node: yamldecode.Deref(n)}
	var m rawModel
	haveName := false
	d.Mapping(n, path, func(key string, v *yaml.Node, p string) bool {
		switch key {
		case "provider":
			s.provider = strings.ToLower(strings.TrimSpace(d.str(v, p)))
			if s.provider == "" {
				d.Fail(yamldecode.Deref(v), p, "must not be empty")
			}
		case "name":
			haveName = true
			s.name = strings.ToLower(strings.TrimSpace(d.str(v, p)))
			if s.name == "" {
				d.Fail(yamldecode.Deref(v), p, "must not be empty")
			}
		case "aliases":
			s.aliases = d.strings(v, p)
		case "patterns":
			s.patterns = d.strings(v, p)
		case "effective_from":
			m.from = d.date(v, p)
		case "tiers":
			d.Sequence(v, p, maxTiersPerModel, func(_ int, item *yaml.Node, tp string) {
				m.tiers = append(m.tiers, d.tier(item, tp))
			})
		default:
			return d.rate(&m.rates, key, v, p)
		}
		return true
	})
	if s.node != nil && s.node.Kind == yaml.MappingNode {
		if s.provider == "" && !d.Failed(path+".provider") {
			d.Fail(s.node, path+".provider", "required")
		}
		if !haveName {
			d.Fail(s.node, path+".name", "required")
		}
		d.requireRates(m.rates, path, s.node)
	}
	s.price = &ModelPrice{model: s.name, base: m.rates.resolve(), from: m.from, origin: path}
	for _, tr := range m.tiers {
		s.price.tiers = append(s.price.tiers, Tier{Threshold: tr.threshold, Rates: tr.rates.resolve()})
	}
	return s
}

func (d *decoder) requireRates(r rawRates, path string, n *yaml.Node) {
	if r.input == nil && !d.Failed(path+".input") {
		d.Fail(n, path+".input", "required")
	}
	if r.output == nil && !d.Failed(path+".output") {
		d.Fail(n, path+".output", "required")
	}
}

func (d *decoder) rate(r *rawRates, key string, v *yaml.Node, p string) bool {
	switch key {
	case "input":
		r.input = d.price(v, p)
	case "output":
		r.output = d.price(v, p)
	case "cache_read":
		r.cacheRead = d.price(v, p)
	case "cache_write":
		r.cacheWrite = d.price(v, p)
	case "cache_write_1h":
		r.cacheWrite1h = d.price(v, p)
	case "reasoning":
		r.reasoning = d.price(v, p)
	default:
		return false
	}
	return true
}

func (d *decoder) tier(n *yaml.Node, path string) rawTier {
	var t rawTier
	haveThreshold := false
	d.Mapping(n, path, func(key string, v *yaml.Node, p string) bool {
		if key != "threshold" {
			return d.rate(&t.rates, key, v, p)
		}
		haveThreshold = true
		vn := yamldecode.Deref(v)
		if vn == nil || vn.Kind != yaml.ScalarNode || vn.ShortTag() != "!!int" {
			d.Fail(vn, p, "must be a whole number of prompt tokens")
			return true
		}
		i, err := strconv.ParseInt(strings.ReplaceAll(vn.Value, "_", ""), 10, 64)
		if err != nil || i <= 0 {
			d.Fail(vn, p, "must be a whole number of prompt tokens > 0, got %s", vn.Value)
			return true
		}
		t.threshold = i
		return true
	})
	if nn := yamldecode.Deref(n); nn != nil && nn.Kind == yaml.MappingNode {
		if !haveThreshold {
			d.Fail(nn, path+".threshold", "required: a tier applies above a prompt size")
		}
		d.requireRates(t.rates, path, nn)
	}
	return t
}

// matchGlob is path.Match, which validates the whole pattern.
func matchGlob(pattern, name string) (bool, error) { return path.Match(pattern, name) }
