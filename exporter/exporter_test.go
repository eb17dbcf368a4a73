package exporter

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/sdk/instrumentation"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	"go.opentelemetry.io/otel/sdk/resource"
	"go.uber.org/goleak"

	"github.com/agentmeter/agentmeter/catalog"
	"github.com/agentmeter/agentmeter/config"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// everyInstrument produces one data point for each catalogue instrument.
type everyInstrument struct{}

func (everyInstrument) Produce(context.Context) ([]metricdata.ScopeMetrics, error) {
	now := time.Now()
	attrs := attribute.NewSet(attribute.String("gen_ai.request.model", "m"))
	var ms []metricdata.Metrics
	for _, in := range catalog.All {
		var data metricdata.Aggregation
		switch in.Kind {
		case catalog.Counter:
			data = metricdata.Sum[int64]{Temporality: metricdata.CumulativeTemporality, IsMonotonic: true,
				DataPoints: []metricdata.DataPoint[int64]{{Attributes: attrs, StartTime: now, Time: now, Value: 1}}}
		case catalog.Gauge:
			data = metricdata.Gauge[int64]{DataPoints: []metricdata.DataPoint[int64]{{Attributes: attrs, Time: now, Value: 1}}}
		case catalog.Histogram:
			data = metricdata.Histogram[float64]{Temporality: metricdata.CumulativeTemporality,
				DataPoints: []metricdata.HistogramDataPoint[float64]{{Attributes: attrs, StartTime: now, Time: now,
					Count: 1, Sum: 1, Bounds: in.Buckets, BucketCounts: make([]uint64, len(in.Buckets)+1)}}}
		}
		ms = append(ms, metricdata.Metrics{Name: in.Name, Unit: in.Unit, Description: in.Description, Data: data})
	}
	return []metricdata.ScopeMetrics{{Scope: instrumentation.Scope{Name: catalog.ScopeName}, Metrics: ms}}, nil
}

func newExporter(t *testing.T, mutate func(*config.Config)) *Exporter {
	t.Helper()
	cfg := config.Default()
	cfg.HTTP.Endpoint = "127.0.0.1:0"
	if mutate != nil {
		mutate(&cfg)
	}
	e, err := New(context.Background(), cfg, Deps{Resource: resource.Empty(), Producers: []sdkmetric.Producer{everyInstrument{}}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = e.Shutdown(context.Background()) })
	return e
}

func get(t *testing.T, h http.Handler, path string) (int, string) {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
	return rec.Code, rec.Body.String()
}

// TestPrometheusNames pins the translation: every catalogue instrument is
// scraped under its Prom name, with its kind and its description as HELP.
func TestPrometheusNames(t *testing.T) {
	e := newExporter(t, nil)
	code, body := get(t, e.Handler(), "/metrics")
	if code != http.StatusOK {
		t.Fatalf("/metrics: %d", code)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	kinds := map[catalog.Kind]dto.MetricType{catalog.Counter: dto.MetricType_COUNTER, catalog.Gauge: dto.MetricType_GAUGE, catalog.Histogram: dto.MetricType_HISTOGRAM}
	for _, in := range catalog.All {
		f, ok := families[in.Prom]
		if !ok {
			t.Errorf("%s: no series %s", in.Name, in.Prom)
			continue
		}
		if f.GetType() != kinds[in.Kind] {
			t.Errorf("%s: type %v, want %v", in.Prom, f.GetType(), in.Kind)
		}
		if f.GetHelp() != in.Description {
			t.Errorf("%s: HELP %q, want %q", in.Prom, f.GetHelp(), in.Description)
		}
	}
	if _, ok := families["target_info"]; !ok {
		t.Error("no target_info")
	}
}

func TestProbes(t *testing.T) {
	e := newExporter(t, nil)
	h := e.Handler()
	if code, _ := get(t, h, "/healthz"); code != http.StatusOK {
		t.Errorf("/healthz = %d", code)
	}
	if code, _ := get(t, h, "/readyz"); code != http.StatusServiceUnavailable {
		t.Errorf("/readyz before ready = %d, want 503", code)
	}
	e.SetReady(true)
	if code, _ := get(t, h, "/readyz"); code != http.StatusOK {
		t.Errorf("/readyz when ready = %d", code)
	}
}

func TestPrometheusDisabled(t *testing.T) {
	e := newExporter(t, func(c *config.Config) { c.Exporters.Prometheus.Enabled = false })
	h := e.Handler()
	if code, _ := get(t, h, "/metrics"); code != http.StatusNotFound {
		t.Errorf("/metrics with prometheus disabled = %d, want 404", code)
	}
	if code, _ := get(t, h, "/healthz"); code != http.StatusOK {
		t.Errorf("/healthz = %d", code)
	}
}

func TestCustomPath(t *testing.T) {
	e := newExporter(t, func(c *config.Config) { c.Exporters.Prometheus.Path = "/custom" })
	if code, _ := get(t, e.Handler(), "/custom"); code != http.StatusOK {
		t.Errorf("/custom = %d", code)
	}
}

func TestStartShutdown(t *testing.T) {
	e := newExporter(t, nil)
	if err := e.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	resp, err := http.Get("http://" + e.Addr().String() + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	_ = resp.Body.Close()
	for range 2 {
		if err := e.Shutdown(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	// The port is in use: Start fails with the key's name.
	e2 := newExporter(t, nil)
	if err := e2.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	e3 := newExporter(t, func(c *config.Config) { c.HTTP.Endpoint = e2.Addr().String() })
	if err := e3.Start(context.Background()); err == nil || !strings.Contains(err.Error(), "http.endpoint") {
		t.Errorf("Start on a used port: %v, want an error naming http.endpoint", err)
	}
}

func TestShutdownWithoutStart(t *testing.T) {
	e := newExporter(t, nil)
	if err := e.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
}
