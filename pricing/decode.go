package pricing

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/url"
	"path"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
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

// fieldError is one problem of a table, located by its path and line.
type fieldError struct {
	path string
	line int
	msg  string
}

func lineOf(err error) int {
	if fe, ok := err.(*fieldError); ok {
		return fe.line
	}
	return 0
}

func (e *fieldError) Error() string {
	if e.line > 0 {
		return fmt.Sprintf("%s: %s (line %d)", e.path, e.msg, e.line)
	}
	return fmt.Sprintf("%s: %s", e.path, e.msg)
}

// decoder walks a document and collects every problem.
type decoder struct {
	errs  []error
	paths map[string]bool // paths with an error
}

func (d *decoder) errorf(path string, n *yaml.Node, format string, args ...any) {
	line := 0
	if n != nil {
		line = n.Line
	}
	d.errs = append(d.errs, &fieldError{path: path, line: line, msg: fmt.Sprintf(format, args...)})
	if d.paths == nil {
		d.paths = map[string]bool{}
	}
	d.paths[path] = true
}

// rawModel is a model entry as decoded, before defaults.
type rawModel struct {
	path     string
	node     *yaml.Node
	provider string
	name     string
	aliases  []located
	patterns []located
	rates    rawRates
	tiers    []rawTier
}

type rawTier struct {
	threshold int64
	rates     rawRates
}

// rawRates are the prices as decoded; a nil field was absent.
type rawRates struct {
	input, output, cacheRead, cacheWrite, cacheWrite1h *float64
}

// resolve fills in the documented defaults for missing cache prices.
func (r rawRates) resolve() Rates {
	var out Rates
	if r.input != nil {
		out.Input = *r.input
	}
	if r.output != nil {
		out.Output = *r.output
	}
	out.CacheRead = out.Input
	if r.cacheRead != nil {
		out.CacheRead = *r.cacheRead
	}
	out.CacheWrite = out.Input
	if r.cacheWrite != nil {
		out.CacheWrite = *r.cacheWrite
	}
	out.CacheWrite1h = out.CacheWrite
	if r.cacheWrite1h != nil {
		out.CacheWrite1h = *r.cacheWrite1h
	}
	return out
}

type located struct {
	value string
	path  string
	node  *yaml.Node
}

func parse(data []byte, format string) (*Table, error) {
	if len(data) > maxTableBytes {
		return nil, fmt.Errorf("price table is %d bytes, more than the limit of %d", len(data), maxTableBytes)
	}
	var root *yaml.Node
	var err error
	switch strings.ToLower(format) {
	case "yaml", "yml":
		root, err = yamlRoot(data)
	case "json":
		root, err = jsonRoot(data)
	default:
		return nil, fmt.Errorf("unknown price table format %q, want yaml or json", format)
	}
	if err != nil {
		return nil, err
	}

	d := &decoder{}
	declared, asOf, sources, aliases, models := d.root(root)
	// Cross-entry checks run even on a table with field errors, so that
	// every problem is reported at once.
	t, errs := newTable(models, aliases)
	if errs = append(d.errs, errs...); len(errs) > 0 {
		slices.SortStableFunc(errs, func(a, b error) int { return lineOf(a) - lineOf(b) })
		return nil, errors.Join(errs...)
	}
	t.version = versionOf(declared, data)
	t.asOf = asOf
	t.sources = sources
	return t, nil
}

func yamlRoot(data []byte) (*yaml.Node, error) {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, errors.New("price table is empty")
		}
		return nil, fmt.Errorf("parse price table yaml: %w", err)
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		if err != nil {
			return nil, fmt.Errorf("parse price table yaml: %w", err)
		}
		return nil, fmt.Errorf("price table has more than one yaml document (line %d)", extra.Line)
	}
	if doc.Kind == yaml.DocumentNode {
		if len(doc.Content) == 0 {
			return nil, errors.New("price table is empty")
		}
		return doc.Content[0], nil
	}
	return &doc, nil
}

