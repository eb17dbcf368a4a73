package pricing

import (
	"fmt"
	"maps"
	"slices"
	"strings"

	"go.yaml.in/yaml/v3"

	"github.com/agentmeter/agentmeter/internal/yamldecode"
)

// build validates the entries of a table and of its overrides against each
// other and indexes them. Within one file a (provider, name) may be
// declared more than once only with different effective_from dates; an
// override's entry is layered on the base's entry of the same name (see
// the package documentation).
func build(base, overrides []spec, fileAliases map[string]string) (*Table, []error) {
	t := &Table{
		providers:       map[string]*providerIndex{},
		providerAliases: maps.Clone(builtinProviderAliases),
		memo:            make(map[memoKey]*Lookup),
		models:          len(base),
	}
	maps.Copy(t.providerAliases, fileAliases)
	for k, v := range t.providerAliases {
		if k == v {
			delete(t.providerAliases, k) // "gemini: gemini" makes gemini canonical
		}
	}
	var errs []error
	baseIdx := t.indexFile(base, &errs)
	overIdx := t.indexFile(overrides, &errs)
	if len(errs) > 0 {
		return nil, errs
	}
	t.providers = baseIdx
	for prov, oi := range overIdx {
		bi := t.providers[prov]
		if bi == nil {
			t.providers[prov] = oi
			continue
		}
		for name, oe := range oi.exact {
			if be := bi.exact[name]; be != nil {
				be.versions = layer(be.versions, oe.versions)
				retarget(oi, oe, be)
				continue
			}
			delete(bi.alias, name)
			bi.exact[name] = oe
		}
		for name, oe := range oi.alias {
			delete(bi.exact, name)
			bi.alias[name] = oe
		}
		// Override patterns first: among patterns of equal length the
		// first declared wins.
		bi.patterns = append(oi.patterns, bi.patterns...)
	}
	for name, idx := range t.providers {
		idx.finish()
		t.providerNames = append(t.providerNames, name)
	}
	slices.Sort(t.providerNames)
	return t, nil
}

// retarget points the aliases and patterns of from at to.
func retarget(idx *providerIndex, from, to *entry) {
	for name, e := range idx.alias {
		if e == from {
			idx.alias[name] = to
		}
	}
	for i := range idx.patterns {
		if idx.patterns[i].e == from {
			idx.patterns[i].e = to
		}
	}
}

// layer puts override prices over base prices: an override without
// effective_from replaces the base entry; otherwise the base prices stay
// in force until the first override's date.
func layer(base, over []*ModelPrice) []*ModelPrice {
	if over[0].from.IsZero() {
		return over
	}
	out := append(slices.Clone(base), over...)
	slices.SortStableFunc(out, func(a, b *ModelPrice) int { return a.from.Compare(b.from) })
	return out
}

// indexFile indexes the entries of one file, reporting clashes.
func (t *Table) indexFile(specs []spec, errs *[]error) map[string]*providerIndex {
	out := map[string]*providerIndex{}
	fail := func(path string, n *yaml.Node, format string, args ...any) {
		line := 0
		if n != nil {
			line = n.Line
		}
		*errs = append(*errs, &yamldecode.Problem{Line: line, Path: path, Msg: fmt.Sprintf(format, args...)})
	}
	// Where each name, alias and pattern of a provider was declared.
	type owner struct {
		names    map[string]string
		entries  map[string]*entry
		patterns map[string]string
	}
	owners := map[string]*owner{}

	for _, s := range specs {
		prov := t.canonicalProvider(s.provider)
		o := owners[prov]
		if o == nil {
			o = &owner{names: map[string]string{}, entries: map[string]*entry{}, patterns: map[string]string{}}
			owners[prov] = o
		}
		idx := out[prov]
		if idx == nil {
			idx = &providerIndex{exact: map[string]*entry{}, alias: map[string]*entry{}}
			out[prov] = idx
		}
		mp := s.price
		mp.provider, mp.model = prov, s.name

		slices.SortStableFunc(mp.tiers, func(a, b Tier) int { return int(sign(a.Threshold - b.Threshold)) })
		for i := 1; i < len(mp.tiers); i++ {
			if mp.tiers[i].Threshold == mp.tiers[i-1].Threshold {
				fail(s.path+".tiers", s.node, "two tiers have the threshold %d", mp.tiers[i].Threshold)
			}
		}

		// A later declaration of a name with another effective_from is a
		// new price of the same entry.
		skipName := false
		if prev := o.entries[s.name]; prev != nil && s.name != "" {
			sameFrom := slices.ContainsFunc(prev.versions, func(v *ModelPrice) bool { return v.from.Equal(mp.from) })
			switch {
			case sameFrom && mp.from.IsZero():
				fail(s.path+".name", s.node, "duplicate model %q for provider %q, already declared at %s", s.name, prov, o.names[s.name])
			case sameFrom:
				fail(s.path+".name", s.node, "duplicate model %q for provider %q with the same effective_from, already declared at %s",
					s.name, prov, o.names[s.name])
			case len(s.aliases) > 0 || len(s.patterns) > 0:
				fail(s.path, s.node, "a later price of %q (another effective_from) must not declare aliases or patterns: declare them on its first entry, %s",
					s.name, o.names[s.name])
			default:
				prev.versions = append(prev.versions, mp)
				slices.SortStableFunc(prev.versions, func(a, b *ModelPrice) int { return a.from.Compare(b.from) })
				continue
			}
			skipName = true
		}
		e := &entry{provider: prov, name: s.name, versions: []*ModelPrice{mp}}

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
		if !skipName && claim(s.name, s.path+".name", s.node) {
			idx.exact[s.name] = e
			o.entries[s.name] = e
		}
		for _, a := range s.aliases {
			name := strings.ToLower(strings.TrimSpace(a.value))
			if name == "" {
				fail(a.path, a.node, "must not be empty")
				continue
			}
			if claim(name, a.path, a.node) {
				idx.alias[name] = e
			}
		}
		for _, p := range s.patterns {
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
				e:      e,
			})
		}
	}
	// Patterns: longest first, equal lengths in file order (finish sorts
	// stably again after layering).
	for _, idx := range out {
		slices.SortStableFunc(idx.patterns, func(a, b pattern) int { return len(b.glob) - len(a.glob) })
	}
	return out
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
