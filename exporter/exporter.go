// Package exporter owns the OpenTelemetry MeterProvider and everything that
// carries its data out of the process: the Prometheus pull endpoint and the
// OTLP push exporter, plus the HTTP server that also answers the kubelet's
// /healthz and /readyz probes.
package exporter

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/exporter-toolkit/web"
	"github.com/prometheus/otlptranslator"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlpmetric/otlpmetricgrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlpmetric/otlpmetrichttp"
	otelprom "go.opentelemetry.io/otel/exporters/prometheus"
	"go.opentelemetry.io/otel/metric"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/exemplar"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	"go.opentelemetry.io/otel/sdk/resource"

	"github.com/agentmeter/agentmeter/catalog"
	"github.com/agentmeter/agentmeter/config"
)

// TranslationStrategy is pinned so that the Prometheus names of the
// catalogue hold whatever the exporter's default becomes, and stay valid
// for Prometheus 2.x (underscores, unit and _total suffixes).
var TranslationStrategy = otlptranslator.UnderscoreEscapingWithSuffixes

// Deps are what the exporter needs from the process.
type Deps struct {
	Logger *slog.Logger
	// Resource describes this process; see NewResource.
	Resource *resource.Resource
	// Producers supply data owned outside the SDK's instruments (the
	// processor's series); every reader collects them.
	Producers []sdkmetric.Producer
	// Routes are more handlers on the HTTP server (the OpenHands webhook).
	Routes []Route
}

// Route is one more handler on the HTTP server, behind the same web config
// (TLS, basic auth) as /metrics.
type Route struct {
	// Pattern is a net/http ServeMux pattern, such as
	// "POST /openhands/conversations".
	Pattern string
	Handler http.Handler
}

// Exporter builds the MeterProvider and serves /metrics, /healthz and /readyz.
type Exporter struct {
	cfg      config.Config
	log      *slog.Logger
	provider *sdkmetric.MeterProvider
	registry *prometheus.Registry
	otlp     *countingExporter // nil when OTLP is disabled
	routes   []Route

	ready atomic.Bool

	// mu guards the lifecycle fields below.
	mu       sync.Mutex
	started  bool
	stopped  bool
	server   *http.Server
	listener net.Listener
	served   chan struct{} // closed when Serve returns
	serveErr error         // what Serve returned, unless Shutdown stopped it
}

// New builds the MeterProvider with the readers cfg enables. Nothing listens
// until Start. A web config file that does not load is an error here, not at
// the first request.
func New(ctx context.Context, cfg config.Config, deps Deps) (*Exporter, error) {
	if err := ValidateWebConfig(cfg.HTTP.WebConfigFile); err != nil {
		return nil, err
	}
	e := &Exporter{cfg: cfg, log: deps.Logger, served: make(chan struct{}), routes: deps.Routes}
	if e.log == nil {
		e.log = slog.New(slog.DiscardHandler)
	}
	opts := []sdkmetric.Option{
		sdkmetric.WithResource(deps.Resource),
		// Exemplars need a sampled span in the context; events carry none.
		sdkmetric.WithExemplarFilter(exemplar.AlwaysOffFilter),
	}
	if cfg.Exporters.Prometheus.Enabled {
		e.registry = prometheus.NewRegistry()
		e.registry.MustRegister(
			collectors.NewGoCollector(),
			collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		)
		promOpts := []otelprom.Option{
			otelprom.WithRegisterer(e.registry),
			otelprom.WithTranslationStrategy(TranslationStrategy),
		}
		for _, p := range deps.Producers {
			promOpts = append(promOpts, otelprom.WithProducer(p))
		}
		reader, err := otelprom.New(promOpts...)
		if err != nil {
			return nil, fmt.Errorf("create prometheus exporter: %w", err)
		}
		opts = append(opts, sdkmetric.WithReader(reader))
	}
	if cfg.Exporters.OTLP.Enabled {
		exp, err := newOTLPExporter(ctx, cfg.Exporters.OTLP)
		if err != nil {
			return nil, fmt.Errorf("create otlp exporter: %w", err)
		}
		e.otlp = &countingExporter{Exporter: exp, log: e.log}
		readerOpts := []sdkmetric.PeriodicReaderOption{
			sdkmetric.WithInterval(cfg.Exporters.OTLP.Interval),
			sdkmetric.WithTimeout(cfg.Exporters.OTLP.Timeout),
		}
		for _, p := range deps.Producers {
			readerOpts = append(readerOpts, sdkmetric.WithProducer(p))
		}
		opts = append(opts, sdkmetric.WithReader(sdkmetric.NewPeriodicReader(e.otlp, readerOpts...)))
	}
	e.provider = sdkmetric.NewMeterProvider(opts...)
	if e.otlp != nil {
		if err := e.otlp.register(e.provider.Meter(catalog.ScopeName)); err != nil {
			_ = e.provider.Shutdown(ctx) // release the OTLP exporter's connection
			return nil, err
		}
	}
	return e, nil
}

