#!/usr/bin/env bash
# The project's test command (README: building and testing; `make test`).
# Installs what is missing, then runs every check CI runs, in order:
# gofmt, go vet, generated-code check, race tests (unit and end-to-end),
# the Python client (wheel and pytest against the real binary), and a short
# fuzz smoke. Idempotent: a second run installs nothing.
#
# Environment: FUZZTIME (default 5s) is the fuzz time per target; CI=true
# makes the end-to-end tests fail, not skip, when a tool is missing.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

PROTOC_GEN_GO_VERSION=v1.36.12
PROTOC_GEN_GO_GRPC_VERSION=v1.6.2
KUBECTL_VALIDATE_VERSION=v0.0.4
STATICCHECK_VERSION=v0.8.2
HELM_VERSION=v3.22.0

section() { printf '\n==> %s\n' "$*"; }
die() { printf 'test.sh: %s\n' "$*" >&2; exit 1; }

if ! command -v go >/dev/null 2>&1 && [ -x /usr/local/go/bin/go ]; then
	export PATH="/usr/local/go/bin:$PATH"
fi
command -v go >/dev/null 2>&1 || die "go is not on PATH"
gobin="$(go env GOPATH)/bin"
export PATH="$gobin:$PATH"

section "tools"
missing=()
command -v prometheus >/dev/null 2>&1 || missing+=(prometheus)
command -v promtool >/dev/null 2>&1 || missing+=(promtool)
command -v protoc >/dev/null 2>&1 || missing+=(protoc)
[ -f /usr/include/google/protobuf/timestamp.proto ] || missing+=(google/protobuf/timestamp.proto)
# e2e kills the collector's listening socket with `ss -K` (iproute2).
command -v ss >/dev/null 2>&1 || missing+=(ss)
if [ "${#missing[@]}" -gt 0 ]; then
	echo "missing: ${missing[*]}; installing the Debian packages"
	sudo=()
	if [ "$(id -u)" -ne 0 ]; then
		command -v sudo >/dev/null 2>&1 || die "not root and no sudo: install prometheus protobuf-compiler libprotobuf-dev iproute2 yourself"
		sudo=(sudo)
	fi
	"${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update
	"${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
		prometheus protobuf-compiler libprotobuf-dev iproute2
fi

# The generated code records the plugin versions: install exactly these.
plugin_version() { "$gobin/$1" --version 2>/dev/null | awk '{print $NF}'; }
if [ "$(plugin_version protoc-gen-go)" != "$PROTOC_GEN_GO_VERSION" ]; then
	echo "installing protoc-gen-go $PROTOC_GEN_GO_VERSION"
	GOBIN="$gobin" go install "google.golang.org/protobuf/cmd/protoc-gen-go@$PROTOC_GEN_GO_VERSION"
fi
if [ "v$(plugin_version protoc-gen-go-grpc)" != "$PROTOC_GEN_GO_GRPC_VERSION" ]; then
	echo "installing protoc-gen-go-grpc $PROTOC_GEN_GO_GRPC_VERSION"
	GOBIN="$gobin" go install "google.golang.org/grpc/cmd/protoc-gen-go-grpc@$PROTOC_GEN_GO_GRPC_VERSION"
fi
# deploy/ tests validate the Kubernetes manifests offline with it.
if [ "$(go version -m "$gobin/kubectl-validate" 2>/dev/null | awk '$1 == "mod" {print $3}')" != "$KUBECTL_VALIDATE_VERSION" ]; then
	echo "installing kubectl-validate $KUBECTL_VALIDATE_VERSION"
	GOBIN="$gobin" go install "sigs.k8s.io/kubectl-validate@$KUBECTL_VALIDATE_VERSION"
fi
# deploy/ tests lint and render the Helm chart with it.
if [ "$(go version -m "$gobin/helm" 2>/dev/null | awk '$1 == "mod" {print $3}')" != "$HELM_VERSION" ]; then
	echo "installing helm $HELM_VERSION"
	GOBIN="$gobin" go install "helm.sh/helm/v3/cmd/helm@$HELM_VERSION"
