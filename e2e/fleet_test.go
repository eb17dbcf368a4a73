package e2e

import (
	"context"
	"fmt"
	"math"
	"net"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/agentmeter/agentmeter/cmd/loadgen/scenario"
)

// gatewayBin returns the OpenTelemetry Collector built from
// deploy/otelcol/builder-config.yaml: $AGENTMETER_OTELCOL, which
// scripts/test.sh sets after building it, or the binary scripts/otelcol.sh
// has cached. Missing, the test skips, or fails under CI=true.
func gatewayBin(t *testing.T) string {
	t.Helper()
	if p := os.Getenv("AGENTMETER_OTELCOL"); p != "" {
		if _, err := os.Stat(p); err != nil {
			t.Fatalf("AGENTMETER_OTELCOL=%s: %v", p, err)
		}
		return p
	}
	out, err := exec.Command("../scripts/otelcol.sh", "--cached").Output()
	if err == nil {
		return strings.TrimSpace(string(out))
	}
	msg := "no OpenTelemetry Collector built from deploy/otelcol/builder-config.yaml: run scripts/otelcol.sh (once, ~5 min) or ./scripts/test.sh"
	if os.Getenv("CI") == "true" {
		t.Fatalf("CI=true: %s", msg)
	}
	t.Skip(msg)
	return ""
}

// startGateway runs the gateway on deploy/otelcol/gateway.yaml, pushing to
// remoteWrite, and returns its OTLP gRPC address.
func startGateway(t *testing.T, remoteWrite string) string {
	t.Helper()
	bin := gatewayBin(t)
	addr := freePort(t)
	cmd := exec.Command(bin, "--config", "../deploy/otelcol/gateway.yaml")
	cmd.Env = append(os.Environ(), "OTLP_GRPC_ENDPOINT="+addr, "REMOTE_WRITE_URL="+remoteWrite)
	out := &syncBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatalf("start gateway: %v", err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
		if t.Failed() {
			t.Logf("gateway output:\n%s", out.String())
		}
	})
	eventually(t, 30*time.Second, "gateway listening on "+addr, func() (bool, string) {
		select {
		case <-done:
			t.Fatalf("gateway exited:\n%s", out.String())
		default:
		}
		conn, err := net.DialTimeout("tcp", addr, time.Second)
		if err != nil {
			return false, err.Error()
		}
		_ = conn.Close()
		return true, ""
	})
	return addr
}