// NewResource describes this process: service.name defaults to "agentmeter",
// and OTEL_SERVICE_NAME / OTEL_RESOURCE_ATTRIBUTES override and extend it.
func NewResource(ctx context.Context, version string) (*resource.Resource, error) {
	res, err := resource.New(ctx,
		resource.WithTelemetrySDK(),
		resource.WithAttributes(
			attribute.String("service.name", "agentmeter"),
			attribute.String("service.version", version),
		),
		resource.WithFromEnv(), // last, so that the environment wins
	)
	if err != nil {
		return nil, fmt.Errorf("build resource: %w", err)
	}
	return res, nil
}

func newOTLPExporter(ctx context.Context, cfg config.OTLP) (sdkmetric.Exporter, error) {
	switch cfg.Protocol {
	case "http/protobuf":
		opts := []otlpmetrichttp.Option{
			otlpmetrichttp.WithEndpointURL(cfg.Endpoint),
			otlpmetrichttp.WithTimeout(cfg.Timeout),
			otlpmetrichttp.WithTemporalitySelector(sdkmetric.DefaultTemporalitySelector),
			otlpmetrichttp.WithRetry(otlpmetrichttp.RetryConfig(exportRetry(cfg))),
		}
		if len(cfg.Headers) > 0 {
			opts = append(opts, otlpmetrichttp.WithHeaders(cfg.Headers))
		}
		// The URL's scheme decides TLS (WithEndpointURL): Insecure is for
		// grpc only, so that an https:// endpoint is never sent plaintext.
		return otlpmetrichttp.New(ctx, opts...)
	default:
		opts := []otlpmetricgrpc.Option{
			otlpmetricgrpc.WithEndpoint(cfg.Endpoint),
			otlpmetricgrpc.WithTimeout(cfg.Timeout),
			otlpmetricgrpc.WithTemporalitySelector(sdkmetric.DefaultTemporalitySelector),
			// A collector that was down comes back within a second or two;
			// reconnect quickly rather than after gRPC's default backoff.
			otlpmetricgrpc.WithReconnectionPeriod(time.Second),
			otlpmetricgrpc.WithRetry(exportRetry(cfg)),
		}
		if len(cfg.Headers) > 0 {
			opts = append(opts, otlpmetricgrpc.WithHeaders(cfg.Headers))
		}
		if cfg.Insecure {
			opts = append(opts, otlpmetricgrpc.WithInsecure())
		}
		return otlpmetricgrpc.New(ctx, opts...)
	}
}

// ValidateWebConfig loads the web config file at path (http.web_config_file;
// "" = none) as the HTTP server will: its YAML, its users' bcrypt hashes,
// its certificate pair and client CA.
func ValidateWebConfig(path string) error {
	if err := web.Validate(path); err != nil {
		return fmt.Errorf("http.web_config_file %q: %w", path, err)
	}
	return nil
}

// exportRetry is how one export retries a retryable failure (endpoint
// unavailable, throttled) within exporters.otlp.timeout: soon and often, so
// that an endpoint back after a blip gets the export, not the next interval.
// The exporters' default waits 5s first, half the default timeout.
// otlpmetrichttp.RetryConfig has the same fields.
func exportRetry(cfg config.OTLP) otlpmetricgrpc.RetryConfig {
	return otlpmetricgrpc.RetryConfig{Enabled: true, InitialInterval: 250 * time.Millisecond, MaxInterval: 2 * time.Second, MaxElapsedTime: cfg.Timeout}
}