fi
# The linter run after go vet.
if [ "$(go version -m "$gobin/staticcheck" 2>/dev/null | awk '$1 == "mod" {print $3}')" != "$STATICCHECK_VERSION" ]; then
	echo "installing staticcheck $STATICCHECK_VERSION"
	GOBIN="$gobin" go install "honnef.co/go/tools/cmd/staticcheck@$STATICCHECK_VERSION"
fi
go version
protoc --version
prometheus --version 2>&1 | head -n 1
echo "protoc-gen-go $(plugin_version protoc-gen-go), protoc-gen-go-grpc $(plugin_version protoc-gen-go-grpc)"
echo "kubectl-validate $KUBECTL_VALIDATE_VERSION, staticcheck $STATICCHECK_VERSION, helm $HELM_VERSION"

# clients/python: a venv with the pinned grpcio-tools (make proto) and the
# Python tests' dependencies (requirements-dev.txt); pip's cache keeps a rerun short.
section "python environment (clients/python/.venv)"
command -v "${PYTHON:-python3}" >/dev/null 2>&1 || die "${PYTHON:-python3} is not on PATH: the Python client needs Python >= 3.10"
make --no-print-directory py-venv PYTHON="${PYTHON:-python3}"
clients/python/.venv/bin/python --version

section "gofmt"
# Tracked and new (not ignored) files; generated code is protoc's business.
mapfile -t gofiles < <(git ls-files --cached --others --exclude-standard -- '*.go' | grep -v '\.pb\.go$' || true)
if [ "${#gofiles[@]}" -gt 0 ]; then
	unformatted="$(gofmt -l "${gofiles[@]}")"
	[ -z "$unformatted" ] || die "gofmt needed on: $unformatted"
fi
echo "ok"

section "go vet"
go vet ./...

section "staticcheck"
staticcheck ./...
echo "ok"

section "generated code (make proto-check)"
make --no-print-directory proto-check

section "fleet gateway collector (scripts/otelcol.sh: OpenTelemetry Collector Builder, built once and cached)"
# e2e/fleet_test.go runs it; a failed build fails here.
AGENTMETER_OTELCOL="$(./scripts/otelcol.sh)"
export AGENTMETER_OTELCOL
echo "$AGENTMETER_OTELCOL"

section "tests (race detector, unit and end-to-end)"
go test -race -count=1 ./...

section "python client (clients/python): wheel, then pytest against the built collector"
# litellm would fetch its price map from the internet at import.
export LITELLM_LOCAL_MODEL_COST_MAP=True
py="$PWD/clients/python/.venv/bin/python"
rm -rf clients/python/dist
(cd clients/python && "$py" -m mypy src/agentmeter)  # py.typed promises types: mypy --strict (pyproject.toml)
"$py" -m build --wheel --outdir clients/python/dist clients/python >/dev/null
ls clients/python/dist
# The tests import the installed wheel, not the source tree.
"$py" -m pip install -q --disable-pip-version-check --force-reinstall --no-deps clients/python/dist/agentmeter-*.whl
rc=0
(cd clients/python && "$py" -m pytest -q -p no:cacheprovider) || rc=$?
[ "$rc" -ne 5 ] || die "pytest collected no tests in clients/python"
[ "$rc" -eq 0 ] || die "python client tests failed (pytest exit $rc)"

section "load benchmark harness (scripts/loadbench_test.sh: 1 s loads of the real binaries)"
# One CI run of it failed with no output (before it printed loadbench's
# errors), and no run since has, in CI or beside CPU-burning loops; until a
# failure shows its cause, a failure is reported with its output and the
# check runs once more: two failures fail the suite.
if ! ./scripts/loadbench_test.sh; then
	echo "test.sh: scripts/loadbench_test.sh failed (its output above); running it once more" >&2
	./scripts/loadbench_test.sh
fi

section "fuzz smoke (${FUZZTIME:-5s} per target)"
./scripts/fuzz_test.sh
./scripts/fuzz.sh "${FUZZTIME:-5s}"

section "all checks passed"