// jsonRoot converts a JSON document into a yaml.Node tree (with lines), so
// that both formats are decoded and validated by the same code.
func jsonRoot(data []byte) (*yaml.Node, error) {
	j := &jsonReader{data: data, dec: json.NewDecoder(bytes.NewReader(data))}
	j.dec.UseNumber()
	for i, b := range data {
		if b == '\n' {
			j.newlines = append(j.newlines, i)
		}
	}
	n, err := j.value(0)
	if err != nil {
		if errors.Is(err, io.EOF) {
			return nil, errors.New("price table is empty")
		}
		return nil, fmt.Errorf("parse price table json: %w", err)
	}
	if _, err := j.dec.Token(); !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("parse price table json: unexpected data after the top-level value (line %d)", j.line())
	}
	return n, nil
}

type jsonReader struct {
	data     []byte
	dec      *json.Decoder
	newlines []int
}

// line returns the line of the next token.
func (j *jsonReader) line() int {
	off := int(j.dec.InputOffset())
	for off < len(j.data) && strings.IndexByte(" \t\r\n,:", j.data[off]) >= 0 {
		off++
	}
	return sort.SearchInts(j.newlines, off) + 1
}

func (j *jsonReader) value(depth int) (*yaml.Node, error) {
	if depth > maxJSONDepth {
		return nil, fmt.Errorf("nested more than %d deep (line %d)", maxJSONDepth, j.line())
	}
	line := j.line()
	tok, err := j.dec.Token()
	if err != nil {
		return nil, err
	}
	n := &yaml.Node{Line: line}
	switch v := tok.(type) {
	case json.Delim:
		switch v {
		case '{':
			n.Kind, n.Tag = yaml.MappingNode, "!!map"
			for j.dec.More() {
				kline := j.line()
				kt, err := j.dec.Token()
				if err != nil {
					return nil, err
				}
				key, ok := kt.(string)
				if !ok {
					return nil, fmt.Errorf("object key is not a string (line %d)", kline)
				}
				val, err := j.value(depth + 1)
				if err != nil {
					return nil, err
				}
				n.Content = append(n.Content, &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: key, Line: kline}, val)
			}
		case '[':
			n.Kind, n.Tag = yaml.SequenceNode, "!!seq"
			for j.dec.More() {
				val, err := j.value(depth + 1)
				if err != nil {
					return nil, err
				}
				n.Content = append(n.Content, val)
			}
		default:
			return nil, fmt.Errorf("unexpected %q (line %d)", v, line)
		}
		if _, err := j.dec.Token(); err != nil { // the closing delimiter
			return nil, err
		}
	case string:
		n.Kind, n.Tag, n.Value = yaml.ScalarNode, "!!str", v
	case json.Number:
		n.Kind, n.Tag, n.Value = yaml.ScalarNode, "!!int", v.String()
		if strings.ContainsAny(n.Value, ".eE") {
			n.Tag = "!!float"
		}
	case bool:
		n.Kind, n.Tag, n.Value = yaml.ScalarNode, "!!bool", strconv.FormatBool(v)
	case nil:
		n.Kind, n.Tag, n.Value = yaml.ScalarNode, "!!null", "null"
	}
	return n, nil
}

// deref follows YAML aliases (*anchor) to the node they refer to.
func deref(n *yaml.Node) *yaml.Node {
	for i := 0; n != nil && n.Kind == yaml.AliasNode && i < 100; i++ {
		n = n.Alias
	}
	return n
}