// TestFleetThroughCollector: three sidecars push OTLP to a real
// OpenTelemetry Collector gateway (deploy/otelcol/gateway.yaml), which
// remote-writes to a real Prometheus. The fleet's totals there (tokens by
// type, cost by model) equal the sum of what the three sidecars counted
// (their own /metrics) and of what the scenario sent them, and each
// sidecar's series stay apart by k8s.pod.name; so again after one sidecar
// (with storage.directory) is killed with SIGKILL, restarted and sent more.
// It logs the series count per pod, the README's cardinality figure.
func TestFleetThroughCollector(t *testing.T) {
	t.Parallel()
	needBinary(t)
	// Prometheus as the remote-write backend; it scrapes nothing.
	prom := runPrometheus(t, "global:\n  scrape_interval: 15s\n", "--web.enable-remote-write-receiver")
	gateway := startGateway(t, "http://"+prom+"/api/v1/write")

	const sidecars = 3
	pods := make([]string, sidecars)
	opts := make([]options, sidecars)
	cs := make([]*collector, sidecars)
	for i := range cs {
		pods[i] = fmt.Sprintf("agent-%d", i)
		opts[i] = options{
			OTLP: &otlpOptions{Endpoint: gateway, Protocol: "grpc", Interval: time.Second, Timeout: time.Second},
			Env:  []string{"OTEL_RESOURCE_ATTRIBUTES=k8s.pod.name=" + pods[i] + ",k8s.namespace.name=fleet"},
		}
		if i == 0 { // restarted below: its state is on disk
			opts[i].Storage = &storageOptions{Directory: t.TempDir()}
		}
		cs[i] = startCollector(t, opts[i])
	}

	// sent sums what the scenario runs sent, by token type.
	types := []string{"input", "output", "cache_read", "cache_write", "reasoning"}
	sent := map[string]float64{}
	play := func(targets []int, seed uint64, d time.Duration) {
		t.Helper()
		results := make([]scenario.Result, len(targets))
		errs := make([]error, len(targets))
		var wg sync.WaitGroup
		for k, i := range targets {
			wg.Go(func() {
				cfg := scenario.Default()
				cfg.Target, cfg.Agents, cfg.Duration, cfg.Pace, cfg.Seed = cs[i].grpcAddr, 2, d, 10*time.Millisecond, seed+uint64(i)
				results[k], errs[k] = scenario.Run(context.Background(), cfg)
			})
		}
		wg.Wait()
		for k, err := range errs {
			if err != nil {
				t.Fatalf("scenario on %s: %v", pods[targets[k]], err)
			}
			for _, typ := range types {
				sent[typ] += float64(results[k].Tokens[typ])
			}
		}
	}
	query := func(q string) []promSample {
		t.Helper()
		s, err := promQuery(prom, q)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}

	// compare checks the sidecars' own /metrics against what was sent, and
	// Prometheus (through the gateway) against the sidecars.
	compare := func(stage string) {
		t.Helper()
		counted := map[string]float64{}     // token type -> sum over the sidecars
		perPod := map[string]float64{}      // pod -> input tokens the sidecar counted
		costByModel := map[string]float64{} // model -> sum over the sidecars
		for i, c := range cs {
			fams, _ := c.scrape()
			for _, typ := range types {
				v, _ := fams.value("agentmeter_llm_tokens_total", labels{"gen_ai_token_type": typ})
				counted[typ] += v
			}
			perPod[pods[i]], _ = fams.value("agentmeter_llm_tokens_total", labels{"gen_ai_token_type": "input"})
			for _, m := range scenario.Models() {
				v, _ := fams.value("agentmeter_llm_cost_usd_total", labels{"gen_ai_request_model": m})
				costByModel[m] += v
			}
		}
		for _, typ := range types {
			if sent[typ] != counted[typ] {
				t.Errorf("%s: %s tokens: the scenario sent %v, the sidecars counted %v", stage, typ, sent[typ], counted[typ])
			}
		}
		// The gateway pushes every second or so; wait until the fleet's
		// input tokens reach the total, then compare everything.
		eventually(t, 90*time.Second, stage+": fleet input tokens in Prometheus", func() (bool, string) {
			s := query(`sum(agentmeter_llm_tokens_total{gen_ai_token_type="input", k8s_namespace_name="fleet"})`)
			if len(s) != 1 {
				return false, fmt.Sprint(s)
			}
			return s[0].Value == sent["input"], fmt.Sprintf("%v of %v", s[0].Value, sent["input"])
		})
		for _, typ := range types {
			s := query(fmt.Sprintf(`sum(agentmeter_llm_tokens_total{gen_ai_token_type=%q})`, typ))
			if len(s) != 1 || s[0].Value != sent[typ] {
				t.Errorf("%s: fleet %s tokens in Prometheus: %v, want %v", stage, typ, s, sent[typ])
			}
		}
		for _, s := range query(`sum by (gen_ai_request_model) (agentmeter_llm_cost_usd_total)`) {
			m := s.Metric["gen_ai_request_model"]
			if want := costByModel[m]; math.Abs(s.Value-want) > 1e-9*math.Max(1, want) {
				t.Errorf("%s: fleet cost of %s in Prometheus: %v, the sidecars counted %v", stage, m, s.Value, want)
			}
			delete(costByModel, m)
		}
		for m, v := range costByModel {
			if v != 0 {
				t.Errorf("%s: cost of %s (%v) never reached Prometheus", stage, m, v)
			}
		}
		// Each sidecar's series stay apart by k8s.pod.name.
		byPod := query(`sum by (k8s_pod_name) (agentmeter_llm_tokens_total{gen_ai_token_type="input"})`)
		if len(byPod) != sidecars {
			t.Errorf("%s: input tokens by k8s_pod_name: %v, want one series per sidecar", stage, byPod)
		}
		for _, s := range byPod {
			if want := perPod[s.Metric["k8s_pod_name"]]; s.Value != want {
				t.Errorf("%s: input tokens of %s in Prometheus: %v, its sidecar counted %v", stage, s.Metric["k8s_pod_name"], s.Value, want)
			}
		}
	}

	// Each sidecar gets its own scenario run, at once.
	play([]int{0, 1, 2}, 1, 4*time.Second)
	compare("three sidecars")

	// kill -9 of agent-0, which keeps its state on disk: restarted on the
	// same directory, it carries on from its totals, and the fleet's series
	// through the gateway neither drop nor count twice.
	if err := cs[0].cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	<-cs[0].exited
	cs[0] = startCollector(t, opts[0])
	play([]int{0}, 100, 2*time.Second)
	compare("after agent-0's kill -9 and restart")

	if s := query(`topk(1, agentmeter_llm_tokens_total{k8s_pod_name="agent-0"})`); len(s) == 1 {
		t.Logf("a series through the gateway: %v", s[0].Metric)
	}
	// Cardinality: series per pod, and the largest metrics.
	for _, s := range query(`count by (k8s_pod_name) ({k8s_namespace_name="fleet"})`) {
		t.Logf("series of %s through the gateway: %v", s.Metric["k8s_pod_name"], s.Value)
	}
	for _, s := range query(`topk(5, count by (__name__) ({k8s_pod_name="agent-0"}))`) {
		t.Logf("  agent-0 %s: %v series", s.Metric["__name__"], s.Value)
	}
	t.Logf("fleet input tokens %v over %d sidecars", sent["input"], sidecars)
}
