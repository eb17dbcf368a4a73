// Package grafana builds agentmeter's Grafana dashboards as code, with the
// Grafana Foundation SDK: an overview for the SRE and a per-agent view. The
// JSON in dashboards/ is generated from here (`make dashboards`, which runs
// `go generate ./deploy/grafana`); a test fails when it is not current, and
// the end-to-end test e2e/dashboards_test.go runs every panel's query on a
// real Prometheus that scraped agentmeter during `loadgen --scenario agents`.
//
// Queries select job="agentmeter" and the namespace and pod target labels
// that a PodMonitor (the Helm chart's) or the kubernetes_sd example of
// deploy/prometheus/agentmeter-rules.yaml adds, and always aggregate, so that
// the otel_scope_* labels never split a series.
package grafana

//lint:file-ignore SA1019 The classic dashboard model (dashboard.Dashboard) is what file provisioning and the Grafana sidecar of kube-prometheus-stack load; dashboardv2 is a Kubernetes-style resource they do not read.

//go:generate go run ./gen

import (
	"encoding/json"
	"fmt"
	"strings"

	"github.com/grafana/grafana-foundation-sdk/go/cog"
	"github.com/grafana/grafana-foundation-sdk/go/cog/variants"
	"github.com/grafana/grafana-foundation-sdk/go/common"
	"github.com/grafana/grafana-foundation-sdk/go/dashboard"
	"github.com/grafana/grafana-foundation-sdk/go/prometheus"
	"github.com/grafana/grafana-foundation-sdk/go/stat"
	"github.com/grafana/grafana-foundation-sdk/go/timeseries"
)

// Label selectors of the template variables.
const (
	// sel selects the sidecars chosen by $namespace and $pod.
	sel = `job="agentmeter", namespace=~"$namespace", pod=~"$pod"`
	// llm adds $agent and $model, for the series of LLM calls.
	llm = sel + `, gen_ai_agent_name=~"$agent", gen_ai_request_model=~"$model"`
	// agentSel adds $agent, for the agent state series.
	agentSel = sel + `, gen_ai_agent_name=~"$agent"`
	// modelSel adds $model, for the series labelled by model only.
	modelSel = sel + `, gen_ai_request_model=~"$model"`
)

// Dashboards returns every dashboard, keyed by its file name (without .json).
func Dashboards() (map[string]dashboard.Dashboard, error) {
	out := map[string]dashboard.Dashboard{}
	for name, b := range map[string]*dashboard.DashboardBuilder{
		"agentmeter-overview": Overview(),
		"agentmeter-agents":   Agents(),
	} {
		d, err := b.Build()
		if err != nil {
			return nil, fmt.Errorf("build dashboard %s: %w", name, err)
		}
		out[name] = d
	}
	return out, nil
}

// datasource is the panels' data source: the $datasource variable.
func datasource() common.DataSourceRef {
	return common.DataSourceRef{Type: cog.ToPtr("prometheus"), Uid: cog.ToPtr("${datasource}")}
}

// base is a dashboard with the shared settings and template variables.
func base(uid, title, description string) *dashboard.DashboardBuilder {
	ds := datasource()
	variable := func(name, label, query string) *dashboard.QueryVariableBuilder {
		return dashboard.NewQueryVariableBuilder(name).
			Label(label).
			Datasource(ds).
			Query(dashboard.StringOrMap{String: cog.ToPtr(query)}).
			Definition(query).
			Refresh(dashboard.VariableRefreshOnTimeRangeChanged).
			Sort(dashboard.VariableSortAlphabeticalAsc).
			Multi(true).
			IncludeAll(true).
			AllValue(".*")
	}
	return dashboard.NewDashboardBuilder(title).
		Uid(uid).
		Description(description).
		Tags([]string{"agentmeter", "llm", "opentelemetry"}).
		Editable().
		Tooltip(dashboard.DashboardCursorSyncCrosshair).
		Refresh("30s").
		Time("now-1h", "now").
		Timezone(common.TimeZoneBrowser).
		WithVariable(dashboard.NewDatasourceVariableBuilder("datasource").Label("Data source").Type("prometheus")).
		WithVariable(variable("namespace", "Namespace", `label_values(up{job="agentmeter"}, namespace)`)).
		WithVariable(variable("pod", "Pod", `label_values(up{job="agentmeter", namespace=~"$namespace"}, pod)`)).
		WithVariable(variable("agent", "Agent", `label_values(agentmeter_agent_status_transitions_total{`+sel+`}, gen_ai_agent_name)`)).
		WithVariable(variable("model", "Model", `label_values(agentmeter_llm_tokens_total{`+sel+`}, gen_ai_request_model)`))
}

