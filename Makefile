# agentmem developer commands. `make help` lists them.
.DEFAULT_GOAL := help
SHELL := /bin/bash

VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# What the e2e tier's real node needs (a kubelet's runtime, image building).
E2E_PACKAGES := containerd runc containernetworking-plugins buildah debootstrap iptables

help: ## List the targets
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | \
	  awk 'BEGIN {FS = ":.*## "}; {printf "  \033[36m%-12s\033[0m %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	@echo "==> installing agentmem and its test tools into $(VENV)"
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test,bench]'
	@touch $(STAMP)

install: $(STAMP) ## Install agentmem (editable) with its test tools into .venv

lint: $(STAMP) ## ruff (lint and format check), mypy strict, import-linter layers
	$(BIN)/ruff check operator tests benchmarks scripts examples
	$(BIN)/ruff format --check operator tests benchmarks scripts examples
	$(BIN)/mypy
	$(BIN)/lint-imports

unit: $(STAMP) ## The unit tier only (no servers)
	$(BIN)/pytest tests/unit

testenv: ## Build/fetch the test servers (control plane, Kafka, Redis, PostgreSQL); cached in ~/.cache
	bash testenv/build.sh
	bash testenv/kafka/fetch.sh >/dev/null
	bash testenv/packages.sh $(E2E_PACKAGES)

test: lint testenv ## Everything: lint, types, layers and every test tier (starts its servers)
	$(BIN)/pytest

bench: $(STAMP) testenv ## Run the benchmarks (each prints a JSON line at the end)
	bash testenv/packages.sh wrk  # the HTTP load generator
	$(BIN)/python benchmarks/ring.py
	$(BIN)/python benchmarks/node.py
	$(BIN)/python benchmarks/bootstrap.py
	$(BIN)/python benchmarks/dedup.py
	$(BIN)/python benchmarks/client.py
	$(BIN)/python benchmarks/security.py
	$(BIN)/python benchmarks/search.py

operator-scale: $(STAMP) testenv ## 500 clusters under one operator on a real control plane (about 15 min); one JSON line
	$(BIN)/python benchmarks/operator_scale.py --clusters 500

chaos: $(STAMP) testenv ## 100 faults (20 of each type) under load on real pods; prints one JSON line
	AGENTMEM_CHAOS_PER_TYPE=20 $(BIN)/pytest tests/e2e/test_chaos.py -s -q \
	  | grep -E '^\{"faults"'

BASE ?= HEAD~1
bench-compare: $(STAMP) testenv ## node.py of this tree and of BASE (a git revision), interleaved
	bash testenv/packages.sh wrk
	$(BIN)/python benchmarks/interleave.py --base $(BASE) --runs 3

manifests: $(STAMP) ## Regenerate crds/ from the model, then the chart's CRDs, manifests/ and the bundle
	$(BIN)/agentmem crd > crds/agentmem.io_agentmemoryclusters.yaml
	bash testenv/build.sh >/dev/null  # the pinned helm renders manifests/base from the chart
	$(BIN)/python scripts/generate_manifests.py

.PHONY: help install lint unit testenv test bench bench-compare chaos manifests