// mapping calls f for every key of the mapping n, in order, reporting
// duplicate keys and keys f does not know (f returns false).
func (d *decoder) mapping(n *yaml.Node, path string, f func(key string, val *yaml.Node, path string) bool) {
	n = deref(n)
	if n == nil || n.Kind != yaml.MappingNode {
		d.errorf(path, n, "must be a mapping")
		return
	}
	seen := make(map[string]bool, len(n.Content)/2)
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := deref(n.Content[i]), n.Content[i+1]
		if k == nil || k.Kind != yaml.ScalarNode {
			d.errorf(path, n.Content[i], "keys must be strings")
			continue
		}
		if k.Value == "<<" && k.ShortTag() == "!!merge" {
			d.errorf(path, k, "yaml merge keys (<<) are not supported")
			continue
		}
		p := k.Value
		if path != "" {
			p = path + "." + k.Value
		}
		if seen[k.Value] {
			d.errorf(p, k, "duplicate key")
			continue
		}
		seen[k.Value] = true
		if !f(k.Value, v, p) {
			d.errorf(p, k, "unknown key")
		}
	}
}

// sequence calls f for every item of the sequence n.
func (d *decoder) sequence(n *yaml.Node, path string, limit int, f func(i int, item *yaml.Node, path string)) {
	n = deref(n)
	if n == nil || n.Kind != yaml.SequenceNode {
		d.errorf(path, n, "must be a list")
		return
	}
	if len(n.Content) > limit {
		d.errorf(path, n, "has %d items, more than the limit of %d", len(n.Content), limit)
		return
	}
	for i, item := range n.Content {
		f(i, item, fmt.Sprintf("%s[%d]", path, i))
	}
}

func (d *decoder) str(n *yaml.Node, path string) string {
	n = deref(n)
	if n == nil || n.Kind != yaml.ScalarNode || n.ShortTag() == "!!null" {
		d.errorf(path, n, "must be a string")
		return ""
	}
	return n.Value
}

func (d *decoder) strings(n *yaml.Node, path string) []located {
	var out []located
	d.sequence(n, path, maxNamesPerModel, func(_ int, item *yaml.Node, p string) {
		out = append(out, located{value: d.str(item, p), path: p, node: deref(item)})
	})
	return out
}

// price decodes a price: a finite number >= 0.
func (d *decoder) price(n *yaml.Node, path string) *float64 {
	n = deref(n)
	if n == nil || n.Kind != yaml.ScalarNode || (n.ShortTag() != "!!int" && n.ShortTag() != "!!float") {
		d.errorf(path, n, "must be a number (USD per million tokens)")
		return nil
	}
	f, ok := parseNumber(n.Value)
	switch {
	case !ok:
		d.errorf(path, n, "must be a number (USD per million tokens), got %q", n.Value)
		return nil
	case math.IsNaN(f) || math.IsInf(f, 0):
		d.errorf(path, n, "must be a finite number, got %s", n.Value)
		return nil
	case f < 0:
		d.errorf(path, n, "must not be negative, got %s", n.Value)
		return nil
	}
	return &f
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

func (d *decoder) root(n *yaml.Node) (version string, asOf time.Time, sources []string, aliases map[string]string, models []rawModel) {
	haveModels := false
	d.mapping(n, "", func(key string, v *yaml.Node, p string) bool {
		switch key {
		case "version":
			version = strings.TrimSpace(d.str(v, p))
		case "as_of":
			s := d.str(v, p)
			if s == "" {
				break
			}
			t, err := time.Parse(time.DateOnly, s)
			if err != nil {
				d.errorf(p, deref(v), "must be a date YYYY-MM-DD, got %q", s)
			}
			asOf = t
		case "sources":
			for _, s := range d.strings(v, p) {
				u, err := url.Parse(s.value)
				if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
					d.errorf(s.path, s.node, "must be an http(s) URL, got %q", s.value)
					continue
				}
				sources = append(sources, s.value)
			}
		case "provider_aliases":
			aliases = map[string]string{}
			d.mapping(v, p, func(alias string, target *yaml.Node, ap string) bool {
				if len(aliases) >= maxProviderAliases {
					d.errorf(p, deref(v), "more than %d provider aliases", maxProviderAliases)
					return true
				}
				tv := strings.ToLower(strings.TrimSpace(d.str(target, ap)))
				if tv == "" {
					d.errorf(ap, deref(target), "must name a provider")
				}
				aliases[strings.ToLower(strings.TrimSpace(alias))] = tv
				return true
			})
		case "models":
			haveModels = true
			d.sequence(v, p, maxModels, func(_ int, item *yaml.Node, mp string) {
				models = append(models, d.model(item, mp))
			})
		default:
			return false
		}
		return true
	})
	if !haveModels && len(d.errs) == 0 {
		d.errorf("models", nil, "required: the table has no models")
	}
	return
}