// query is one PromQL target; legend names the labels each series must carry.
type query struct {
	expr, legend string
}

func q(expr, legend string) query { return query{expr: expr, legend: legend} }

func targets(qs []query) []cog.Builder[variants.Dataquery] {
	var ts []cog.Builder[variants.Dataquery]
	for i, x := range qs {
		ts = append(ts, prometheus.NewDataqueryBuilder().
			Datasource(datasource()).
			RefId(string(rune('A'+i))).
			Expr(x.expr).
			LegendFormat(x.legend))
	}
	return ts
}

// series is a time series panel.
func series(title, description, unit string, w uint32, qs ...query) *timeseries.PanelBuilder {
	p := timeseries.NewPanelBuilder().
		Title(title).
		Description(description).
		Datasource(datasource()).
		Unit(unit).
		Span(w).
		Height(8).
		FillOpacity(10).
		Legend(common.NewVizLegendOptionsBuilder().
			DisplayMode(common.LegendDisplayModeTable).
			Placement(common.LegendPlacementBottom).
			ShowLegend(true).
			Calcs([]string{"mean", "max", "lastNotNull"}))
	for _, t := range targets(qs) {
		p = p.WithTarget(t)
	}
	return p
}

// single is a stat panel of one number.
func single(title, description, unit string, qs ...query) *stat.PanelBuilder {
	p := stat.NewPanelBuilder().
		Title(title).
		Description(description).
		Datasource(datasource()).
		Unit(unit).
		Span(4).
		Height(4).
		GraphMode(common.BigValueGraphModeArea).
		ReduceOptions(common.NewReduceDataOptionsBuilder().Calcs([]string{"lastNotNull"}))
	for _, t := range targets(qs) {
		p = p.WithTarget(t)
	}
	return p
}

// rate is sum by (by) (rate(metric{selector}[$__rate_interval])) * factor.
func rate(metric, selector, by string) string {
	return fmt.Sprintf("sum by (%s) (rate(%s{%s}[$__rate_interval]))", by, metric, selector)
}

// quantile is the q-quantile of a histogram, by the labels in by.
func quantile(q float64, metric, selector, by string) string {
	by = strings.TrimPrefix(by+", le", ", ")
	return fmt.Sprintf("histogram_quantile(%g, sum by (%s) (rate(%s_bucket{%s}[$__rate_interval])))", q, by, metric, selector)
}

