package pricing

import (
	"bytes"
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"math"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"

	"github.com/agentmeter/agentmeter/internal/yamldecode"
)

// Report says what reading a table left out: LiteLLM entries that are not
// chat models or cannot be used, and the price fields of the entries it
// priced that a call's token counts cannot express (batch and service
// tiers, audio and image tokens, per-request fees, ...).
type Report struct {
	// Entries is the number of entries in the file.
	Entries int
	// Priced is the number of entries priced.
	Priced int
	// Skipped counts the entries left out, by reason ("mode
	// image_generation", "no input_cost_per_token").
	Skipped map[string]int
	// Unusable lists the entries left out for a bad value, with the
	// problem ("gpt-x: input_cost_per_token: must not be negative"); at
	// most maxReportLines.
	Unusable []string
	// Unused counts, by field name, the priced entries with a price field
	// that agentmeter does not apply.
	Unused map[string]int
	// Conflicts lists names that two entries of one provider claim at
	// different prices; neither is used (the model stays unpriced).
	Conflicts []string
}

const maxReportLines = 200

func (r Report) clone() Report {
	r.Skipped = maps.Clone(r.Skipped)
	r.Unusable = slices.Clone(r.Unusable)
	r.Unused = maps.Clone(r.Unused)
	r.Conflicts = slices.Clone(r.Conflicts)
	return r
}

// SkippedTotal returns the number of entries left out, whatever the reason.
func (r Report) SkippedTotal() int {
	n := len(r.Unusable)
	for _, c := range r.Skipped {
		n += c
	}
	return n
}

// liteLLMChatModes are the modes of LiteLLM entries that price a chat
// (text generation) call by its tokens.
var liteLLMChatModes = map[string]bool{"chat": true, "responses": true, "completion": true}

// liteLLMTier matches a long-context tier field: the rate, the threshold
// and its unit ("k" = thousand tokens).
var liteLLMTier = regexp.MustCompile(`^(input_cost_per_token|output_cost_per_token|cache_read_input_token_cost|cache_creation_input_token_cost|cache_creation_input_token_cost_above_1hr)_above_([0-9]+)(k?)_tokens$`)

// liteLLMInclusive are the LiteLLM providers whose tiers apply from their
// threshold on, not above it (litellm's _INCLUSIVE_THRESHOLD_PROVIDERS).
var liteLLMInclusive = map[string]bool{"xai": true}

// liteLLMMetadata are the fields of an entry that say nothing about price.
func liteLLMMetadata(key string) bool {
	return !strings.Contains(key, "cost") && !strings.Contains(key, "pric") && !strings.Contains(key, "uplift") &&
		!strings.Contains(key, "multiplier") && key != "provider_specific_entry"
}

// liteLLMRates are one price level of an entry as read, per token; nil
// fields were absent.
type liteLLMRates struct {
	input, output, cacheRead, cacheWrite, cacheWrite1h *float64
}