func (d *decoder) model(n *yaml.Node, path string) rawModel {
	m := rawModel{path: path, node: deref(n)}
	haveName := false
	d.mapping(n, path, func(key string, v *yaml.Node, p string) bool {
		switch key {
		case "provider":
			m.provider = strings.ToLower(strings.TrimSpace(d.str(v, p)))
			if m.provider == "" {
				d.errorf(p, deref(v), "must not be empty")
			}
		case "name":
			haveName = true
			m.name = strings.ToLower(strings.TrimSpace(d.str(v, p)))
			if m.name == "" {
				d.errorf(p, deref(v), "must not be empty")
			}
		case "aliases":
			m.aliases = d.strings(v, p)
		case "patterns":
			m.patterns = d.strings(v, p)
		case "tiers":
			d.sequence(v, p, maxTiersPerModel, func(_ int, item *yaml.Node, tp string) {
				m.tiers = append(m.tiers, d.tier(item, tp))
			})
		default:
			return d.rate(&m.rates, key, v, p)
		}
		return true
	})
	if m.node != nil && m.node.Kind == yaml.MappingNode {
		if m.provider == "" && !d.has(path+".provider") {
			d.errorf(path+".provider", m.node, "required")
		}
		if !haveName {
			d.errorf(path+".name", m.node, "required")
		}
		d.requireRates(m.rates, path, m.node)
	}
	return m
}

// has reports whether an error was already recorded for path.
func (d *decoder) has(path string) bool { return d.paths[path] }

func (d *decoder) requireRates(r rawRates, path string, n *yaml.Node) {
	if r.input == nil && !d.has(path+".input") {
		d.errorf(path+".input", n, "required")
	}
	if r.output == nil && !d.has(path+".output") {
		d.errorf(path+".output", n, "required")
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
	default:
		return false
	}
	return true
}

func (d *decoder) tier(n *yaml.Node, path string) rawTier {
	var t rawTier
	haveThreshold := false
	d.mapping(n, path, func(key string, v *yaml.Node, p string) bool {
		if key != "threshold" {
			return d.rate(&t.rates, key, v, p)
		}
		haveThreshold = true
		vn := deref(v)
		if vn == nil || vn.Kind != yaml.ScalarNode || vn.ShortTag() != "!!int" {
			d.errorf(p, vn, "must be a whole number of prompt tokens")
			return true
		}
		i, err := strconv.ParseInt(strings.ReplaceAll(vn.Value, "_", ""), 10, 64)
		if err != nil || i <= 0 {
			d.errorf(p, vn, "must be a whole number of prompt tokens > 0, got %s", vn.Value)
			return true
		}
		t.threshold = i
		return true
	})
	if nn := deref(n); nn != nil && nn.Kind == yaml.MappingNode {
		if !haveThreshold {
			d.errorf(path+".threshold", nn, "required: a tier applies above a prompt size")
		}
		d.requireRates(t.rates, path, nn)
	}
	return t
}

