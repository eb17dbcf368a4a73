package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"maps"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/agentmeter/agentmeter/config"
	"github.com/agentmeter/agentmeter/pricing"
)

// priceSource is the price table the pricing section names.
func priceSource(p config.Pricing) pricing.Source {
	return pricing.Source{Table: p.Table, Format: p.Format, Overrides: p.Overrides}
}

// checkPrices loads the price table the config names, so that validate
// and run refuse one that would not load.
func checkPrices(cfg config.Config) error {
	if _, err := priceSource(cfg.Pricing).Load(); err != nil {
		return fmt.Errorf("pricing: %w", err)
	}
	return nil
}

// snapshotLine describes the built-in price table for `collector version`.
func snapshotLine() string {
	s := pricing.DefaultSnapshot()
	return fmt.Sprintf("built-in price table %s: LiteLLM's price list from %s, taken %s",
		pricing.Default().Version(), s.Source(), s.Taken)
}

const pricesUsage = `usage:
  collector prices lookup --provider P --model M [--at TIME] [table flags]
      how a call of model M sent to provider P is priced: the entry found,
      how (exact, alias, pattern), and its prices per token
  collector prices check [--format litellm|agentmeter] [--overrides FILE] FILE
      read a price table of either format and list what it cannot use

table flags (default: the built-in table, or the pricing section of --config):
`

// runPrices runs `collector prices ...`. Exit codes: 0 found or usable, 1
// no price or a table that does not load, 2 bad usage.
func runPrices(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || (args[0] != "lookup" && args[0] != "check") {
		fmt.Fprint(stderr, pricesUsage)
		if len(args) > 0 && (args[0] == "-h" || args[0] == "--help" || args[0] == "help") {
			return exitOK
		}
		return exitUsage
	}
	sub, args := args[0], args[1:]
	fs := flag.NewFlagSet("collector prices "+sub, flag.ContinueOnError)
	fs.SetOutput(stderr)
	configPath := fs.String("config", "", "take the table from this config file's pricing section")
	table := fs.String("table", "", "price table file (LiteLLM JSON or agentmeter YAML/JSON)")
	format := fs.String("format", "", "the table's format: litellm or agentmeter (default: told from the file)")
	overrides := fs.String("overrides", "", "agentmeter table layered on the table")
	var provider, model, at *string
	if sub == "lookup" {
		provider = fs.String("provider", "", "gen_ai.provider.name of the call (may be empty)")
		model = fs.String("model", "", "the call's model, as the agent sends it")
		at = fs.String("at", "", "price in force at this time, RFC 3339 or YYYY-MM-DD (default: now)")
	}
	fs.Usage = func() {
		fmt.Fprint(stderr, pricesUsage)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return exitOK
		}
		return exitUsage
	}
	src := pricing.Source{Table: *table, Format: *format, Overrides: *overrides}
	if *configPath != "" {
		cfg, err := config.Load(*configPath)
		if err != nil {
			fmt.Fprintln(stderr, err)
			return exitUsage
		}
		src = priceSource(cfg.Pricing)
	}
	switch sub {
	case "check":
		if fs.NArg() != 1 || *configPath != "" || *table != "" {
			fmt.Fprintln(stderr, "collector prices check: name one table file")
			fs.Usage()
			return exitUsage
		}
		src.Table = fs.Arg(0)
		return pricesCheck(src, stdout, stderr)
	default:
		if fs.NArg() > 0 || *model == "" {
			fmt.Fprintln(stderr, "collector prices lookup: --model is required, and takes no arguments")
			fs.Usage()
			return exitUsage
		}
		when := time.Now()
		if *at != "" {
			var err error
			if when, err = parseWhen(*at); err != nil {
				fmt.Fprintf(stderr, "collector prices lookup: --at: %v\n", err)
				return exitUsage
			}
		}
		return pricesLookup(src, *provider, *model, when, stdout, stderr)
	}
}

func parseWhen(s string) (time.Time, error) {
	if t, err := time.Parse(time.RFC3339, s); err == nil {
		return t, nil
	}
	if t, err := time.Parse(time.DateOnly, s); err == nil {
		return t, nil
	}
	return time.Time{}, fmt.Errorf("%q is neither an RFC 3339 time nor a date YYYY-MM-DD", s)
}

func describeTable(t *pricing.Table) string {
	s := fmt.Sprintf("%s (%s, %s", t.Version(), t.Format(), t.Source())
	if !t.AsOf().IsZero() {
		s += ", as of " + t.AsOf().Format(time.DateOnly)
	}
	return s + ")"
}

