// Command collector is the agentmeter sidecar: it takes agent events over
// gRPC, aggregates them into OpenTelemetry metrics, and exports them to
// Prometheus and OTLP.
//
//	collector [--config FILE]           run (default ./config.yaml)
//	collector validate [--config FILE]  check a config, list every problem
//	collector version                   print the version
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime/debug"
	"syscall"
	"time"

	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"google.golang.org/grpc"

	"github.com/agentmeter/agentmeter/catalog"
	"github.com/agentmeter/agentmeter/config"
	"github.com/agentmeter/agentmeter/exporter"
	"github.com/agentmeter/agentmeter/pricing"
	"github.com/agentmeter/agentmeter/processor"
	pb "github.com/agentmeter/agentmeter/proto/agentmeter/v1"
	"github.com/agentmeter/agentmeter/receiver"
	"github.com/agentmeter/agentmeter/usage"
)

func main() { os.Exit(run(os.Args[1:], os.Stdout, os.Stderr)) }

// Exit codes.
const (
	exitOK      = 0
	exitRuntime = 1 // the collector failed while running
	exitUsage   = 2 // bad flags or an invalid config
)

func version() string {
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" {
		return bi.Main.Version
	}
	return "(devel)"
}

func run(args []string, stdout, stderr io.Writer) int {
	cmd := "run"
	if len(args) > 0 && (args[0] == "validate" || args[0] == "version" || args[0] == "run") {
		cmd, args = args[0], args[1:]
	}
	fs := flag.NewFlagSet("collector "+cmd, flag.ContinueOnError)
	fs.SetOutput(stderr)
	configPath := fs.String("config", "config.yaml", "path of the YAML configuration file")
	fs.Usage = func() {
		fmt.Fprintf(stderr, "usage: collector [run|validate|version] [--config FILE]\n\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return exitOK
		}
		return exitUsage
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "collector: unexpected argument %q\n", fs.Arg(0))
		fs.Usage()
		return exitUsage
	}
	switch cmd {
	case "version":
		fmt.Fprintf(stdout, "agentmeter collector %s (semconv %s)\n", version(), catalog.SemconvVersion)
		return exitOK
	case "validate":
		cfg, err := config.Load(*configPath)
		if err == nil {
			err = checkFiles(cfg)
		}
		if err != nil {
			fmt.Fprintln(stderr, err)
			return exitUsage
		}
		fmt.Fprintf(stdout, "%s: ok\n", *configPath)
		return exitOK
	}

	cfg, err := config.Load(*configPath)
	if err == nil {
		err = checkFiles(cfg)
	}
	if err != nil {
		fmt.Fprintln(stderr, err)
		return exitUsage
	}
	logger := newLogger(cfg.Log, stderr)
	setMemoryLimit(cfg.Memory, os.LookupEnv, logger)
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if err := serve(ctx, cfg, logger); err != nil {
		logger.Error("collector failed", "err", err)
		return exitRuntime
	}
	return exitOK
}

// checkFiles loads the files the configuration names, as the collector does
// at start, so that `collector validate` reports a bad one and the collector
// refuses it before it listens.
func checkFiles(cfg config.Config) error {
	return errors.Join(
		exporter.ValidateWebConfig(cfg.HTTP.WebConfigFile),
	)
}

func newLogger(cfg config.Log, w io.Writer) *slog.Logger {
	opts := &slog.HandlerOptions{Level: config.Config{Log: cfg}.SlogLevel()}
	if cfg.Format == "text" {
		return slog.New(slog.NewTextHandler(w, opts))
	}
	return slog.New(slog.NewJSONHandler(w, opts))
}

// setMemoryLimit gives the Go runtime memory.limit_mib as its soft memory
// limit, unless GOMEMLIMIT is set in the environment: the runtime has read
// that one at start, and an operator who set it explicitly wins. The
// collector's own bounds are sized from memory.limit_mib either way.
func setMemoryLimit(cfg config.Memory, lookupEnv func(string) (string, bool), log *slog.Logger) {
	if v, ok := lookupEnv("GOMEMLIMIT"); ok && v != "" {
		log.Info("memory limit", "limit_mib", cfg.LimitMiB, "runtime_limit_bytes", debug.SetMemoryLimit(-1),
			"runtime_limit_from", "GOMEMLIMIT")
		return
	}
	debug.SetMemoryLimit(cfg.LimitBytes())
	log.Info("memory limit", "limit_mib", cfg.LimitMiB, "runtime_limit_bytes", cfg.LimitBytes(),
		"runtime_limit_from", "memory.limit_mib")
}

// component is the lifecycle every part of the pipeline follows.
type component interface {
	Start(context.Context) error
	Shutdown(context.Context) error
}

