package e2e

//lint:file-ignore SA1019 The dashboards use the classic model (dashboard.Dashboard), which file provisioning and the Grafana sidecar load; see deploy/grafana/dashboards.go.

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/grafana/grafana-foundation-sdk/go/cog/plugins"
	"github.com/grafana/grafana-foundation-sdk/go/dashboard"
	"github.com/grafana/grafana-foundation-sdk/go/prometheus"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/agentmeter/agentmeter/cmd/loadgen/scenario"
	pb "github.com/agentmeter/agentmeter/proto/agentmeter/v1"
)

func dashboardQueries(t *testing.T, path string) (targets []panelQuery, variables map[string]string) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	plugins.RegisterDefaultPlugins()
	var d dashboard.Dashboard
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatalf("%s: decode with the SDK's dashboard types: %v", path, err)
	}
	name := filepath.Base(path)
	var panels []dashboard.Panel
	for _, p := range d.Panels {
		switch {
		case p.Panel != nil:
			panels = append(panels, *p.Panel)
		case p.RowPanel != nil:
			panels = append(panels, p.RowPanel.Panels...)
		}
	}
	for _, p := range panels {
		title := ""
		if p.Title != nil {
			title = *p.Title
		}
		if len(p.Targets) == 0 {
			t.Errorf("%s: panel %q has no query", name, title)
		}
		for _, target := range p.Targets {
			var q *prometheus.Dataquery
			switch v := target.(type) {
			case *prometheus.Dataquery:
				q = v
			case prometheus.Dataquery:
				q = &v
			default:
				t.Fatalf("%s: panel %q: target of type %T, want a Prometheus query", name, title, target)
			}
			legend := ""
			if q.LegendFormat != nil {
				legend = *q.LegendFormat
			}
			targets = append(targets, panelQuery{dashboard: name, panel: title, expr: q.Expr, legend: legend})
		}
	}
	variables = map[string]string{}
	for _, v := range d.Templating.List {
		if v.Query != nil && v.Query.String != nil {
			variables[v.Name] = *v.Query.String
		}
	}
	return targets, variables
}

// cannotCause are the series that only a bug of agentmeter creates (a
// panic recovered in a handler): their panels may stay empty here.
var cannotCause = []string{"agentmeter_grpc_panics_total"}

var (
	legendLabel = regexp.MustCompile(`\{\{\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*\}\}`)
	labelValues = regexp.MustCompile(`^label_values\((.*),\s*([a-zA-Z_][a-zA-Z0-9_]*)\)$`)
)