func pricesLookup(src pricing.Source, provider, model string, at time.Time, stdout, stderr io.Writer) int {
	t, err := src.Load()
	if err != nil {
		fmt.Fprintln(stderr, err)
		return exitRuntime
	}
	fmt.Fprintf(stdout, "table:  %s\n", describeTable(t))
	fmt.Fprintf(stdout, "call:   provider %q, model %q, at %s\n", provider, model, at.UTC().Format(time.RFC3339))
	l := t.Lookup(provider, model)
	if l.Match == pricing.MatchNone {
		fmt.Fprintln(stdout, "match:  none: the call is unpriced (counted in agentmeter_llm_unpriced_calls_total)")
		return exitRuntime
	}
	fmt.Fprintf(stdout, "match:  %s %q of provider %s\n", l.Match, l.Name, l.Provider)
	p, ok := l.At(at)
	if !ok {
		fmt.Fprintf(stdout, "price:  none in force at that time; the entry's prices start %s\n",
			l.Versions()[0].EffectiveFrom().UTC().Format(time.RFC3339))
		return exitRuntime
	}
	since := "always"
	if !p.EffectiveFrom().IsZero() {
		since = "since " + p.EffectiveFrom().UTC().Format(time.RFC3339)
	}
	fmt.Fprintf(stdout, "entry:  %s %s (%s), in force %s\n", p.Provider(), p.Model(), p.Origin(), since)
	if vs := l.Versions(); len(vs) > 1 {
		var dates []string
		for _, v := range vs {
			d := "always"
			if !v.EffectiveFrom().IsZero() {
				d = v.EffectiveFrom().UTC().Format(time.RFC3339)
			}
			dates = append(dates, d)
		}
		fmt.Fprintf(stdout, "        prices from: %s\n", strings.Join(dates, ", "))
	}
	fmt.Fprintln(stdout, "prices: USD per token (per million tokens in brackets)")
	tw := tabwriter.NewWriter(stdout, 2, 8, 2, ' ', 0)
	fmt.Fprintln(tw, "  prompt tokens\tinput\toutput\tcache read\tcache write 5m\tcache write 1h\treasoning")
	row := func(label string, r pricing.Rates) {
		fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\t%s\t%s\t%s\n", label, perToken(r.Input), perToken(r.Output),
			perToken(r.CacheRead), perToken(r.CacheWrite), perToken(r.CacheWrite1h), perToken(r.Reasoning))
	}
	tiers := p.Tiers()
	first := "any"
	if len(tiers) > 0 {
		first = "up to " + bound(tiers[0], false)
	}
	row(first, p.Rates(0))
	for _, tr := range tiers {
		row(bound(tr, true), tr.Rates)
	}
	if p.HasOffPeak() {
		state := "closed at that time: the rates above apply"
		if r := p.RatesAt(0, at); r != p.Rates(0) {
			row("off-peak, open now", r)
			state = "open at that time: the off-peak row applies"
		}
		_ = tw.Flush()
		fmt.Fprintf(stdout, "note:   off-peak windows (LiteLLM off_peak_pricing) %s\n", state)
	}
	_ = tw.Flush()
	if l.Match == pricing.MatchPattern && len(tiers) == 0 && !p.Covers(1<<62) {
		fmt.Fprintln(stdout, "note:   found by a pattern: the entry's long-context tiers are not lent, so a prompt at or past its first tier is unpriced")
	}
	return exitOK
}

// bound names a tier's lower bound: "above 200000", or for an inclusive
// tier "200000 and more"; with upper, below it: "199999" or "200000".
func bound(t pricing.Tier, lower bool) string {
	n := strconv.FormatInt(t.Threshold, 10)
	switch {
	case lower && t.Inclusive:
		return n + " and more"
	case lower:
		return "above " + n
	case t.Inclusive:
		return strconv.FormatInt(t.Threshold-1, 10)
	}
	return n
}

func perToken(perMillion float64) string {
	return strconv.FormatFloat(perMillion/1e6, 'g', 12, 64) + " (" + strconv.FormatFloat(perMillion, 'g', 12, 64) + ")"
}

func pricesCheck(src pricing.Source, stdout, stderr io.Writer) int {
	t, err := src.Load()
	if err != nil {
		fmt.Fprintln(stderr, err)
		fmt.Fprintf(stdout, "%s: refused: it would not load (a running collector keeps its previous table)\n", src.Table)
		return exitRuntime
	}
	rep := t.Report()
	fmt.Fprintf(stdout, "%s: ok: %s\n", src.Table, describeTable(t))
	fmt.Fprintf(stdout, "entries: %d read, %d priced, %d skipped\n", rep.Entries, rep.Priced, rep.SkippedTotal())
	if len(rep.Skipped) > 0 {
		fmt.Fprintln(stdout, "skipped, by reason:")
		for _, k := range slices.Sorted(maps.Keys(rep.Skipped)) {
			fmt.Fprintf(stdout, "  %6d  %s\n", rep.Skipped[k], k)
		}
	}
	if len(rep.Unusable) > 0 {
		fmt.Fprintln(stdout, "skipped, with a value that cannot be used (the model stays unpriced):")
		for _, u := range rep.Unusable {
			fmt.Fprintf(stdout, "  %s\n", u)
		}
	}
	if len(rep.Conflicts) > 0 {
		fmt.Fprintln(stdout, "names two entries price differently (left unpriced):")
		for _, c := range rep.Conflicts {
			fmt.Fprintf(stdout, "  %s\n", c)
		}
	}
	if len(rep.Unused) > 0 {
		fmt.Fprintln(stdout, "price fields not applied (a call's token counts cannot express them), by number of priced entries:")
		keys := slices.Sorted(maps.Keys(rep.Unused))
		slices.SortStableFunc(keys, func(a, b string) int { return rep.Unused[b] - rep.Unused[a] })
		for _, k := range keys {
			fmt.Fprintf(stdout, "  %6d  %s\n", rep.Unused[k], k)
		}
	}
	return exitOK
}
