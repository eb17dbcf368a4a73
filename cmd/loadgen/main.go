// Command loadgen measures how many events per second an agentmeter
// IngestService (or anything speaking its proto) takes on this machine, or,
// with --scenario agents, plays a small agent server's realistic traffic
// (package scenario) for dashboards and demos.
//
// It is a lean client on purpose: on a small machine a generic gRPC load tool
// takes the CPU the server needs. It only talks to loopback targets and always
// stops by itself (--duration, --events, --timeout).
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/agentmeter/agentmeter/cmd/loadgen/load"
	"github.com/agentmeter/agentmeter/cmd/loadgen/scenario"
)

func main() { os.Exit(run(os.Args[1:], os.Stdout, os.Stderr)) }

// options is the parsed command line.
type options struct {
	cfg    load.Config
	asJSON bool
	// scenario is "" (a throughput run with cfg) or "agents" (scn).
	scenario string
	scn      scenario.Config
}

// parseFlags parses args onto the defaults of load.Default. --events without
// --duration means no time limit (--timeout still applies).
func parseFlags(args []string, stderr io.Writer) (options, error) {
	o := options{cfg: load.Default(), scn: scenario.Default()}
	fs := flag.NewFlagSet("loadgen", flag.ContinueOnError)
	fs.SetOutput(stderr)
	c := &o.cfg
	fs.StringVar(&c.Target, "target", c.Target, "host:port of the IngestService; loopback only")
	mode := fs.String("mode", string(c.Mode), "stream (RecordStream) or unary (Record)")
	fs.IntVar(&c.Batch, "batch", c.Batch, "events per RecordRequest")
	fs.IntVar(&c.Streams, "streams", c.Streams, "concurrent streams (unary: concurrent callers, each with --window calls)")
	fs.IntVar(&c.Window, "window", c.Window, "requests in flight per stream before waiting for responses")
	fs.DurationVar(&c.Duration, "duration", c.Duration, "stop sending after this long; 0 = no time limit (needs --events)")
	fs.Int64Var(&c.Events, "events", 0, "stop after this many events; 0 = no limit")
	fs.DurationVar(&c.Timeout, "timeout", c.Timeout, "hard bound on the whole run")
	fs.IntVar(&c.Conversations, "conversations", c.Conversations, "distinct conversation_ids cycled")
	fs.IntVar(&c.Models, "models", c.Models, "distinct request_model values cycled")
	fs.DurationVar(&c.Progress, "progress", c.Progress, "interval of progress lines on stderr; 0 = none")
	fs.DurationVar(&c.Drain, "drain", c.Drain, "how long to wait for outstanding responses after sending stops")
	fs.BoolVar(&o.asJSON, "json", false, "print the result as one JSON object on stdout")
	fs.StringVar(&o.scenario, "scenario", "", `"agents": realistic agent traffic instead of a throughput run (uses --target, --duration, --agents, --pace, --limit, --seed)`)
	fs.IntVar(&o.scn.Agents, "agents", o.scn.Agents, "scenario: concurrent agents")
	fs.DurationVar(&o.scn.Pace, "pace", o.scn.Pace, "scenario: wall time between two steps of an agent")
	fs.IntVar(&o.scn.Limit, "limit", o.scn.Limit, "scenario: the agent server's max_concurrent_conversations")
	fs.Uint64Var(&o.scn.Seed, "seed", o.scn.Seed, "scenario: random seed")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	if fs.NArg() > 0 {
		return o, fmt.Errorf("unexpected arguments: %q", fs.Args())
	}
	switch o.scenario {
	case "":
	case "agents":
		o.scn.Target = c.Target
		fs.Visit(func(f *flag.Flag) {
			if f.Name == "duration" {
				o.scn.Duration = c.Duration
			}
		})
		return o, o.scn.Validate()
	default:
		return o, fmt.Errorf("scenario %q: the only scenario is agents", o.scenario)
	}
	c.Mode = load.Mode(*mode)
	durationSet := false
	fs.Visit(func(f *flag.Flag) { durationSet = durationSet || f.Name == "duration" })
	if c.Events > 0 && !durationSet {
		c.Duration = 0
	}
	return o, c.Validate()
}

// run is the whole command; it returns the exit code: 0 ok, 1 the run failed
// (transport errors, responses that do not add up, fewer events than
// --events), 2 bad usage.
func run(args []string, stdout, stderr io.Writer) int {
	o, err := parseFlags(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		_, _ = fmt.Fprintf(stderr, "loadgen: %v\n", err)
		return 2
	}
	log := slog.New(slog.NewTextHandler(stderr, nil))
	o.cfg.Logger = log

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if o.scenario != "" {
		return runScenario(ctx, o, stdout, log)
	}
	cpu0 := cpuSeconds()
	res, err := load.Run(ctx, o.cfg)
	clientCPU := cpuSeconds() - cpu0
	if err != nil && res.Requests == 0 && res.Errors == 0 {
		log.Error("load run", "err", err) // nothing was sent: no result to print
		return 1
	}
	if o.asJSON {
		out := struct {
			load.Result
			// ClientCPUSeconds is this process's CPU time during the run, so
			// that a benchmark can tell the client's share of the machine.
			ClientCPUSeconds float64 `json:"client_cpu_seconds"`
		}{res, clientCPU}
		if e := json.NewEncoder(stdout).Encode(out); e != nil {
			log.Error("write result", "err", e)
			return 1
		}
	} else {
		_, _ = fmt.Fprintf(stdout,
			"events %d in %.3fs = %.0f events/s; requests %d; accepted %d, duplicates %d, rejected %d; errors %d; client CPU %.2fs\n",
			res.Events, res.Seconds, res.EventsPerSec, res.Requests, res.Accepted, res.Duplicates, res.Rejected, res.Errors, clientCPU)
	}
	code := 0
	if err != nil {
		log.Error("load run", "err", err)
		code = 1
	}
	if res.Errors > 0 {
		log.Error("run had errors", "errors", res.Errors)
		code = 1
	}
	if o.cfg.Events > 0 && o.cfg.Duration == 0 && res.Events < o.cfg.Events && ctx.Err() == nil {
		log.Error("stopped before --events were sent", "events", res.Events, "want", o.cfg.Events)
		code = 1
	}
	return code
}

// cpuSeconds is the user+system CPU time of this process so far; 0 if unknown.
func cpuSeconds() float64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()).Seconds()
}

// runScenario plays --scenario agents and prints what it sent.
func runScenario(ctx context.Context, o options, stdout io.Writer, log *slog.Logger) int {
	o.scn.Logger = log
	log.Info("scenario started", "scenario", o.scenario, "target", o.scn.Target, "agents", o.scn.Agents, "duration", o.scn.Duration)
	res, err := scenario.Run(ctx, o.scn)
	if o.asJSON {
		if e := json.NewEncoder(stdout).Encode(res); e != nil {
			log.Error("write result", "err", e)
			return 1
		}
	} else {
		_, _ = fmt.Fprintf(stdout,
			"scenario %s: %d conversations (%d evicted), %d LLM calls (%d failed), %d runtime faults; events %d in %d requests: accepted %d, duplicates %d, rejected %d\n",
			o.scenario, res.Conversations, res.Evicted, res.Calls, res.FailedCalls, res.Faults, res.Events, res.Requests, res.Accepted, res.Duplicates, res.Rejected)
	}
	if err != nil {
		log.Error("scenario", "err", err)
		return 1
	}
	return 0
}