// Overview is the SRE's dashboard: what the fleet of sidecars sees and how
// the sidecars themselves are.
func Overview() *dashboard.DashboardBuilder {
	return base("agentmeter-overview", "agentmeter / Overview",
		"LLM cost, tokens, latency and errors, agent and conversation lifecycle, budgets, runtime faults and the sidecars' own health.").
		WithRow(dashboard.NewRowBuilder("Cost")).
		WithPanel(single("Spend in range", "USD of LLM calls over the dashboard's time range (reported + computed).", "currencyUSD",
			q(`sum(increase(agentmeter_llm_cost_usd_total{`+llm+`}[$__range]))`, "spend"))).
		WithPanel(single("Unpriced calls in range", "LLM calls with neither a reported cost nor a price in the table: their cost is unknown, not 0. Add the model to the price table.", "short",
			q(`sum(increase(agentmeter_llm_unpriced_calls_total{`+modelSel+`}[$__range]))`, "unpriced"))).
		WithPanel(single("Cache savings in range", "What cache reads saved against the uncached input price.", "currencyUSD",
			q(`sum(increase(agentmeter_llm_cache_savings_usd_total{`+llm+`}[$__range]))`, "saved"))).
		WithPanel(single("Average cost per conversation", "Cost of the conversations that closed in the range, on average.", "currencyUSD",
			q(`sum(increase(agentmeter_conversation_cost_usd_sum{`+sel+`}[$__range])) / sum(increase(agentmeter_conversation_cost_usd_count{`+sel+`}[$__range]))`, "average"))).
		WithPanel(single("Sidecars up", "Scrapeable agentmeter sidecars.", "short",
			q(`sum(up{`+sel+`})`, "up"))).
		WithPanel(single("Active conversations", "Tracked conversations not closed.", "short",
			q(`sum(agentmeter_conversations_active{`+sel+`})`, "active"))).
		WithPanel(series("Cost by model", "USD per hour, by request model.", "currencyUSD", 12,
			q(rate("agentmeter_llm_cost_usd_total", llm, "gen_ai_request_model")+" * 3600", "{{gen_ai_request_model}}"))).
		WithPanel(series("Cost by source", "USD per hour: reported by the client, or computed from the price table.", "currencyUSD", 12,
			q(rate("agentmeter_llm_cost_usd_total", llm, "cost_source")+" * 3600", "{{cost_source}}"))).
		WithPanel(series("Unpriced calls by model", "Calls per second whose cost is unknown.", "reqps", 8,
			q(rate("agentmeter_llm_unpriced_calls_total", modelSel, "gen_ai_request_model"), "{{gen_ai_request_model}}"))).
		WithPanel(series("Cache savings by model", "USD per hour saved by cache reads.", "currencyUSD", 8,
			q(rate("agentmeter_llm_cache_savings_usd_total", llm, "gen_ai_request_model")+" * 3600", "{{gen_ai_request_model}}"))).
		WithPanel(series("Cost per conversation", "Of conversations when they close: median, 95th percentile and mean.", "currencyUSD", 8,
			q(quantile(0.5, "agentmeter_conversation_cost_usd", sel, ""), "p50"),
			q(quantile(0.95, "agentmeter_conversation_cost_usd", sel, ""), "p95"),
			q(`sum(rate(agentmeter_conversation_cost_usd_sum{`+sel+`}[$__rate_interval])) / sum(rate(agentmeter_conversation_cost_usd_count{`+sel+`}[$__rate_interval]))`, "mean"))).
		WithRow(dashboard.NewRowBuilder("Tokens")).
		WithPanel(series("Tokens by type", "Tokens per second as sent: input includes cache reads and writes, output includes reasoning.", "short", 12,
			q(rate("agentmeter_llm_tokens_total", llm, "gen_ai_token_type"), "{{gen_ai_token_type}}"))).
		WithPanel(series("Cache hit ratio by model", "Share of input tokens read from the provider's cache.", "percentunit", 12,
			q(`sum by (gen_ai_request_model) (rate(agentmeter_llm_tokens_total{`+llm+`, gen_ai_token_type="cache_read"}[$__rate_interval])) / sum by (gen_ai_request_model) (rate(agentmeter_llm_tokens_total{`+llm+`, gen_ai_token_type="input"}[$__rate_interval]))`, "{{gen_ai_request_model}}"))).
		WithPanel(series("Tokens per call by model (p95)", "95th percentile of input and output tokens per call.", "short", 12,
			q(quantile(0.95, "gen_ai_client_token_usage", llm, "gen_ai_request_model, gen_ai_token_type"), "{{gen_ai_request_model}} {{gen_ai_token_type}}"))).
		WithPanel(series("Context window utilisation (p95)", "prompt_tokens / context_window, 95th percentile by model.", "percentunit", 12,
			q(quantile(0.95, "agentmeter_llm_context_utilization_ratio", llm, "gen_ai_request_model"), "{{gen_ai_request_model}}"))).
		WithRow(dashboard.NewRowBuilder("Latency and errors")).
		WithPanel(series("LLM latency", "Duration of LLM calls: p50, p95, p99.", "s", 8,
			q(quantile(0.5, "gen_ai_client_operation_duration_seconds", llm, ""), "p50"),
			q(quantile(0.95, "gen_ai_client_operation_duration_seconds", llm, ""), "p95"),
			q(quantile(0.99, "gen_ai_client_operation_duration_seconds", llm, ""), "p99"))).
		WithPanel(series("Time to first token", "Time to the first streamed chunk: p50, p95, p99.", "s", 8,
			q(quantile(0.5, "gen_ai_client_operation_time_to_first_chunk_seconds", llm, ""), "p50"),
			q(quantile(0.95, "gen_ai_client_operation_time_to_first_chunk_seconds", llm, ""), "p95"),
			q(quantile(0.99, "gen_ai_client_operation_time_to_first_chunk_seconds", llm, ""), "p99"))).
		WithPanel(series("Error rate by error type", "Share of LLM calls that failed, by error.type.", "percentunit", 8,
			q(`sum by (error_type) (rate(gen_ai_client_operation_duration_seconds_count{`+llm+`, error_type!=""}[$__rate_interval])) / ignoring (error_type) group_left sum(rate(gen_ai_client_operation_duration_seconds_count{`+llm+`}[$__rate_interval]))`, "{{error_type}}"))).
		WithPanel(series("Calls by model", "LLM calls per second.", "reqps", 12,
			q(rate("gen_ai_client_operation_duration_seconds_count", llm, "gen_ai_request_model"), "{{gen_ai_request_model}}"))).
		WithPanel(series("Latency by model (p95)", "95th percentile duration of LLM calls by model.", "s", 12,
			q(quantile(0.95, "gen_ai_client_operation_duration_seconds", llm, "gen_ai_request_model"), "{{gen_ai_request_model}}"))).
		WithRow(dashboard.NewRowBuilder("Agents and conversations")).
		WithPanel(series("Conversations by agent state", "Tracked open conversations in each state.", "short", 8,
			q(`sum by (agent_state) (agentmeter_agent_conversations{`+agentSel+`})`, "{{agent_state}}"))).
		WithPanel(series("Status transitions", "Agent state changes per second, by new state.", "ops", 8,
			q(rate("agentmeter_agent_status_transitions_total", agentSel, "agent_state"), "{{agent_state}}"))).
		WithPanel(series("Agent errors", "Changes to the error state per second, by agent (OpenHands' saas_agent_status_errors).", "ops", 8,
			q(rate("agentmeter_agent_status_transitions_total", agentSel+`, agent_state="error"`, "gen_ai_agent_name"), "{{gen_ai_agent_name}}"))).
		WithPanel(series("Active conversations vs limit", "Open conversations against the agent server's max_concurrent_conversations.", "short", 8,
			q(`sum(agentmeter_conversations_active{`+sel+`})`, "active"),
			q(`sum(agentmeter_conversations_limit{`+sel+`})`, "limit"))).
		WithPanel(series("Conversations created by trigger", "Creations per second.", "ops", 8,
			q(rate("agentmeter_conversations_created_total", sel, "trigger"), "{{trigger}}"))).
		WithPanel(series("Conversations closed by reason", "Closes per second; evicted = over the concurrency limit.", "ops", 8,
			q(rate("agentmeter_conversations_closed_total", sel, "reason"), "{{reason}}"))).
		WithPanel(series("Session starts", "Agent session start duration (p95) by success.", "s", 8,
			q(quantile(0.95, "agentmeter_agent_session_start_duration_seconds", sel, "success"), "success={{success}}"))).
		WithPanel(series("Conversations dropped from memory", "Ledger entries dropped per second: idle, capacity (conversations.max_tracked), closed (closed_retention over).", "ops", 8,
			q(rate("agentmeter_processor_conversations_evicted_total", sel, "reason"), "{{reason}}"))).
		WithPanel(series("Conversation tokens (p95)", "Input + output tokens of a conversation when it closes.", "short", 8,
			q(quantile(0.95, "agentmeter_conversation_tokens", sel, ""), "p95"))).
		WithRow(dashboard.NewRowBuilder("Budgets and runtime faults")).
		WithPanel(series("Budget crossings", "Conversations crossing 50, 80, 100 % of their budget, per minute.", "short", 12,
			q(rate("agentmeter_budget_threshold_crossings_total", sel, "threshold")+" * 60", "{{threshold}} %"))).
		WithPanel(series("Runtime faults by kind", "Sandbox faults per minute: command timeouts, OOM kills, disconnects.", "short", 12,
			q(rate("agentmeter_runtime_faults_total", sel, "kind")+" * 60", "{{kind}}"))).
		WithRow(dashboard.NewRowBuilder("Sidecar health")).
		WithPanel(series("Events by outcome", "Events per second by payload type and outcome.", "ops", 8,
			q(rate("agentmeter_receiver_events_total", sel, "event_type, outcome"), "{{event_type}} {{outcome}}"))).
		WithPanel(series("Refused calls and panics", "gRPC calls refused or failed as a whole, by service and code; panics recovered in handlers.", "reqps", 8,
			q(rate("agentmeter_grpc_requests_refused_total", sel, "grpc_service, grpc_code"), "{{grpc_service}} {{grpc_code}}"),
			q(`sum(rate(agentmeter_grpc_panics_total{`+sel+`}[$__rate_interval]))`, "panics"))).
		WithPanel(series("Auth refusals by reason", "RPCs and TLS handshakes refused by ingest auth (receiver.auth, TLS) before any request was read: a client without the token, or with a bad certificate.", "reqps", 8,
			q(rate("agentmeter_receiver_auth_refused_total", sel, "reason"), "{{reason}}"))).
		WithPanel(series("In-flight calls and bytes", "gRPC calls in progress (against receiver.grpc.max_inflight_rpcs) and the memory of the ingest requests being applied (against max_inflight_mib), by pod.", "short", 8,
			q(`sum by (pod) (agentmeter_grpc_inflight_rpcs{`+sel+`})`, "{{pod}} calls"),
			q(`sum by (pod) (agentmeter_receiver_inflight_bytes{`+sel+`}) / 1048576`, "{{pod}} MiB"))).
		WithPanel(series("OpenHands webhook", "OpenHands agent-server feed (receiver.openhands): events per second by kind and outcome, and requests by HTTP status (401: a wrong session key; 400: malformed JSON; 413: over max_body_mib).", "ops", 8,
			q(rate("agentmeter_openhands_events_total", sel, "kind, outcome"), "{{kind}} {{outcome}}"),
			q(rate("agentmeter_openhands_requests_total", sel, "code"), "HTTP {{code}}"))).
		WithPanel(series("OTLP exports", "Exports per minute by outcome (when exporters.otlp is on).", "short", 8,
			q(rate("agentmeter_exporter_otlp_exports_total", sel, "outcome")+" * 60", "{{outcome}}"))).
		WithPanel(series("Series overflow", "LLM calls per second folded into the otel_metric_overflow series: the 2000 label sets are full.", "ops", 8,
			q(`sum(rate(agentmeter_processor_series_overflow_total{`+sel+`}[$__rate_interval]))`, "overflow"))).
		WithPanel(series("Price table and auth file reloads", "Reloads per minute by outcome (a failed one keeps what was in service), and the price table version in use.", "short", 8,
			q(rate("agentmeter_pricing_reloads_total", sel, "outcome")+" * 60", "prices {{outcome}}"),
			q(rate("agentmeter_receiver_auth_reloads_total", sel, "file, outcome")+" * 60", "{{file}} {{outcome}}"),
			q(`count by (version) (agentmeter_pricing_table_info{`+sel+`})`, "{{version}}"))).
		WithPanel(series("Memory", "Resident memory and Go heap in use, by pod; the Go memory limit.", "bytes", 8,
			q(`sum by (pod) (process_resident_memory_bytes{`+sel+`})`, "{{pod}} RSS"),
			q(`sum by (pod) (go_memstats_heap_inuse_bytes{`+sel+`})`, "{{pod}} heap"),
			q(`max by (pod) (go_gc_gomemlimit_bytes{`+sel+`})`, "{{pod}} GOMEMLIMIT"))).
		WithPanel(series("Durable state", "Disk space of storage.directory by pod, and failed state writes by reason (each answered UNAVAILABLE or RESOURCE_EXHAUSTED, nothing applied).", "bytes", 8,
			q(`sum by (pod) (agentmeter_storage_size_bytes{`+sel+`})`, "{{pod}} size"),
			q(rate("agentmeter_storage_write_failures_total", sel, "reason")+" * 60", "failures/min {{reason}}"))).
		WithPanel(series("Saturated sums", "Token sums held at their maximum instead of wrapping, per minute.", "short", 8,
			q(`sum(rate(agentmeter_processor_saturations_total{`+sel+`}[$__rate_interval])) * 60`, "saturations"))).
		WithPanel(series("Price table entries", "Entries of the price table in use, by state: priced, skipped (not a chat model), unusable (a bad value: that model stays unpriced), conflicting.", "short", 8,
			q(`max by (state) (agentmeter_pricing_table_entries{`+sel+`})`, "{{state}}"))).
		WithPanel(series("CPU", "CPU cores used, by pod.", "short", 8,
			q(`sum by (pod) (rate(process_cpu_seconds_total{`+sel+`}[$__rate_interval]))`, "{{pod}}"))).
		WithPanel(series("Goroutines and open files", "By pod.", "short", 8,
			q(`sum by (pod) (go_goroutines{`+sel+`})`, "{{pod}} goroutines"),
			q(`sum by (pod) (process_open_fds{`+sel+`})`, "{{pod}} fds")))
}