// readLiteLLM reads LiteLLM's model_prices_and_context_window.json: an
// object of entries keyed by model, each with its litellm_provider, mode and
// per-token prices. An entry that is not a chat model, or whose prices
// cannot be used, is left out and reported; the file is refused when it is
// not valid JSON, not such an object, repeats a key, or prices no chat
// model at all.
//
// The file is large (thousands of entries), so it is read with
// encoding/json rather than through yamldecode's node tree; within an
// entry a repeated field keeps its last value, as in litellm's own
// json.load.
func readLiteLLM(data []byte) ([]spec, Report, error) {
	rep := Report{Skipped: map[string]int{}, Unused: map[string]int{}}
	var specs []spec
	skip := func(reason string) { rep.Skipped[reason]++ }
	unusable := func(key, msg string) {
		if len(rep.Unusable) < maxReportLines {
			rep.Unusable = append(rep.Unusable, key+": "+msg)
		} else {
			skip("unusable (beyond the first " + strconv.Itoa(maxReportLines) + " listed)")
		}
	}
	lines := newLineIndex(data)
	next := func(off int64) int64 { // the offset of the next token
		for off < int64(len(data)) && strings.IndexByte(" \t\r\n,:", data[off]) >= 0 {
			off++
		}
		return off
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		return nil, Report{}, &yamldecode.Problem{Line: 1, Msg: "a LiteLLM price table must be a JSON object of model entries"}
	}
	seen := map[string]int{}
	for dec.More() {
		off := next(dec.InputOffset())
		tok, err := dec.Token()
		if err != nil {
			return nil, Report{}, &yamldecode.Problem{Line: lines.at(off), Msg: "invalid JSON: " + err.Error()}
		}
		key, _ := tok.(string)
		line := lines.at(off)
		var raw map[string]json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			var ute *json.UnmarshalTypeError
			if !errors.As(err, &ute) {
				return nil, Report{}, &yamldecode.Problem{Line: lines.at(dec.InputOffset()), Path: key, Msg: "invalid JSON: " + err.Error()}
			}
			raw = nil // not an object: reported below
		}
		if first, dup := seen[key]; dup {
			return nil, Report{}, &yamldecode.Problem{Line: line, Path: key, Msg: fmt.Sprintf("repeated key (first at line %d)", first)}
		}
		seen[key] = line
		if key == "sample_spec" {
			continue
		}
		rep.Entries++
		if len(specs) >= maxModels {
			skip(fmt.Sprintf("more than %d priced entries", maxModels))
			continue
		}
		if raw == nil {
			unusable(key, "must be an object")
			continue
		}
		s, reason, err := liteLLMEntry(key, raw, rep.Unused)
		switch {
		case err != nil:
			unusable(key, err.Error())
		case reason != "":
			skip(reason)
		default:
			specs = append(specs, s)
		}
	}
	if _, err := dec.Token(); err != nil {
		return nil, Report{}, &yamldecode.Problem{Line: lines.at(dec.InputOffset()), Msg: "invalid JSON: " + err.Error()}
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return nil, Report{}, &yamldecode.Problem{Line: lines.at(dec.InputOffset()), Msg: "invalid JSON: unexpected data after the top-level object"}
	}
	if len(specs) == 0 {
		return nil, Report{}, errors.New("the LiteLLM price table prices no chat model")
	}
	specs, rep.Conflicts = dedupeLiteLLM(specs)
	rep.Priced = len(specs)
	return specs, rep, nil
}

// lineIndex maps byte offsets to lines.
type lineIndex []int

func newLineIndex(data []byte) lineIndex {
	var l lineIndex
	for i, b := range data {
		if b == '\n' {
			l = append(l, i)
		}
	}
	return l
}

func (l lineIndex) at(off int64) int { return sort.SearchInts(l, int(off)) + 1 }

// jsonRate decodes a LiteLLM per-token price: a finite JSON number >= 0.
// It returns nil for an absent or null field.
func jsonRate(raw json.RawMessage) (*float64, string) {
	s := strings.TrimSpace(string(raw))
	if s == "" || s == "null" {
		return nil, ""
	}
	if s[0] != '-' && (s[0] < '0' || s[0] > '9') {
		return nil, "must be a number, got " + yamldecode.Quote(s)
	}
	f, err := strconv.ParseFloat(s, 64)
	switch {
	case err != nil:
		return nil, "must be a number, got " + yamldecode.Quote(s)
	case math.IsInf(f, 0) || math.IsNaN(f):
		return nil, "must be a finite number, got " + s
	case f < 0:
		return nil, "must not be negative, got " + s
	}
	return &f, ""
}

