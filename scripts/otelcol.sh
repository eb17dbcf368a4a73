#!/usr/bin/env bash
# Builds the fleet gateway collector of deploy/otelcol/builder-config.yaml
# with the OpenTelemetry Collector Builder, once: the binary is cached under
# ${AGENTMETER_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/agentmeter}/otelcol-<hash
# of the manifest and builder version>/otelcol-agentmeter and reused while
# the manifest is unchanged. Prints the binary's path on stdout.
#
# The build takes ~5 minutes on 2 cores (nice'd); OTELCOL_BUILD_TIMEOUT
# (default 1800s) bounds it. With --cached, it only prints the path of a
# binary already built, and fails when there is none.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

BUILDER_VERSION=v0.165.0
manifest=deploy/otelcol/builder-config.yaml
gobin="$(go env GOPATH)/bin"

if [ "$(go version -m "$gobin/builder" 2>/dev/null | awk '$1 == "mod" {print $3}')" != "$BUILDER_VERSION" ]; then
	echo "otelcol.sh: installing the OpenTelemetry Collector Builder $BUILDER_VERSION" >&2
	GOBIN="$gobin" go install "go.opentelemetry.io/collector/cmd/builder@$BUILDER_VERSION"
fi

cache="${AGENTMETER_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/agentmeter}"
key="$({ cat "$manifest"; echo "$BUILDER_VERSION"; go env GOVERSION; } | sha256sum | cut -c1-16)"
dir="$cache/otelcol-$key"
bin="$dir/otelcol-agentmeter"
if [ ! -x "$bin" ] && [ "${1:-}" = "--cached" ]; then
	echo "otelcol.sh: no gateway collector built yet for this manifest: run scripts/otelcol.sh" >&2
	exit 1
fi
if [ ! -x "$bin" ]; then
	echo "otelcol.sh: building $manifest into $dir (a few minutes, once)" >&2
	work="$(mktemp -d)"
	trap 'rm -rf "$work"' EXIT
	sed "s|output_path: .*|output_path: $work/dist|" "$manifest" >"$work/builder-config.yaml"
	timeout "${OTELCOL_BUILD_TIMEOUT:-1800}" nice -n 10 "$gobin/builder" --config "$work/builder-config.yaml" >"$work/build.log" 2>&1 ||
		{ tail -n 40 "$work/build.log" >&2; echo "otelcol.sh: build failed" >&2; exit 1; }
	mkdir -p "$dir"
	mv "$work/dist/otelcol-agentmeter" "$bin.tmp" && mv "$bin.tmp" "$bin"
fi
echo "$bin"
