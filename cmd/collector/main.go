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
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strconv"
	"syscall"
	"time"

	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc/tap"

	"github.com/agentmeter/agentmeter/auth"
	"github.com/agentmeter/agentmeter/catalog"
	"github.com/agentmeter/agentmeter/config"
	"github.com/agentmeter/agentmeter/exporter"
	"github.com/agentmeter/agentmeter/grpcserver"
	"github.com/agentmeter/agentmeter/openhands"
	"github.com/agentmeter/agentmeter/pricing"
	"github.com/agentmeter/agentmeter/processor"
	pb "github.com/agentmeter/agentmeter/proto/agentmeter/v1"
	"github.com/agentmeter/agentmeter/receiver"
	"github.com/agentmeter/agentmeter/storage"
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
	if len(args) > 0 && args[0] == "prices" {
		return runPrices(args[1:], stdout, stderr)
	}
	cmd := "run"
	if len(args) > 0 && (args[0] == "validate" || args[0] == "version" || args[0] == "run") {
		cmd, args = args[0], args[1:]
	}
	fs := flag.NewFlagSet("collector "+cmd, flag.ContinueOnError)
	fs.SetOutput(stderr)
	configPath := fs.String("config", "config.yaml", "path of the YAML configuration file")
	fs.Usage = func() {
		fmt.Fprintf(stderr, "usage: collector [run|validate|version] [--config FILE]\n       collector prices lookup|check ...\n\n")
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
		fmt.Fprintf(stdout, "agentmeter collector %s (semconv %s)\n%s\n", version(), catalog.SemconvVersion, snapshotLine())
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
	setProcs(cfg.Storage, os.LookupEnv, logger)
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if err := serve(ctx, cfg, logger, auth.Listen); err != nil {
		logger.Error("collector failed", "err", err)
		return exitRuntime
	}
	return exitOK
}

// checkFiles loads the files the configuration names, as the collector does
// at start, so that `collector validate` reports a bad one and the collector
// refuses it before it listens.
func checkFiles(cfg config.Config) error {
	_, authErr := auth.New(authConfig(cfg), auth.Deps{})
	return errors.Join(
		authErr,
		exporter.ValidateWebConfig(cfg.HTTP.WebConfigFile),
		checkPrices(cfg),
	)
}

// authConfig is who may write to the gRPC server, from cfg.
func authConfig(cfg config.Config) auth.Config {
	t := cfg.Receiver.GRPC.TLS
	return auth.Config{TokenFile: cfg.Receiver.Auth.TokenFile, CertFile: t.CertFile, KeyFile: t.KeyFile, ClientCAFile: t.ClientCAFile}
}

func newLogger(cfg config.Log, w io.Writer) *slog.Logger {
	opts := &slog.HandlerOptions{Level: config.Config{Log: cfg}.SlogLevel()}
	if cfg.Format == "text" {
		return slog.New(slog.NewTextHandler(w, opts))
	}
	return slog.New(slog.NewJSONHandler(w, opts))
}

// setMemoryLimit gives the Go runtime memory.limit_mib (less what the
// runtime does not count, see RuntimeLimitBytes) as its soft memory limit,
// unless GOMEMLIMIT is set in the environment: the runtime has read
// that one at start, and an operator who set it explicitly wins. The
// collector's own bounds are sized from memory.limit_mib either way.
func setMemoryLimit(cfg config.Memory, lookupEnv func(string) (string, bool), log *slog.Logger) {
	if v, ok := lookupEnv("GOMEMLIMIT"); ok && v != "" {
		log.Info("memory limit", "limit_mib", cfg.LimitMiB, "runtime_limit_bytes", debug.SetMemoryLimit(-1),
			"runtime_limit_from", "GOMEMLIMIT")
		return
	}
	debug.SetMemoryLimit(cfg.RuntimeLimitBytes())
	log.Info("memory limit", "limit_mib", cfg.LimitMiB, "runtime_limit_bytes", cfg.RuntimeLimitBytes(),
		"runtime_limit_from", "memory.limit_mib")
}