// liteLLMEntry reads one entry: a spec, or the reason it is skipped, or the
// problem that makes it unusable. unused counts the price fields it leaves.
func liteLLMEntry(key string, fields map[string]json.RawMessage, unused map[string]int) (spec, string, error) {
	str := func(k string) (string, bool) {
		var s string
		if raw, ok := fields[k]; ok && json.Unmarshal(raw, &s) == nil {
			return s, true
		}
		return "", false
	}
	if _, hasMode := fields["mode"]; hasMode {
		mode, ok := str("mode")
		if !ok {
			return spec{}, "mode not a string", nil
		}
		if !liteLLMChatModes[mode] {
			if len(mode) > 40 {
				mode = mode[:40] + "..."
			}
			return spec{}, "mode " + mode, nil
		}
	}
	_, tiered := fields["tiered_pricing"]
	if _, ok := fields["input_cost_per_token"]; !ok && !tiered {
		return spec{}, "no input_cost_per_token", nil
	}
	provider, _ := str("litellm_provider")
	provider = strings.ToLower(strings.TrimSpace(provider))
	if provider == "" {
		return spec{}, "", errors.New("litellm_provider: must be a provider name")
	}

	var problems []string
	rate := func(k string) *float64 {
		raw, ok := fields[k]
		if !ok {
			return nil
		}
		f, msg := jsonRate(raw)
		if msg != "" {
			problems = append(problems, k+": "+msg)
		}
		return f
	}
	used := map[string]bool{"litellm_provider": true, "mode": true}
	level := func(get func(string) *float64, suffix string) liteLLMRates {
		r := liteLLMRates{
			input:        get("input_cost_per_token" + suffix),
			output:       get("output_cost_per_token" + suffix),
			cacheRead:    get("cache_read_input_token_cost" + suffix),
			cacheWrite:   get("cache_creation_input_token_cost" + suffix),
			cacheWrite1h: get("cache_creation_input_token_cost_above_1hr" + suffix),
		}
		for _, k := range []string{"input_cost_per_token", "output_cost_per_token", "cache_read_input_token_cost",
			"cache_creation_input_token_cost", "cache_creation_input_token_cost_above_1hr"} {
			used[k+suffix] = true
		}
		return r
	}
	base := level(rate, "")
	if base.cacheRead == nil {
		// DeepSeek's entries name the cache-read price so.
		base.cacheRead = rate("input_cost_per_token_cache_hit")
	}
	used["input_cost_per_token_cache_hit"] = true
	reasoning := rate("output_cost_per_reasoning_token")
	used["output_cost_per_reasoning_token"] = true

	mp := &ModelPrice{origin: "litellm:" + key}
	if tiered {
		used["tiered_pricing"] = true
		b, tiers, err := liteLLMRanges(fields["tiered_pricing"])
		if err != nil {
			problems = append(problems, "tiered_pricing: "+err.Error())
		}
		mp.base, mp.tiers = b, tiers
	} else {
		if base.output == nil && len(problems) == 0 {
			if _, ok := fields["output_cost_per_token"]; !ok {
				// An input-only price (embeddings named chat, moderation)
				// cannot price a completion.
				return spec{}, "no output_cost_per_token", nil
			}
		}
		mp.base = base.resolve(reasoning)
		// Long-context tiers: every *_above_<N>[k]_tokens field.
		thresholds := map[int64]bool{}
		for k := range fields {
			if !strings.Contains(k, "_above_") || !strings.HasSuffix(k, "_tokens") {
				continue
			}
			m := liteLLMTier.FindStringSubmatch(k)
			if m == nil {
				continue
			}
			n, err := strconv.ParseInt(m[2], 10, 64)
			if err != nil || n <= 0 || n > 1<<40 {
				problems = append(problems, k+": threshold out of range")
				continue
			}
			if m[3] == "k" {
				n *= 1000
			}
			thresholds[n] = true
		}
		prev := base
		for _, n := range slices.Sorted(maps.Keys(thresholds)) {
			if len(mp.tiers) >= maxTiersPerModel {
				problems = append(problems, fmt.Sprintf("more than %d tiers", maxTiersPerModel))
				break
			}
			suffix := "_above_" + strconv.FormatInt(n, 10) + "_tokens"
			if n%1000 == 0 {
				if _, ok := fields["input_cost_per_token_above_"+strconv.FormatInt(n/1000, 10)+"k_tokens"]; ok || !hasAnySuffix(fields, suffix) {
					suffix = "_above_" + strconv.FormatInt(n/1000, 10) + "k_tokens"
				}
			}
			lv := level(rate, suffix)
			// litellm: a rate a tier does not state stays the one below.
			cur := liteLLMRates{
				input:        firstOf(lv.input, prev.input),
				output:       firstOf(lv.output, prev.output),
				cacheRead:    firstOf(lv.cacheRead, prev.cacheRead),
				cacheWrite:   firstOf(lv.cacheWrite, prev.cacheWrite),
				cacheWrite1h: firstOf(lv.cacheWrite1h, prev.cacheWrite1h),
			}
			mp.tiers = append(mp.tiers, Tier{Threshold: n, Inclusive: liteLLMInclusive[provider], Rates: cur.resolve(reasoning)})
			prev = cur
		}
	}
	if raw, ok := fields["off_peak_pricing"]; ok {
		used["off_peak_pricing"] = true
		op, err := liteLLMOffPeak(raw, reasoning)
		if err != nil {
			problems = append(problems, "off_peak_pricing: "+err.Error())
		}
		mp.offPeak = op
	}
	if len(problems) > 0 {
		slices.Sort(problems)
		return spec{}, "", errors.New(strings.Join(problems, "; "))
	}
	for k := range fields {
		if !used[k] && !liteLLMMetadata(k) {
			unused[k]++
		}
	}
	return spec{path: key, provider: provider, name: liteLLMName(key, provider), price: mp}, "", nil
}

