package pricing

import (
	"context"
	"fmt"

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
	success := metric.WithAttributeSet(attribute.NewSet(catalog.AttrOutcome.String(catalog.OutcomeSuccess)))
	failure := metric.WithAttributeSet(attribute.NewSet(catalog.AttrOutcome.String(catalog.OutcomeFailure)))
	_, err = m.RegisterCallback(func(_ context.Context, o metric.Observer) error {
		o.ObserveInt64(info, 1, metric.WithAttributes(catalog.AttrTableVersion.String(w.Current().Version())))
		ok, failed := w.Reloads()
		o.ObserveInt64(reloads, int64(ok), success)
		o.ObserveInt64(reloads, int64(failed), failure)
		return nil
	}, info, reloads)
	if err != nil {
		return fmt.Errorf("register pricing callback: %w", err)
	}
	return nil
}

// Price prices a call with the watcher's current table; it makes the
// Watcher a processor.Pricer.
func (w *Watcher) Price(provider, model string, u Usage) (costUSD, cacheSavingsUSD float64, ok bool) {
	p, ok := w.Current().Price(provider, model)
	if !ok {
		return 0, 0, false
	}
	costUSD, cacheSavingsUSD = p.Cost(u)
	return costUSD, cacheSavingsUSD, true
}