// MeterProvider is where the processor and receiver create their instruments.
func (e *Exporter) MeterProvider() metric.MeterProvider { return e.provider }

// SetReady sets what /readyz answers.
func (e *Exporter) SetReady(ready bool) { e.ready.Store(ready) }

// Handler serves /metrics (when the Prometheus exporter is enabled),
// /healthz and /readyz.
func (e *Exporter) Handler() http.Handler {
	mux := http.NewServeMux()
	if e.registry != nil {
		mux.Handle("GET "+e.cfg.Exporters.Prometheus.Path, newScrapeHandler(e.registry, e.log, 10*time.Second))
	}
	for _, r := range e.routes {
		mux.Handle(r.Pattern, r.Handler)
	}
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		_, _ = w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		if !e.ready.Load() {
			http.Error(w, "not ready", http.StatusServiceUnavailable)
			return
		}
		_, _ = w.Write([]byte("ready\n"))
	})
	return mux
}

// Start listens on http.endpoint and serves Handler in the background,
// behind the TLS and basic auth of http.web_config_file when one is set.
// exporter-toolkit reads that file again for every TLS handshake and every
// request, so a renewed certificate or a changed password applies at once;
// basic auth covers every path, /healthz and /readyz included.
// A Serve that ends by itself is reported by Wait.
func (e *Exporter) Start(_ context.Context) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.started || e.stopped {
		return errors.New("exporter: Start after Start or Shutdown")
	}
	ln, err := net.Listen("tcp", e.cfg.HTTP.Endpoint)
	if err != nil {
		return fmt.Errorf("listen on http.endpoint %q: %w", e.cfg.HTTP.Endpoint, err)
	}
	e.started = true
	e.listener = ln
	server := &http.Server{
		Handler:           e.Handler(),
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       10 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       60 * time.Second,
		ErrorLog:          slog.NewLogLogger(e.log.Handler(), slog.LevelWarn),
	}
	e.server = server
	webConfig := e.cfg.HTTP.WebConfigFile
	go func() {
		err := web.Serve(ln, server, &web.FlagConfig{WebConfigFile: &webConfig}, e.log.With("component", "http"))
		e.mu.Lock()
		if !e.stopped {
			e.serveErr = fmt.Errorf("serve http on %s: %w", ln.Addr(), err)
		}
		e.mu.Unlock()
		close(e.served)
	}()
	e.log.Info("http server listening", "endpoint", ln.Addr().String(),
		"metrics", e.registry != nil, "otlp", e.otlp != nil, "web_config_file", webConfig)
	return nil
}

// Wait blocks until the HTTP server stops serving and returns why: nil when
// Shutdown stopped it (or it never started), the error otherwise (a
// listener that died).
func (e *Exporter) Wait() error {
	e.mu.Lock()
	started := e.started
	e.mu.Unlock()
	if !started {
		return nil
	}
	<-e.served
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.serveErr
}

// Addr is the address the HTTP server listens on, once started.
func (e *Exporter) Addr() net.Addr {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.listener == nil {
		return nil
	}
	return e.listener.Addr()
}

// httpDrain bounds how long Shutdown waits for HTTP requests in flight
// (a scrape being read slowly, a client that sent nothing) before it closes
// their connections.
const httpDrain = time.Second