// perMillion converts a per-token price to a per-million one, rounded to
// 15 significant digits so that 4e-07 is 0.4, not 0.39999999999999997.
func perMillion(perToken float64) float64 {
	v, _ := strconv.ParseFloat(strconv.FormatFloat(perToken*1e6, 'g', 15, 64), 64)
	return v
}

func hasAnySuffix(fields map[string]json.RawMessage, suffix string) bool {
	for k := range fields {
		if strings.HasSuffix(k, suffix) {
			return true
		}
	}
	return false
}

func firstOf(a, b *float64) *float64 {
	if a != nil {
		return a
	}
	return b
}

// resolve converts per-token rates to per-million Rates with litellm's
// defaults: cache read and write default to input, the 1-hour write to
// the write, reasoning to output.
func (r liteLLMRates) resolve(reasoning *float64) Rates {
	pm := func(p *float64) *float64 {
		if p == nil {
			return nil
		}
		v := perMillion(*p)
		return &v
	}
	return rawRates{
		input: pm(r.input), output: pm(r.output), cacheRead: pm(r.cacheRead),
		cacheWrite: pm(r.cacheWrite), cacheWrite1h: pm(r.cacheWrite1h), reasoning: pm(reasoning),
	}.resolve()
}

// liteLLMRanges reads tiered_pricing: prompt-size brackets
// [{range: [start, end], input_cost_per_token, ...}], where a bracket
// applies to prompts above its start up to its end, and a prompt above the
// last end is priced at the last bracket (litellm's select_tier_for_input).
func liteLLMRanges(raw json.RawMessage) (Rates, []Tier, error) {
	var items []map[string]json.RawMessage
	if err := json.Unmarshal(raw, &items); err != nil || len(items) == 0 {
		return Rates{}, nil, errors.New("must be a non-empty list of objects")
	}
	if len(items) > maxTiersPerModel+1 {
		return Rates{}, nil, fmt.Errorf("more than %d brackets", maxTiersPerModel+1)
	}
	type bracket struct {
		start, end float64
		rates      Rates
	}
	var bs []bracket
	for i, f := range items {
		var rg []float64
		if err := json.Unmarshal(f["range"], &rg); err != nil || len(rg) != 2 || rg[1] <= rg[0] || rg[0] < 0 ||
			rg[0] != float64(int64(rg[0])) || rg[1] > 1<<50 {
			return Rates{}, nil, fmt.Errorf("[%d].range: must be [start, end] with 0 <= start < end, whole tokens", i)
		}
		var bad []string
		get := func(k string) *float64 {
			v, msg := jsonRate(f[k])
			if msg != "" {
				bad = append(bad, fmt.Sprintf("[%d].%s: %s", i, k, msg))
			}
			return v
		}
		r := liteLLMRates{
			input: get("input_cost_per_token"), output: get("output_cost_per_token"),
			cacheRead: get("cache_read_input_token_cost"), cacheWrite: get("cache_creation_input_token_cost"),
			cacheWrite1h: get("cache_creation_input_token_cost_above_1hr"),
		}
		reasoning := get("output_cost_per_reasoning_token")
		if len(bad) > 0 {
			return Rates{}, nil, errors.New(strings.Join(bad, "; "))
		}
		if r.input == nil || r.output == nil {
			return Rates{}, nil, fmt.Errorf("[%d]: needs input_cost_per_token and output_cost_per_token", i)
		}
		bs = append(bs, bracket{start: rg[0], end: rg[1], rates: r.resolve(reasoning)})
	}
	slices.SortFunc(bs, func(a, b bracket) int { return cmp.Compare(a.start, b.start) })
	if bs[0].start != 0 {
		return Rates{}, nil, errors.New("the first bracket must start at 0")
	}
	var tiers []Tier
	for i := 1; i < len(bs); i++ {
		if bs[i].start != bs[i-1].end {
			return Rates{}, nil, fmt.Errorf("brackets must follow each other: one ends at %v, the next starts at %v", bs[i-1].end, bs[i].start)
		}
		tiers = append(tiers, Tier{Threshold: int64(bs[i].start), Rates: bs[i].rates})
	}
	return bs[0].rates, tiers, nil
}