// setProcs gives the Go runtime one P more than its default (the CPUs, or
// the container's CPU limit) when batches are fsynced, unless GOMAXPROCS is
// set in the environment. Pebble's WAL sync blocks its thread in the
// kernel for about half a millisecond per group commit, and the runtime
// hands that thread's P to other goroutines only once its monitor notices
// (20 µs to 10 ms later): with as many Ps as CPUs, a CPU's worth of
// goroutines waits on a thread that sleeps. The extra P runs them
// meanwhile; the syncing thread uses no CPU. scripts/loadbench.sh measures
// it (README, "Throughput").
func setProcs(cfg config.Storage, lookupEnv func(string) (string, bool), log *slog.Logger) {
	if v, ok := lookupEnv("GOMAXPROCS"); ok && v != "" {
		// The runtime takes a positive integer and ignores anything else.
		if n, err := strconv.Atoi(v); err == nil && n > 0 {
			log.Info("processors", "gomaxprocs", runtime.GOMAXPROCS(0), "gomaxprocs_from", "GOMAXPROCS")
			return
		}
		log.Warn("GOMAXPROCS is not a positive integer: the Go runtime ignored it", "GOMAXPROCS", v)
	}
	if cfg.Directory == "" || !cfg.Sync {
		log.Info("processors", "gomaxprocs", runtime.GOMAXPROCS(0), "gomaxprocs_from", "runtime default")
		return
	}
	n := runtime.GOMAXPROCS(0) + 1
	runtime.GOMAXPROCS(n)
	log.Info("processors", "gomaxprocs", n, "gomaxprocs_from", "runtime default + 1 for the storage's fsync")
}

// component is the lifecycle every part of the pipeline follows: Start
// does not block (what runs in the background is the component's own
// goroutine); Shutdown is safe without Start, idempotent, and returns what
// went wrong.
type component interface {
	Start(context.Context) error
	Shutdown(context.Context) error
}

// server is a component that serves a listener: Wait returns when it stops
// serving, nil after Shutdown, the error otherwise (a listener that died).
type server interface {
	component
	Wait() error
}

// step is one component of the pipeline, in start order.
type step struct {
	name string
	c    component
}

// listenFunc opens a listener; net.Listen in production.
type listenFunc func(network, address string) (net.Listener, error)

