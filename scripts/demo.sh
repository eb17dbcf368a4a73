#!/usr/bin/env bash
# make demo: the collector on deploy/demo/collector.yaml, a Prometheus that
# scrapes it with the alert rules loaded, and `loadgen --scenario agents`
# for DEMO_DURATION (default 10m). Prints the URLs; Ctrl-C stops everything.
# Import deploy/grafana/dashboards/*.json into a Grafana pointed at the
# Prometheus URL to see the dashboards.
#
# Ports: DEMO_GRPC (4320), DEMO_HTTP (9464), DEMO_PROM (9090), on 127.0.0.1.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

duration="${DEMO_DURATION:-10m}"
grpc="127.0.0.1:${DEMO_GRPC:-4320}"
http="127.0.0.1:${DEMO_HTTP:-9464}"
prom="127.0.0.1:${DEMO_PROM:-9090}"
command -v prometheus >/dev/null 2>&1 || { echo "demo.sh: prometheus not found (apt-get install prometheus, or run ./scripts/test.sh once)" >&2; exit 1; }

dir="$(mktemp -d)"
pids=()
cleanup() {
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
	wait 2>/dev/null || true
	rm -rf "$dir"
}
trap cleanup EXIT INT TERM

go build -o "$dir/collector" ./cmd/collector
go build -o "$dir/loadgen" ./cmd/loadgen
AGENTMETER_GRPC_ENDPOINT="$grpc" AGENTMETER_HTTP_ENDPOINT="$http" \
	"$dir/collector" --config deploy/demo/collector.yaml &
pids+=($!)

cp deploy/prometheus/agentmeter-rules.yaml "$dir/"
sed "s|127.0.0.1:9464|$http|" deploy/demo/prometheus.yml >"$dir/prometheus.yml"
prometheus --config.file "$dir/prometheus.yml" --storage.tsdb.path "$dir/data" \
	--web.listen-address "$prom" --log.level warn &
pids+=($!)

cat <<MSG

agentmeter demo ($duration of loadgen --scenario agents)
  Prometheus:  http://$prom/graph?g0.expr=sum+by+(gen_ai_request_model)+(rate(agentmeter_llm_cost_usd_total%5B1m%5D))*3600
  alerts:      http://$prom/alerts
  /metrics:    http://$http/metrics
  dashboards:  deploy/grafana/dashboards/*.json (import into Grafana with this Prometheus as data source)

MSG
"$dir/loadgen" --scenario agents --target "$grpc" --duration "$duration"