// Shutdown flushes a final OTLP export, then stops the HTTP server. It is
// safe without Start and idempotent. A final export that fails (the
// endpoint down or hung) is logged and counted, not returned: the collector
// still stops cleanly, and its exit code says the collector failed only
// when it did.
func (e *Exporter) Shutdown(ctx context.Context) error {
	e.mu.Lock()
	if e.stopped {
		e.mu.Unlock()
		return nil
	}
	e.stopped = true
	server := e.server
	e.mu.Unlock()
	e.ready.Store(false)
	// MeterProvider.Shutdown runs a last collection and export on every
	// periodic reader: the final OTLP push. It is retried until it succeeds
	// or the grace period ends, less a moment kept for the HTTP drain.
	finalCtx, cancel := ctx, context.CancelFunc(func() {})
	if dl, ok := ctx.Deadline(); ok {
		finalCtx, cancel = context.WithDeadline(ctx, dl.Add(-min(httpDrain, time.Until(dl)/4)))
	}
	if e.otlp != nil {
		e.otlp.final.Store(true)
	}
	err := e.provider.Shutdown(finalCtx)
	cancel()
	if err != nil {
		e.log.Warn("final otlp export failed; the totals since the last successful export are not in the central collector", "err", err)
	}
	if server != nil {
		drainCtx, cancel := context.WithTimeout(ctx, httpDrain)
		defer cancel()
		if err := server.Shutdown(drainCtx); err != nil {
			e.log.Warn("http requests still in flight at shutdown; closing their connections", "err", err)
			_ = server.Close()
		}
		<-e.served
	}
	return nil
}

// countingExporter counts OTLP export outcomes for the self-metrics and logs
// failures; everything else is the wrapped exporter's.
type countingExporter struct {
	sdkmetric.Exporter
	log     *slog.Logger
	success atomic.Int64
	failure atomic.Int64
	failing atomic.Bool
	// final is set when shutdown begins: an export from then on is the
	// final one.
	final atomic.Bool
}

// Bounds of the wait between two attempts of the final export.
const (
	finalRetryMin = 250 * time.Millisecond
	finalRetryMax = 2 * time.Second
)

func (c *countingExporter) Export(ctx context.Context, rm *metricdata.ResourceMetrics) error {
	if c.final.Load() {
		return c.exportFinal(ctx, rm)
	}
	return c.export(ctx, rm)
}

// exportFinal retries the final export, whatever the error, until it
// succeeds or ctx (the rest of the grace period) ends: an endpoint down at
// SIGTERM that comes back within the grace period still gets every total.
// Each attempt is bounded by exporters.otlp.timeout and retries within it.
func (c *countingExporter) exportFinal(ctx context.Context, rm *metricdata.ResourceMetrics) error {
	wait := finalRetryMin
	for attempt := 1; ; attempt++ {
		err := c.export(ctx, rm)
		if err == nil {
			if attempt > 1 {
				c.log.Info("final otlp export succeeded", "attempts", attempt)
			}
			return nil
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("final export, %d attempts until the grace period ended: %w", attempt, err)
		case <-t.C:
		}
		wait = min(2*wait, finalRetryMax)
	}
}

func (c *countingExporter) export(ctx context.Context, rm *metricdata.ResourceMetrics) error {
	err := c.Exporter.Export(ctx, rm)
	if err != nil {
		c.failure.Add(1)
		if !c.failing.Swap(true) {
			c.log.Warn("otlp export failed; cumulative totals go with the next export", "err", err)
		}
		return err
	}
	c.success.Add(1)
	if c.failing.Swap(false) {
		c.log.Info("otlp export recovered")
	}
	return nil
}

func (c *countingExporter) register(m metric.Meter) error {
	ctr, err := catalog.OTLPExports.Int64ObservableCounter(m)
	if err != nil {
		return err
	}
	ok := metric.WithAttributeSet(attribute.NewSet(catalog.AttrOutcome.String(catalog.OutcomeSuccess)))
	fail := metric.WithAttributeSet(attribute.NewSet(catalog.AttrOutcome.String(catalog.OutcomeFailure)))
	_, err = m.RegisterCallback(func(_ context.Context, o metric.Observer) error {
		o.ObserveInt64(ctr, c.success.Load(), ok)
		o.ObserveInt64(ctr, c.failure.Load(), fail)
		return nil
	}, ctr)
	if err != nil {
		return fmt.Errorf("register %s callback: %w", catalog.OTLPExports.Name, err)
	}
	return nil
}

// Counts returns the OTLP export outcomes so far (0, 0 when disabled).
func (e *Exporter) Counts() (success, failure int64) {
	if e.otlp == nil {
		return 0, 0
	}
	return e.otlp.success.Load(), e.otlp.failure.Load()
}