// TestDashboardsOnScenario runs every panel query of deploy/grafana's
// dashboards on a real Prometheus that scraped the collector while
// `loadgen --scenario agents` ran, with the collector on the demo's config
// (deploy/demo/collector.yaml). Each query must return data, every label
// its legend names must be on every series, and at least one value must be
// a number. The faults the scenario does not cause are caused here: a
// request over max_events_per_request (refused), 2100 new label sets
// (series overflow) and a price table rewrite (a reload).
func TestDashboardsOnScenario(t *testing.T) {
	t.Parallel()
	needBinary(t)
	otlpAddr, _ := serveOTLPGRPC(t, "127.0.0.1:0", &sink{})
	prices, err := os.ReadFile("../pricing/testdata/builtin-2025-11-24.yaml")
	if err != nil {
		t.Fatal(err)
	}
	table := filepath.Join(t.TempDir(), "prices.yaml")
	if err := os.WriteFile(table, prices, 0o600); err != nil {
		t.Fatal(err)
	}
	grpcAddr, httpAddr := freePair(t)
	c := launch(t, options{Env: []string{
		"AGENTMETER_GRPC_ENDPOINT=" + grpcAddr, "AGENTMETER_HTTP_ENDPOINT=" + httpAddr,
		"AGENTMETER_OTLP_ENABLED=true", "AGENTMETER_OTLP_ENDPOINT=" + otlpAddr,
		"AGENTMETER_PRICING_TABLE=" + table, "AGENTMETER_STORAGE_DIR=" + t.TempDir(),
	}}, "../deploy/demo/collector.yaml", grpcAddr, httpAddr)
	if err := c.waitReady(readyTimeout); err != nil {
		t.Fatal(err)
	}

	// A second sidecar of the namespace takes only the 2100 label sets that
	// overflow its series bound: its exposition is large (~2000 label sets
	// of histograms), so it is scraped less often, and the scenario's sidecar
	// stays quick to scrape.
	// It also requires a token, so that a client without one is refused.
	tokenFile := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(tokenFile, []byte("e2e-dashboards-token\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	overflowGRPC, overflowHTTP := freePair(t)
	overflow := launch(t, options{Env: []string{
		"AGENTMETER_GRPC_ENDPOINT=" + overflowGRPC, "AGENTMETER_HTTP_ENDPOINT=" + overflowHTTP,
		"AGENTMETER_TOKEN_FILE=" + tokenFile,
	}}, "../deploy/demo/collector.yaml", overflowGRPC, overflowHTTP)
	if err := overflow.waitReady(readyTimeout); err != nil {
		t.Fatal(err)
	}

	// Scraped as the Helm chart's PodMonitor scrapes: job agentmeter, with
	// namespace and pod target labels.
	const namespace, pod, overflowPod = "agents", "agent-0", "agent-1"
	prom := runPrometheus(t, fmt.Sprintf(`global:
  scrape_interval: 1s
scrape_configs:
  - job_name: agentmeter
    scrape_interval: 1s
    scrape_timeout: 1s
    static_configs:
      - targets: [%q]
        labels: {namespace: %s, pod: %s}
  - job_name: agentmeter-overflow
    scrape_interval: 10s
    scrape_timeout: 10s
    static_configs:
      - targets: [%q]
        labels: {namespace: %s, pod: %s}
    relabel_configs:
      - {target_label: job, replacement: agentmeter}
`, httpAddr, namespace, pod, overflowHTTP, namespace, overflowPod))

	cfg := scenario.Default()
	cfg.Target, cfg.Duration, cfg.Pace = grpcAddr, 12*time.Second, 20*time.Millisecond
	reloaded := make(chan error, 1)
	go func() {
		time.Sleep(4 * time.Second)
		reloaded <- os.WriteFile(table, append(prices, "\n# edited\n"...), 0o600)
	}()
	res, err := scenario.Run(context.Background(), cfg)
	if err != nil {
		t.Fatalf("scenario: %v (%+v)", err, res)
	}
	if err := <-reloaded; err != nil {
		t.Fatal(err)
	}
	t.Logf("scenario: %+v", res)

	// The OpenHands webhook: one sample batch, and a wrong body.
	ohBatch, err := os.ReadFile("../openhands/testdata/POST_events_batch1.json")
	if err != nil {
		t.Fatal(err)
	}
	for body, want := range map[string]int{string(ohBatch): http.StatusOK, "[{": http.StatusBadRequest} {
		resp, err := c.http.Post("http://"+httpAddr+"/openhands/events/0f4c3b2a7d1e4c5b9a8f2e6d1c0b9a87", "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Fatalf("openhands webhook: %d, want %d", resp.StatusCode, want)
		}
	}

	// A request over max_events_per_request is refused whole.
	tooMany := make([]*pb.Event, 10001)
	for i := range tooMany {
		tooMany[i] = simpleCall(fmt.Sprintf("too-many-%d", i), "gpt-5", 1, 1)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := c.ingest.Record(ctx, &pb.RecordRequest{Events: tooMany}); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("10001 events: %v, want InvalidArgument", err)
	}
	// 2100 new models fill the 2000 LLM label sets: the rest overflows.
	many := make([]*pb.Event, 2100)
	for i := range many {
		many[i] = simpleCall(fmt.Sprintf("overflow-%d", i), fmt.Sprintf("model-%04d", i), 1, 1)
		many[i].Time = timestamppb.Now()
	}
	if _, err := overflow.ingest.Record(ctx, &pb.RecordRequest{Events: many[:1]}); status.Code(err) != codes.Unauthenticated {
		t.Fatalf("no token: %v, want Unauthenticated", err)
	}
	// The token file is rewritten (same token): a reload.
	if err := os.WriteFile(tokenFile, []byte("e2e-dashboards-token\n\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	authCtx := metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer e2e-dashboards-token")
	if _, err := overflow.ingest.Record(authCtx, &pb.RecordRequest{Events: many}); err != nil {
		t.Fatal(err)
	}

	// Wait until Prometheus has scraped all of it at least twice (a rate
	// needs two samples).
	eventually(t, 90*time.Second, "the faults scraped", func() (bool, string) {
		var detail []string
		ok := true
		for _, q := range []string{
			`min(count_over_time(agentmeter_processor_series_overflow_total{job="agentmeter"}[1m]) and agentmeter_processor_series_overflow_total > 0) >= 2`,
			`min(count_over_time(agentmeter_grpc_requests_refused_total{job="agentmeter"}[1m])) >= 2`,
			`min(count_over_time(agentmeter_receiver_auth_refused_total{job="agentmeter"}[1m])) >= 2`,
			`min(count_over_time(agentmeter_pricing_reloads_total{job="agentmeter", outcome="success"}[1m])) >= 2`,
			`min(count_over_time(agentmeter_openhands_requests_total{job="agentmeter"}[1m])) >= 2`,
			`min(count_over_time(agentmeter_receiver_auth_reloads_total{job="agentmeter", outcome="success"}[1m])) >= 2`,
			`sum(agentmeter_exporter_otlp_exports_total{job="agentmeter", outcome="success"}) > 0`,
		} {
			s, err := promQuery(prom, q)
			if err != nil || len(s) == 0 {
				ok = false
				detail = append(detail, fmt.Sprintf("%s: %v %v", q, s, err))
			}
		}
		return ok, strings.Join(detail, "; ")
	})

	// The template variables' values as Grafana substitutes them in a
	// Prometheus query: a regex alternation of the selected values, regex
	// characters escaped, and the escapes escaped for the PromQL string.
	escape := func(v string) string { return strings.ReplaceAll(regexp.QuoteMeta(v), `\`, `\\`) }
	var agents, models []string
	for a := range res.Agents {
		agents = append(agents, escape(a))
	}
	for _, m := range scenario.Models() {
		models = append(models, escape(m))
	}
	slices.Sort(agents)
	substitute := strings.NewReplacer(
		"$__rate_interval", "1m", "$__range", "5m",
		"$namespace", namespace, "$pod", "("+pod+"|"+overflowPod+")",
		"$agent", "("+strings.Join(agents, "|")+")",
		"$model", "("+strings.Join(models, "|")+")",
	)

	files, err := filepath.Glob("../deploy/grafana/dashboards/*.json")
	if err != nil || len(files) < 2 {
		t.Fatalf("dashboards: %v %v", files, err)
	}
	checked := 0
	for _, file := range files {
		targets, variables := dashboardQueries(t, file)
		for _, pq := range targets {
			expr := substitute.Replace(pq.expr)
			if strings.Contains(expr, "$") {
				t.Errorf("%s / %s: a variable is left after substitution: %s", pq.dashboard, pq.panel, expr)
				continue
			}
			samples, err := promQuery(prom, expr)
			if err != nil {
				t.Errorf("%s / %s: %v", pq.dashboard, pq.panel, err)
				continue
			}
			if len(samples) == 0 && slices.ContainsFunc(cannotCause, func(m string) bool { return strings.Contains(expr, m) }) {
				t.Logf("%s / %s: no data, as expected of a series only a bug creates: %s", pq.dashboard, pq.panel, expr)
				continue
			}
			if len(samples) == 0 {
				t.Errorf("%s / %s: no data for %s", pq.dashboard, pq.panel, expr)
				continue
			}
			numbers := 0
			for _, s := range samples {
				for _, m := range legendLabel.FindAllStringSubmatch(pq.legend, -1) {
					if s.Metric[m[1]] == "" {
						t.Errorf("%s / %s: series %v has no label %s (legend %q)", pq.dashboard, pq.panel, s.Metric, m[1], pq.legend)
					}
				}
				if !math.IsNaN(s.Value) && !math.IsInf(s.Value, 0) {
					numbers++
				}
			}
			if numbers == 0 {
				t.Errorf("%s / %s: only NaN or Inf from %s: %v", pq.dashboard, pq.panel, expr, samples)
			}
			checked++
		}
		// The variables list the values substituted above.
		for name, want := range map[string][]string{
			"namespace": {namespace}, "pod": {pod, overflowPod}, "agent": keys(res.Agents), "model": scenario.Models(),
		} {
			m := labelValues.FindStringSubmatch(variables[name])
			if m == nil {
				t.Errorf("%s: variable %s = %q, want label_values(selector, label)", filepath.Base(file), name, variables[name])
				continue
			}
			expr := substitute.Replace(fmt.Sprintf("group by (%s) (%s)", m[2], m[1]))
			samples, err := promQuery(prom, expr)
			if err != nil {
				t.Errorf("variable %s: %v", name, err)
				continue
			}
			var got []string
			for _, s := range samples {
				got = append(got, s.Metric[m[2]])
			}
			for _, w := range want {
				if !slices.Contains(got, w) {
					t.Errorf("%s: variable %s lists %q, not %q", filepath.Base(file), name, got, w)
				}
			}
		}
	}
	t.Logf("%d panel queries checked on %d dashboards", checked, len(files))
}

func keys(m map[string]int64) []string {
	var ks []string
	for k := range m {
		ks = append(ks, k)
	}
	slices.Sort(ks)
	return ks
}