// serve builds the pipeline, starts it downstream first, waits for ctx to
// end, and shuts it down upstream first within the grace period.
func serve(ctx context.Context, cfg config.Config, log *slog.Logger) error {
	res, err := exporter.NewResource(ctx, version())
	if err != nil {
		return err
	}
	prices, err := pricing.NewWatcher(cfg.Pricing.Table, log)
	if err != nil {
		return fmt.Errorf("load pricing.table: %w", err)
	}
	proc, err := processor.New(processor.Config{
		DedupeWindow:        cfg.Receiver.DedupeWindow,
		DedupeMaxIDs:        cfg.Receiver.DedupeMaxIDs,
		IdleExpiry:          cfg.Conversations.IdleExpiry,
		MaxTracked:          cfg.Conversations.MaxTracked,
		ClosedRetention:     cfg.Conversations.ClosedRetention,
		DefaultMaxBudgetUSD: cfg.Conversations.DefaultMaxBudgetUSD,
	}, processor.Deps{Logger: log, Pricer: prices})
	if err != nil {
		return err
	}
	exp, err := exporter.New(ctx, cfg, exporter.Deps{Logger: log, Resource: res, Producers: []sdkmetric.Producer{proc}})
	if err != nil {
		return err
	}
	meter := exp.MeterProvider().Meter(catalog.ScopeName)
	if err := prices.RegisterMetrics(meter); err != nil {
		return err
	}
	recv, err := receiver.New(receiver.Config{
		Endpoint:             cfg.Receiver.GRPC.Endpoint,
		MaxRecvMsgSize:       cfg.Receiver.GRPC.MaxRecvMsgSizeMiB << 20,
		MaxConcurrentStreams: cfg.Receiver.GRPC.MaxConcurrentStreams,
		MaxEventsPerRequest:  cfg.Receiver.MaxEventsPerRequest,
		Limits:               receiver.Limits{MaxFutureSkew: cfg.Receiver.MaxFutureSkew},
	}, receiver.Deps{Logger: log, Meter: meter, Consumer: proc,
		Register: func(s *grpc.Server, draining <-chan struct{}) {
			pb.RegisterUsageServiceServer(s, usage.New(proc, usage.DefaultWatchInterval, draining))
		},
	})
	if err != nil {
		return err
	}

	// Downstream first: exporters, then the processor, then the receiver.
	order := []struct {
		name string
		c    component
	}{{"exporter", exp}, {"pricing", prices}, {"processor", proc}, {"receiver", recv}}
	started := 0
	var startErr error
	for _, step := range order {
		t := time.Now()
		if startErr = step.c.Start(ctx); startErr != nil {
			startErr = fmt.Errorf("start %s: %w", step.name, startErr)
			break
		}
		started++
		log.Info("started", "component", step.name, "took", time.Since(t).String())
	}
	if startErr == nil {
		recv.SetServing(true)
		exp.SetReady(true)
		log.Info("agentmeter collector ready", "version", version(),
			"grpc", cfg.Receiver.GRPC.Endpoint, "http", cfg.HTTP.Endpoint)
		waitForStop(ctx, prices, log)
		log.Info("shutting down", "grace_period", cfg.Shutdown.GracePeriod.String())
	}

	// The signal context is done: shutdown gets a fresh deadline. Readiness
	// goes first, so that the kubelet and agents stop sending at once.
	exp.SetReady(false)
	recv.SetServing(false)
	shutdownCtx, cancel := context.WithTimeout(context.Background(), cfg.Shutdown.GracePeriod)
	defer cancel()
	var errs []error
	if startErr != nil {
		errs = append(errs, startErr)
	}
	// Upstream first; the receiver gets at most half the grace period so
	// that the final export always has time.
	for i := started - 1; i >= 0; i-- {
		step := order[i]
		stepCtx, stepCancel := shutdownCtx, context.CancelFunc(func() {})
		if step.name == "receiver" {
			stepCtx, stepCancel = context.WithTimeout(shutdownCtx, cfg.Shutdown.GracePeriod/2)
		}
		t := time.Now()
		if err := step.c.Shutdown(stepCtx); err != nil {
			errs = append(errs, fmt.Errorf("shut down %s: %w", step.name, err))
		}
		stepCancel()
		log.Info("stopped", "component", step.name, "took", time.Since(t).String())
	}
	if started < len(order) {
		// Components that never started still own resources (the meter
		// provider); Shutdown is safe without Start.
		for _, step := range order[started:] {
			_ = step.c.Shutdown(shutdownCtx)
		}
	}
	if len(errs) == 0 {
		s, f := exp.Counts()
		log.Info("agentmeter collector stopped", "otlp_exports_ok", s, "otlp_exports_failed", f)
	}
	return errors.Join(errs...)
}

// waitForStop returns when ctx ends (SIGTERM, SIGINT), reloading the price
// table on every SIGHUP meanwhile.
func waitForStop(ctx context.Context, prices *pricing.Watcher, log *slog.Logger) {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	for {
		select {
		case <-ctx.Done():
			return
		case <-hup:
			// Reload logs and counts a failure itself.
			if err := prices.Reload(); err == nil {
				log.Info("price table reloaded on SIGHUP", "version", prices.Current().Version())
			}
		}
	}
}
