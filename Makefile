# Every developer and CI entry point of Gavel. `make help` lists them.

SHELL := /bin/bash
CARGO ?= cargo
TOOLS := $(CURDIR)/tools
export PATH := $(TOOLS)/bin:$(PATH)
# Keep test output readable and builds light on 2-core machines.
export CARGO_TERM_COLOR ?= never
export RUST_BACKTRACE ?= 1

.PHONY: help test lint fmt fmt-check clippy test-rust bench build release check-system-deps tools chart-check clean

help: ## List the targets
	@grep -E '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk -F':.*?## ' '{printf "  %-18s %s\n", $$1, $$2}'

test: check-system-deps lint test-rust ## Everything CI runs: format, clippy, all tests, chart checks
	@echo "make test: all checks passed"

lint: fmt-check clippy ## Formatting and clippy (warnings are errors)

fmt: ## Format the code
	$(CARGO) fmt --all

fmt-check:
	$(CARGO) fmt --all --check

clippy:
	$(CARGO) clippy --workspace --all-targets --all-features --locked -- -D warnings

test-rust: ## Unit, integration and local end-to-end tests (real Redis and PostgreSQL)
	$(CARGO) test --workspace --all-features --locked --no-fail-fast

build: ## Debug build of every binary
	$(CARGO) build --workspace --locked

release: ## Optimised build of every binary
	$(CARGO) build --workspace --release --locked

bench: check-system-deps ## Place-bid throughput: engine client vs raw redis-benchmark EVALSHA
	$(CARGO) bench -p gavel-engine --bench place_bid --locked

check-system-deps: ## Redis and PostgreSQL server binaries (installed with apt-get when root)
	@./scripts/system-deps.sh

clean: ## Remove build output and fetched tools
	$(CARGO) clean
	rm -rf $(TOOLS)