// liteLLMName is the model name of an entry: its key without a leading
// provider prefix of its own provider ("gemini/gemini-3.5-flash" of
// provider gemini is "gemini-3.5-flash"; "vertex_ai/claude-opus-4-6" of
// vertex_ai-anthropic_models is "claude-opus-4-6"), lowercased.
func liteLLMName(key, provider string) string {
	name := strings.ToLower(strings.TrimSpace(key))
	canon := canonicalBuiltin(provider)
	if seg, rest, ok := strings.Cut(name, "/"); ok && rest != "" && (seg == provider || canonicalBuiltin(seg) == canon) {
		return rest
	}
	return name
}

func canonicalBuiltin(p string) string {
	if c, ok := builtinProviderAliases[p]; ok {
		return c
	}
	if strings.HasPrefix(p, "vertex_ai-") {
		return "gcp.vertex_ai"
	}
	return p
}

// dedupeLiteLLM resolves entries that name the same model of the same
// provider ("deepseek/deepseek-v4-pro" and "deepseek-v4-pro"): at the same
// prices one is kept; at different prices the key without a provider
// prefix wins, and when neither or both lack one, both are left out and the
// name is reported.
func dedupeLiteLLM(specs []spec) ([]spec, []string) {
	type key struct{ provider, name string }
	first := map[key]int{}
	drop := map[int]bool{}
	var conflicts []string
	for i, s := range specs {
		k := key{canonicalBuiltin(s.provider), s.name}
		j, seen := first[k]
		if !seen {
			first[k] = i
			continue
		}
		o := specs[j]
		switch {
		case drop[j]:
			drop[i] = true
		case samePrices(o.price, s.price):
			drop[i] = true
		case strings.ToLower(o.path) == s.name && strings.ToLower(s.path) != s.name:
			drop[i] = true
		case strings.ToLower(s.path) == s.name && strings.ToLower(o.path) != o.name:
			drop[j] = true
			first[k] = i
		default:
			drop[i], drop[j] = true, true
			if len(conflicts) < maxReportLines {
				conflicts = append(conflicts, fmt.Sprintf("%s %s: %q and %q differ", k.provider, k.name, o.path, s.path))
			}
		}
	}
	out := specs[:0]
	for i, s := range specs {
		if !drop[i] {
			out = append(out, s)
		}
	}
	return out, conflicts
}
