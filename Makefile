# adaptflow — every target creates/updates .venv on demand, so any target works on a fresh clone.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PROFILE ?= default
PORT ?= 5000
SET ?=
PYTEST_ARGS ?=

# tools keep their state inside the project; no telemetry, nothing downloads at run time
export PREFECT_HOME := $(CURDIR)/.prefect
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export DO_NOT_TRACK := true
export PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS := 90
export MLFLOW_DISABLE_TELEMETRY := true
export DVC_SITE_CACHE_DIR := $(CURDIR)/.dvc/site-cache
export MPLCONFIGDIR := $(CURDIR)/.cache/matplotlib
export PATH := $(CURDIR)/$(BIN):$(PATH)

.DEFAULT_GOAL := help

.PHONY: help
help: ## list the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  \033[1m%-14s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)
	@echo "  variables: PROFILE=default|smoke  SET='ae.epochs=3 ae.lr=0.01'  PORT=5000"

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e ".[dev]"
	$(BIN)/python -m pip check
	@touch $(STAMP)

.PHONY: setup
setup: $(STAMP) ## create/update .venv (re-installs only when pyproject.toml changes)

.PHONY: data
data: $(STAMP) ## prepare the datasets (dvc repro prepare -> data/prepared/)
	$(BIN)/dvc repro prepare

.PHONY: pipeline
pipeline: data ## run the pipeline (PROFILE=smoke for the ~1 min version; SET='k=v ...' overrides)
	$(BIN)/adaptflow run --set profile=$(PROFILE) $(foreach s,$(SET),--set $(s)) $(if $(CI),--no-progress,)

.PHONY: repro
repro: $(STAMP) ## dvc repro: prepare + the pipeline stage (writes reports/metrics.json)
	$(BIN)/dvc repro

.PHONY: test
test: $(STAMP) ## run the test suite (slow tests excluded)
	$(BIN)/python -m pytest -n 2 $(PYTEST_ARGS)

.PHONY: test-slow
test-slow: $(STAMP) ## run only the slow tests
	$(BIN)/python -m pytest -m slow $(PYTEST_ARGS)

.PHONY: bench
bench: bench-pretrain ## run every benchmark

.PHONY: bench-pretrain
bench-pretrain: data ## greedy vs random init over label fractions x seeds (default profile), printed table
	$(BIN)/python -m bench.pretrain_sweep $(foreach s,$(SET),--set $(s))

.PHONY: ui
ui: $(STAMP) ## serve the MLflow UI on http://127.0.0.1:5000 (PORT=... to change)
	@mkdir -p mlruns/artifacts
	$(BIN)/mlflow ui --backend-store-uri sqlite:///mlruns/mlflow.db \
		--default-artifact-root ./mlruns/artifacts --host 127.0.0.1 --port $(PORT)

.PHONY: lint
lint: $(STAMP) ## ruff check + format check
	$(BIN)/ruff check src flows tests bench
	$(BIN)/ruff format --check src flows tests bench

.PHONY: format
format: $(STAMP) ## ruff fix + format
	$(BIN)/ruff check --fix src flows tests bench
	$(BIN)/ruff format src flows tests bench

.PHONY: clean
clean: ## remove run outputs and caches (keeps .venv; `make distclean` removes it too)
	rm -rf mlruns/mlflow.db mlruns/artifacts .prefect data/prepared reports .dvc/cache .dvc/tmp .dvc/site-cache .cache \
		.pytest_cache .ruff_cache
	find . -name __pycache__ -type d -prune -not -path './$(VENV)/*' -exec rm -rf {} +

.PHONY: distclean
distclean: clean ## clean + remove .venv
	rm -rf $(VENV)