// newTable validates the decoded models against each other and indexes them.
func newTable(models []rawModel, fileAliases map[string]string) (*Table, []error) {
	t := &Table{
		providers:       map[string]*providerIndex{},
		providerAliases: map[string]string{},
		memo:            make(map[memoKey]*ModelPrice),
		models:          len(models),
	}
	for k, v := range builtinProviderAliases {
		t.providerAliases[k] = v
	}
	for k, v := range fileAliases {
		t.providerAliases[k] = v
	}
	for k, v := range t.providerAliases {
		if k == v {
			delete(t.providerAliases, k) // "gemini: gemini" makes gemini canonical
		}
	}

	var errs []error
	fail := func(path string, n *yaml.Node, format string, args ...any) {
		line := 0
		if n != nil {
			line = n.Line
		}
		errs = append(errs, &fieldError{path: path, line: line, msg: fmt.Sprintf(format, args...)})
	}
	// Where each name, alias and pattern of a provider was declared.
	type owner struct{ names, patterns map[string]string }
	owners := map[string]*owner{}

	for _, m := range models {
		prov := t.canonicalProvider(m.provider)
		o := owners[prov]
		if o == nil {
			o = &owner{names: map[string]string{}, patterns: map[string]string{}}
			owners[prov] = o
		}
		idx := t.providers[prov]
		if idx == nil {
			idx = &providerIndex{exact: map[string]*ModelPrice{}, alias: map[string]*ModelPrice{}}
			t.providers[prov] = idx
		}
		mp := &ModelPrice{provider: prov, model: m.name, base: m.rates.resolve()}

		slices.SortStableFunc(m.tiers, func(a, b rawTier) int { return int(sign(a.threshold - b.threshold)) })
		for i, tr := range m.tiers {
			if i > 0 && tr.threshold == m.tiers[i-1].threshold {
				fail(m.path+".tiers", m.node, "two tiers have the threshold %d", tr.threshold)
			}
			mp.tiers = append(mp.tiers, Tier{Threshold: tr.threshold, Rates: tr.rates.resolve()})
		}

		claim := func(name, path string, n *yaml.Node) bool {
			if name == "" {
				return false
			}
			if prev, dup := o.names[name]; dup {
				fail(path, n, "duplicate model %q for provider %q, already declared at %s", name, prov, prev)
				return false
			}
			o.names[name] = path
			return true
		}
		if claim(m.name, m.path+".name", m.node) {
			idx.exact[m.name] = mp
		}
		for _, a := range m.aliases {
			name := strings.ToLower(strings.TrimSpace(a.value))
			if name == "" {
				fail(a.path, a.node, "must not be empty")
				continue
			}
			if claim(name, a.path, a.node) {
				idx.alias[name] = mp
			}
		}
		for _, p := range m.patterns {
			glob := strings.ToLower(strings.TrimSpace(p.value))
			switch {
			case glob == "":
				fail(p.path, p.node, "must not be empty")
				continue
			case !strings.ContainsAny(glob, `*?[\`):
				fail(p.path, p.node, "pattern %q has no wildcard; list it under aliases", glob)
				continue
			}
			if _, err := matchGlob(glob, ""); err != nil {
				fail(p.path, p.node, "bad pattern %q: %v", glob, err)
				continue
			}
			if prev, dup := o.patterns[glob]; dup {
				fail(p.path, p.node, "duplicate pattern %q for provider %q, already declared at %s", glob, prov, prev)
				continue
			}
			o.patterns[glob] = p.path
			body := glob[:len(glob)-1]
			idx.patterns = append(idx.patterns, pattern{
				glob:   glob,
				prefix: strings.HasSuffix(glob, "*") && !strings.ContainsAny(body, `*?[\`),
				price:  mp,
			})
		}
	}
	if len(errs) > 0 {
		return nil, errs
	}
	for name, idx := range t.providers {
		slices.SortStableFunc(idx.patterns, func(a, b pattern) int { return len(b.glob) - len(a.glob) })
		t.providerNames = append(t.providerNames, name)
	}
	slices.Sort(t.providerNames)
	return t, nil
}

func sign(x int64) int64 {
	switch {
	case x < 0:
		return -1
	case x > 0:
		return 1
	}
	return 0
}

// matchGlob is path.Match, which validates the whole pattern.
func matchGlob(pattern, name string) (bool, error) { return path.Match(pattern, name) }
