package pricing

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"

	"github.com/agentmeter/agentmeter/catalog"
)

// RegisterMetrics reports the table in use (agentmeter_pricing_table_info,
// labelled with its version) and the reload outcomes on m.
func (w *Watcher) RegisterMetrics(m metric.Meter) error {
	info, err := catalog.PricingInfo.Int64ObservableGauge(m)
	if err != nil {
		return err
	}
	reloads, err := catalog.PricingReloads.Int64ObservableCounter(m)
	if err != nil {
		return err
	}
	entries, err := catalog.PricingEntries.Int64ObservableGauge(m)
	if err != nil {
		return err
	}
	entryState := func(s string) metric.ObserveOption {
		return metric.WithAttributeSet(attribute.NewSet(catalog.AttrEntryState.String(s)))
	}
	priced, skipped, unusable, conflicting := entryState("priced"), entryState("skipped"), entryState("unusable"), entryState("conflicting")
	success := metric.WithAttributeSet(attribute.NewSet(catalog.AttrOutcome.String(catalog.OutcomeSuccess)))
	failure := metric.WithAttributeSet(attribute.NewSet(catalog.AttrOutcome.String(catalog.OutcomeFailure)))
	_, err = m.RegisterCallback(func(_ context.Context, o metric.Observer) error {
		t := w.Current()
		asOf := ""
		if !t.AsOf().IsZero() {
			asOf = t.AsOf().Format(time.DateOnly)
		}
		o.ObserveInt64(info, 1, metric.WithAttributes(
			catalog.AttrTableVersion.String(t.Version()), catalog.AttrTableFormat.String(t.Format()),
			catalog.AttrTableSource.String(t.Source()), catalog.AttrTableAsOf.String(asOf)))
		rep := t.Report()
		o.ObserveInt64(entries, int64(t.Models()), priced)
		o.ObserveInt64(entries, int64(rep.SkippedTotal()-len(rep.Unusable)), skipped)
		o.ObserveInt64(entries, int64(len(rep.Unusable)), unusable)
		o.ObserveInt64(entries, int64(len(rep.Conflicts)), conflicting)
		ok, failed := w.Reloads()
		o.ObserveInt64(reloads, int64(ok), success)
		o.ObserveInt64(reloads, int64(failed), failure)
		return nil
	}, info, reloads, entries)
	if err != nil {
		return fmt.Errorf("register pricing callback: %w", err)
	}
	return nil
}

// maxFirstUseLogs bounds the "price found" log lines per table, so that a
// client sending many model names cannot flood the log.
const maxFirstUseLogs = 1000

// Price prices a call with the watcher's current table at the price in
// force at time at (the event's time); it makes the Watcher a
// processor.Pricer. A call is unpriced (ok false) when the table has no
// price for the model at that time, or when the model was found by a
// pattern and its prompt reaches a long-context tier of the pattern's
// entry (see ModelPrice.Covers).
//
// The first lookup of a (provider, model) pair in a table logs how its
// price was found: at info for an alias or a pattern, at debug otherwise.
func (w *Watcher) Price(provider, model string, at time.Time, u Usage) (costUSD, cacheSavingsUSD float64, ok bool) {
	t := w.Current()
	l, first := t.lookup(provider, model)
	if first {
		w.logFirstUse(t, provider, model, l)
	}
	p, ok := l.At(at)
	if !ok || !p.Covers(u.Prompt) {
		return 0, 0, false
	}
	costUSD, cacheSavingsUSD = p.CostAt(u, at)
	return costUSD, cacheSavingsUSD, true
}

func (w *Watcher) logFirstUse(t *Table, provider, model string, l *Lookup) {
	if t.firstUseLogs.Add(1) > maxFirstUseLogs {
		return
	}
	level := slog.LevelDebug
	if l != nil && (l.Match == MatchAlias || l.Match == MatchPattern) {
		level = slog.LevelInfo
	}
	if !w.logger.Enabled(context.Background(), level) {
		return
	}
	if l == nil {
		w.logger.Log(context.Background(), level, "no price for model", "provider", provider, "model", model,
			"table_version", t.Version())
		return
	}
	entry, origin := l.Name, ""
	if len(l.versions) > 0 {
		entry, origin = l.versions[len(l.versions)-1].Model(), l.versions[len(l.versions)-1].Origin()
	}
	w.logger.Log(context.Background(), level, "price found", "provider", provider, "model", model,
		"match", l.Match.String(), "matched", l.Name, "entry_provider", l.Provider, "entry", entry, "origin", origin,
		"table_version", t.Version())
}