// Agents is the per-agent view: one agent's (or several agents') cost,
// tokens, models, latency, errors and states.
func Agents() *dashboard.DashboardBuilder {
	return base("agentmeter-agents", "agentmeter / Agents",
		"Per agent: cost, tokens and cache, models, latency and time to first token, errors, states and transitions. Pick agents with $agent.").
		WithRow(dashboard.NewRowBuilder("Cost and tokens")).
		WithPanel(single("Spend in range", "USD of the selected agents' LLM calls.", "currencyUSD",
			q(`sum(increase(agentmeter_llm_cost_usd_total{`+llm+`}[$__range]))`, "spend"))).
		WithPanel(single("Calls in range", "LLM calls of the selected agents.", "short",
			q(`sum(increase(gen_ai_client_operation_duration_seconds_count{`+llm+`}[$__range]))`, "calls"))).
		WithPanel(single("Failed calls in range", "LLM calls that failed.", "short",
			q(`sum(increase(gen_ai_client_operation_duration_seconds_count{`+llm+`, error_type!=""}[$__range]))`, "failed"))).
		WithPanel(series("Cost by agent", "USD per hour.", "currencyUSD", 12,
			q(rate("agentmeter_llm_cost_usd_total", llm, "gen_ai_agent_name")+" * 3600", "{{gen_ai_agent_name}}"))).
		WithPanel(series("Cost by agent and model", "USD per hour.", "currencyUSD", 12,
			q(rate("agentmeter_llm_cost_usd_total", llm, "gen_ai_agent_name, gen_ai_request_model")+" * 3600", "{{gen_ai_agent_name}} {{gen_ai_request_model}}"))).
		WithPanel(series("Tokens by agent and type", "Tokens per second.", "short", 12,
			q(rate("agentmeter_llm_tokens_total", llm, "gen_ai_agent_name, gen_ai_token_type"), "{{gen_ai_agent_name}} {{gen_ai_token_type}}"))).
		WithPanel(series("Cache hit ratio by agent", "Share of input tokens read from cache.", "percentunit", 12,
			q(`sum by (gen_ai_agent_name) (rate(agentmeter_llm_tokens_total{`+llm+`, gen_ai_token_type="cache_read"}[$__rate_interval])) / sum by (gen_ai_agent_name) (rate(agentmeter_llm_tokens_total{`+llm+`, gen_ai_token_type="input"}[$__rate_interval]))`, "{{gen_ai_agent_name}}"))).
		WithPanel(series("Cache savings by agent", "USD per hour saved by cache reads.", "currencyUSD", 12,
			q(rate("agentmeter_llm_cache_savings_usd_total", llm, "gen_ai_agent_name")+" * 3600", "{{gen_ai_agent_name}}"))).
		WithPanel(series("Calls by agent and provider", "LLM calls per second.", "reqps", 12,
			q(rate("gen_ai_client_operation_duration_seconds_count", llm, "gen_ai_agent_name, gen_ai_provider_name"), "{{gen_ai_agent_name}} {{gen_ai_provider_name}}"))).
		WithRow(dashboard.NewRowBuilder("Latency and errors")).
		WithPanel(series("Latency by agent (p50, p95, p99)", "Duration of LLM calls.", "s", 12,
			q(quantile(0.5, "gen_ai_client_operation_duration_seconds", llm, "gen_ai_agent_name"), "{{gen_ai_agent_name}} p50"),
			q(quantile(0.95, "gen_ai_client_operation_duration_seconds", llm, "gen_ai_agent_name"), "{{gen_ai_agent_name}} p95"),
			q(quantile(0.99, "gen_ai_client_operation_duration_seconds", llm, "gen_ai_agent_name"), "{{gen_ai_agent_name}} p99"))).
		WithPanel(series("Time to first token by model (p95)", "Streaming calls.", "s", 12,
			q(quantile(0.95, "gen_ai_client_operation_time_to_first_chunk_seconds", llm, "gen_ai_request_model"), "{{gen_ai_request_model}}"))).
		WithPanel(series("Errors by agent and type", "Failed LLM calls per second.", "reqps", 12,
			q(rate("gen_ai_client_operation_duration_seconds_count", llm+`, error_type!=""`, "gen_ai_agent_name, error_type"), "{{gen_ai_agent_name}} {{error_type}}"))).
		WithPanel(series("Context window utilisation by agent (p95)", "prompt_tokens / context_window.", "percentunit", 12,
			q(quantile(0.95, "agentmeter_llm_context_utilization_ratio", llm, "gen_ai_agent_name"), "{{gen_ai_agent_name}}"))).
		WithRow(dashboard.NewRowBuilder("States")).
		WithPanel(series("Conversations by agent and state", "Tracked open conversations.", "short", 12,
			q(`sum by (gen_ai_agent_name, agent_state) (agentmeter_agent_conversations{`+agentSel+`})`, "{{gen_ai_agent_name}} {{agent_state}}"))).
		WithPanel(series("Transitions by agent and state", "State changes per second.", "ops", 12,
			q(rate("agentmeter_agent_status_transitions_total", agentSel, "gen_ai_agent_name, agent_state"), "{{gen_ai_agent_name}} {{agent_state}}")))
}

// Files returns the JSON file of every dashboard, keyed by file name.
func Files() (map[string][]byte, error) {
	ds, err := Dashboards()
	if err != nil {
		return nil, err
	}
	files := map[string][]byte{}
	for name, d := range ds {
		b, err := json.MarshalIndent(d, "", "  ")
		if err != nil {
			return nil, fmt.Errorf("encode dashboard %s: %w", name, err)
		}
		files[name+".json"] = append(b, '\n')
	}
	return files, nil
}