// serve builds the pipeline, starts it downstream first, runs until ctx
// ends or a server stops by itself, and shuts it down upstream first within
// the grace period. A server that died makes serve return its error, after
// the same clean shutdown. What was built is released whatever fails.
func serve(ctx context.Context, cfg config.Config, log *slog.Logger, listen listenFunc) (err error) {
	// built holds what has been constructed, in start order; on a
	// constructor error it is all shut down (Shutdown is safe without
	// Start), so that nothing leaks.
	var built []step
	defer func() {
		if err != nil && built != nil {
			releaseAll(built)
		}
	}()
	res, err := exporter.NewResource(ctx, version())
	if err != nil {
		return err
	}
	prices, err := pricing.NewWatcher(priceSource(cfg.Pricing), log)
	if err != nil {
		return fmt.Errorf("load pricing.table: %w", err)
	}
	built = append(built, step{"pricing", prices})
	var store *storage.Store
	if dir := cfg.Storage.Directory; dir != "" {
		t := time.Now()
		store, err = storage.Open(storage.Config{
			Directory:     dir,
			MinFreeBytes:  uint64(cfg.Storage.MinFreeMiB) << 20,
			NoSync:        !cfg.Storage.Sync,
			CacheBytes:    int64(cfg.StorageCacheMiB()) << 20,
			MemTableBytes: uint64(cfg.StorageMemTableMiB()) << 20,
		}, log)
		if err != nil {
			return err
		}
		// Closed last: the processor's shutdown writes a final snapshot.
		defer func() {
			if err := store.Close(); err != nil {
				log.Error("close storage", "err", err)
			}
		}()
		log.Info("storage opened", "directory", dir, "took", time.Since(t).String())
	}
	proc, err := processor.New(processor.Config{
		DedupeWindow:        cfg.Receiver.DedupeWindow,
		DedupeMaxIDs:        cfg.Receiver.DedupeMaxIDs,
		DedupeFilterBytes:   cfg.DedupeFilterBytes(), // with storage
		IdleExpiry:          cfg.Conversations.IdleExpiry,
		MaxTracked:          cfg.Conversations.MaxTracked,
		ClosedRetention:     cfg.Conversations.ClosedRetention,
		DefaultMaxBudgetUSD: cfg.Conversations.DefaultMaxBudgetUSD,
		Retention:           cfg.Storage.Retention,
		SnapshotInterval:    cfg.Storage.SnapshotInterval,
	}, processor.Deps{Logger: log, Pricer: prices, Store: store})
	if err != nil {
		return err
	}
	built = append(built, step{"processor", proc})
	// The OpenHands webhook shares the HTTP server; draining is closed
	// when shutdown begins, so that it stops taking events.
	draining := make(chan struct{})
	var routes []exporter.Route
	var webhook *openhands.Handler
	if oh := cfg.Receiver.OpenHands; oh.Enabled {
		ohCfg := openhands.Config{
			Path: oh.Path, APIKeys: oh.APIKeys, MaxBodyBytes: int64(oh.MaxBodyMiB) << 20,
			Limits: receiver.Limits{MaxFutureSkew: cfg.Receiver.MaxFutureSkew}, MaxConversations: cfg.Conversations.MaxTracked,
		}
		ohDeps := openhands.Deps{Logger: log, Consumer: proc, Durations: proc, Draining: draining}
		if store != nil {
			// The feed's cumulative high-water marks live in the durable
			// state, so that a restart counts nothing twice; the file an
			// earlier version kept them in is imported once.
			ohDeps.State = store
			ohCfg.ImportStateFile = filepath.Join(cfg.Storage.Directory, openhands.LegacyStateFile)
		}
		if webhook, err = openhands.New(ohCfg, ohDeps); err != nil {
			return err
		}
		// Closed after the HTTP server has stopped, before the store.
		defer func() {
			if err := webhook.Close(); err != nil {
				log.Error("close openhands state", "err", err)
			}
		}()
		routes = webhook.Routes()
	}
	exp, err := exporter.New(ctx, cfg, exporter.Deps{Logger: log, Resource: res, Producers: []sdkmetric.Producer{proc}, Routes: routes})
	if err != nil {
		return err
	}
	// Start order: the exporter first.
	built = append([]step{{"exporter", exp}}, built...)
	meter := exp.MeterProvider().Meter(catalog.ScopeName)
	if err := prices.RegisterMetrics(meter); err != nil {
		return err
	}
	if store != nil {
		if err := store.RegisterMetrics(meter); err != nil {
			return err
		}
	}
	if webhook != nil {
		if err := webhook.RegisterMetrics(meter); err != nil {
			return err
		}
	}
	// The in-flight bounds are sized from memory.limit_mib, less what the
	// durable store may hold.
	rpcs, inflightMiB := cfg.Inflight()
	authn, err := auth.New(authConfig(cfg), auth.Deps{Logger: log, Meter: meter})
	if err != nil {
		return err
	}
	built = append(built, step{"auth", authn})
	log.Info("ingest auth", "token", authn.TokenRequired(), "tls", authn.TLS(),
		"mutual_tls", cfg.Receiver.GRPC.TLS.ClientCAFile != "")
	grpcSrv, err := grpcserver.New(grpcserver.Config{
		Endpoint:             cfg.Receiver.GRPC.Endpoint,
		MaxRecvMsgSize:       cfg.Receiver.GRPC.MaxRecvMsgSizeMiB << 20,
		MaxConcurrentStreams: cfg.Receiver.GRPC.MaxConcurrentStreams,
		MaxConnections:       cfg.Receiver.GRPC.MaxConnections,
		MaxInflightRPCs:      rpcs,
		ReceiveTimeout:       cfg.Receiver.GRPC.ReceiveTimeout,
		MaxConnectionIdle:    cfg.Receiver.GRPC.MaxConnectionIdle,
		HandshakeTimeout:     cfg.Receiver.GRPC.HandshakeTimeout,
	}, grpcserver.Deps{Logger: log, Meter: meter, Listen: listen,
		Taps: []tap.ServerInHandle{authn.Tap}, Options: authn.ServerOptions()})
	if err != nil {
		return err
	}
	built = append(built, step{"grpc", grpcSrv})
	recv, err := receiver.New(receiver.Config{
		MaxEventsPerRequest: cfg.Receiver.MaxEventsPerRequest,
		MaxInflightBytes:    int64(inflightMiB) << 20,
		Limits:              receiver.Limits{MaxFutureSkew: cfg.Receiver.MaxFutureSkew},
		KeepEncoded:         store != nil,
	}, receiver.Deps{Logger: log, Meter: meter, Consumer: proc, Draining: grpcSrv.Draining()})
	if err != nil {
		return err
	}
	recv.Register(grpcSrv)
	pb.RegisterUsageServiceServer(grpcSrv, usage.New(proc, usage.DefaultWatchInterval, grpcSrv.Draining()))
	log.Info("grpc in-flight bounds", "memory_limit_mib", cfg.Memory.LimitMiB, "storage_memory_mib", cfg.StorageMemoryMiB(), "max_inflight_rpcs", rpcs, "max_inflight_mib", inflightMiB,
		"max_connections", cfg.Receiver.GRPC.MaxConnections)
	steps := built
	built = nil // from here on, the shutdown below releases everything

	// Downstream first: exporters, then the processor, then the receiver.
	started := 0
	var startErr error
	for _, st := range steps {
		t := time.Now()
		if startErr = st.c.Start(ctx); startErr != nil {
			startErr = fmt.Errorf("start %s: %w", st.name, startErr)
			break
		}
		started++
		log.Info("started", "component", st.name, "took", time.Since(t).String())
	}
	shutdown := func() error {
		// Readiness goes first, so that the kubelet and agents stop
		// sending at once.
		exp.SetReady(false)
		grpcSrv.SetServing(false)
		close(draining)
		return shutdownAll(steps, cfg.Shutdown.GracePeriod, log)
	}
	if startErr != nil {
		return errors.Join(startErr, shutdown())
	}

	// Run: every server's Wait and the signal wait in one group; the
	// first to end (a signal, or a server that died) shuts everything down.
	grpcSrv.SetServing(true)
	exp.SetReady(true)
	log.Info("agentmeter collector ready", "version", version(),
		"grpc", grpcSrv.Addr().String(), "http", exp.Addr().String())
	g, gctx := errgroup.WithContext(ctx)
	for _, st := range steps {
		if srv, ok := st.c.(server); ok {
			name := st.name
			g.Go(func() error {
				if err := srv.Wait(); err != nil {
					log.Error("server stopped serving; shutting down", "component", name, "err", err)
					return fmt.Errorf("%s: %w", name, err)
				}
				return nil
			})
		}
	}
	var shutdownErr error
	g.Go(func() error {
		waitForStop(gctx, prices, log)
		log.Info("shutting down", "grace_period", cfg.Shutdown.GracePeriod.String())
		shutdownErr = shutdown()
		return nil
	})
	runErr := g.Wait()
	if runErr == nil && shutdownErr == nil {
		s, f := exp.Counts()
		log.Info("agentmeter collector stopped", "otlp_exports_ok", s, "otlp_exports_failed", f)
	}
	return errors.Join(runErr, shutdownErr)
}

