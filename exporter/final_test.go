package exporter

import (
	"context"
	"errors"
	"log/slog"
	"sync/atomic"
	"testing"
	"time"

	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
)

// flakyExporter fails its first failures exports, then succeeds.
type flakyExporter struct {
	sdkmetric.Exporter
	failures int64
	calls    atomic.Int64
}

func (f *flakyExporter) Export(context.Context, *metricdata.ResourceMetrics) error {
	if f.calls.Add(1) <= f.failures {
		return errors.New("connection refused")
	}
	return nil
}

func TestFinalExportRetries(t *testing.T) {
	log := slog.New(slog.DiscardHandler)
	rm := &metricdata.ResourceMetrics{}

	// Not final: one attempt, its error returned.
	f := &flakyExporter{failures: 3}
	c := &countingExporter{Exporter: f, log: log}
	if err := c.Export(context.Background(), rm); err == nil || f.calls.Load() != 1 {
		t.Errorf("periodic export: err %v after %d calls, want an error after 1", err, f.calls.Load())
	}

	// Final: retried until it succeeds.
	f = &flakyExporter{failures: 3}
	c = &countingExporter{Exporter: f, log: log}
	c.final.Store(true)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := c.Export(ctx, rm); err != nil || f.calls.Load() != 4 {
		t.Errorf("final export: err %v after %d calls, want success after 4", err, f.calls.Load())
	}
	if s, fl := c.success.Load(), c.failure.Load(); s != 1 || fl != 3 {
		t.Errorf("counted %d successes, %d failures; want 1, 3", s, fl)
	}

	// Final, never succeeding: gives up when ctx ends, naming the attempts.
	f = &flakyExporter{failures: 1 << 30}
	c = &countingExporter{Exporter: f, log: log}
	c.final.Store(true)
	ctx, cancel = context.WithTimeout(context.Background(), 600*time.Millisecond)
	defer cancel()
	start := time.Now()
	err := c.Export(ctx, rm)
	if err == nil || f.calls.Load() < 2 {
		t.Errorf("final export to a dead endpoint: err %v after %d calls, want an error after >= 2", err, f.calls.Load())
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("final export gave up after %v, long after its context ended", took)
	}
}
