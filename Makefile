# agentmeter developer targets. `make help` lists them.
GO        ?= go
GOBIN     ?= $(shell $(GO) env GOPATH)/bin
PROTOC    ?= protoc
PROTO_DIR := proto
PROTO_SRC := $(wildcard $(PROTO_DIR)/agentmeter/v1/*.proto)
PYTHON    ?= python3
PY_DIR    := clients/python
PY_VENV   := $(PY_DIR)/.venv
PY_GEN    := $(PY_DIR)/src/agentmeter/v1

.PHONY: help build proto proto-check py-venv fmt vet test test-race bench fuzz loadbench run demo dashboards

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

build: ## build the collector and the load generator into bin/
	CGO_ENABLED=0 $(GO) build -trimpath -o bin/collector ./cmd/collector
	CGO_ENABLED=0 $(GO) build -trimpath -o bin/loadgen ./cmd/loadgen

run: ## run the collector on the default config.yaml
	$(GO) run ./cmd/collector --config config.yaml

py-venv: $(PY_VENV)/.installed ## the venv of clients/python with the pinned tools of requirements-dev.txt

$(PY_VENV)/.installed: $(PY_DIR)/requirements-dev.txt
	$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 10) and "clients/python needs Python >= 3.10")'
	$(PYTHON) -m venv $(PY_VENV)
	$(PY_VENV)/bin/python -m pip install -q --disable-pip-version-check -r $(PY_DIR)/requirements-dev.txt
	touch $@

proto: $(PY_VENV)/.installed ## regenerate the Go and Python code from proto/
	PATH="$(GOBIN):$$PATH" $(PROTOC) -I $(PROTO_DIR) \
		--go_out=$(PROTO_DIR) --go_opt=paths=source_relative \
		--go-grpc_out=$(PROTO_DIR) --go-grpc_opt=paths=source_relative \
		$(PROTO_SRC)
	$(PY_VENV)/bin/python -m grpc_tools.protoc -I $(PROTO_DIR) \
		--python_out=$(PY_DIR)/src --pyi_out=$(PY_DIR)/src --grpc_python_out=$(PY_DIR)/src \
		$(PROTO_SRC)

proto-check: proto ## fail when the committed generated code is not current
	@git diff --exit-code -- $(PROTO_DIR) $(PY_GEN) || { echo "generated code is stale: run make proto and commit"; exit 1; }
	@test -z "$$(git status --porcelain -- $(PROTO_DIR) $(PY_GEN))" || { git status --porcelain -- $(PROTO_DIR) $(PY_GEN); echo "untracked generated files: run make proto and commit"; exit 1; }

fmt: ## gofmt the tree
	gofmt -w $$(git ls-files '*.go' | grep -v '\.pb\.go$$')

vet: ## gofmt check and go vet
	@out=$$(gofmt -l $$(git ls-files '*.go' | grep -v '\.pb\.go$$')); test -z "$$out" || { echo "gofmt needed: $$out"; exit 1; }
	$(GO) vet ./...

test: ## everything CI runs: tools, vet, proto check, race tests incl. end-to-end
	./scripts/test.sh

test-race: ## unit and end-to-end tests under the race detector
	$(GO) test -race -count=1 ./...

bench: ## per-event benchmarks
	$(GO) test -run '^$$' -bench . -benchmem ./processor/ ./receiver/ ./pricing/ ./client/

fuzz: ## run each fuzz target for FUZZTIME (default 20s)
	./scripts/fuzz.sh $${FUZZTIME:-20s}

loadbench: build ## whole-process throughput: agentmeter vs a do-nothing server
	./scripts/loadbench.sh

demo: ## collector + Prometheus + loadgen --scenario agents (DEMO_DURATION, default 10m); prints the URLs
	./scripts/demo.sh

dashboards: ## regenerate deploy/grafana/dashboards/*.json from deploy/grafana (a test fails when they are stale)
	$(GO) generate ./deploy/grafana