// shutdownAll shuts steps down upstream first within grace, each step
// logged with how long it took. The signal context is done by now, so the
// deadline is fresh; the gRPC server gets at most half of it, so that the
// final export always has time.
func shutdownAll(steps []step, grace time.Duration, log *slog.Logger) error {
	ctx, cancel := context.WithTimeout(context.Background(), grace)
	defer cancel()
	var errs []error
	for i := len(steps) - 1; i >= 0; i-- {
		st := steps[i]
		stepCtx, stepCancel := ctx, context.CancelFunc(func() {})
		if st.name == "grpc" {
			stepCtx, stepCancel = context.WithTimeout(ctx, grace/2)
		}
		t := time.Now()
		if err := st.c.Shutdown(stepCtx); err != nil {
			errs = append(errs, fmt.Errorf("shut down %s: %w", st.name, err))
		}
		stepCancel()
		log.Info("stopped", "component", st.name, "took", time.Since(t).String())
	}
	return errors.Join(errs...)
}

// releaseAll shuts down what a failed build constructed, none of it
// started: nothing was ingested, so a final export has nothing to lose and
// gets a second at most.
func releaseAll(steps []step) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	for i := len(steps) - 1; i >= 0; i-- {
		_ = steps[i].c.Shutdown(ctx)
	}
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
