# adaptflow — every target creates/updates .venv on demand, so any target works on a fresh clone.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PROFILE ?= default
PORT ?= 5000
PREFECT_PORT ?= 4200
SET ?=
PYTEST_ARGS ?=
REMOTE ?=
TRACKING_PORT ?= 5001
PG_PORT ?= 5433

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
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  \033[1m%-16s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)
	@echo "  variables: PROFILE=default|smoke  SET='ae.epochs=3 ae.lr=0.01'  PORT=5000  PREFECT_PORT=4200  REMOTE=<dvc remote>  TRACKING_PORT=5001  PG_PORT=5433"
	@echo "  environment: MLFLOW_TRACKING_URI=http://host:port sends runs to a server instead of mlruns/"

$(STAMP): pyproject.toml constraints.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e ".[dev]" -c constraints.txt
	$(BIN)/python -m pip check
	@touch $(STAMP)

.PHONY: constraints
constraints: ## re-pin constraints.txt to the current .venv (after changing pyproject.toml's pins)
	$(BIN)/python -m pip install -q -e ".[dev]"
	$(BIN)/python -m pip check
	@{ sed -n '1,4p' constraints.txt; $(BIN)/python -m pip freeze --exclude-editable | grep -v '^adaptflow'; } > constraints.txt.new
	mv constraints.txt.new constraints.txt

.PHONY: setup
setup: $(STAMP) ## create/update .venv (re-installs only when pyproject.toml changes)

.PHONY: data
data: $(STAMP) ## prepare the datasets (dvc repro prepare -> data/prepared/)
	$(BIN)/dvc repro prepare

# data-push / data-pull: the DVC remote REMOTE=name, else the default one (`dvc remote add -d`)
DVC_REMOTE_ARG = $(if $(REMOTE),-r $(REMOTE),)
define need_dvc_remote
	@if [ -z "$(REMOTE)" ] && ! $(BIN)/dvc remote default >/dev/null 2>&1; then \
	  remotes="$$($(BIN)/dvc remote list | awk '{print $$1}' | xargs)"; \
	  if [ -n "$$remotes" ]; then \
	    echo "no default DVC remote: pass REMOTE=NAME (configured: $$remotes)" \
	      "or set one with 'dvc remote default NAME'" >&2; \
	  else \
	    echo "no DVC remote configured: add one with 'dvc remote add -d NAME URL'" \
	      "(README: Sharing the prepared data)" >&2; \
	  fi; \
	  exit 2; \
	fi
endef

.PHONY: data-push
data-push: data ## push data/prepared to the DVC remote (REMOTE=name, else the default remote)
	$(need_dvc_remote)
	$(BIN)/dvc push $(DVC_REMOTE_ARG)

.PHONY: data-pull
data-pull: $(STAMP) ## fetch data/prepared from the DVC remote instead of preparing it (REMOTE=name)
	$(need_dvc_remote)
	$(BIN)/dvc pull $(DVC_REMOTE_ARG)

.PHONY: pipeline
pipeline: data ## run the pipeline (PROFILE=smoke for the ~1 min version; SET='k=v ...' overrides)
	$(BIN)/adaptflow run --set profile=$(PROFILE) $(foreach s,$(SET),--set $(s)) $(if $(CI),--no-progress,)

.PHONY: repro
repro: $(STAMP) ## dvc repro: prepare + the pipeline stage (writes reports/metrics-<profile>.json)
	$(BIN)/dvc repro

.PHONY: test
test: $(STAMP) ## run the test suite (slow tests excluded)
	$(BIN)/python -m pytest -n 2 $(PYTEST_ARGS)

.PHONY: test-slow
test-slow: $(STAMP) ## run only the slow tests
	$(BIN)/python -m pytest -m slow $(PYTEST_ARGS)

.PHONY: bench
bench: bench-trainer bench-pipeline bench-ae bench-pretrain bench-transfer bench-da bench-gan bench-seq ## run every benchmark (hours: bench-da alone is 7 pairs of 12-70 min; PAIRS= splits it, e.g. over two checkouts with OMP_NUM_THREADS=1)

.PHONY: bench-all
bench-all: bench bench-results ## every benchmark, then bench/results/REPORT.md and the README's Results section

.PHONY: bench-results
bench-results: $(STAMP) ## collect bench/results/*.md (+ published numbers) into REPORT.md and the README's Results section
	$(BIN)/python -m bench.collect

.PHONY: bench-pipeline
bench-pipeline: data ## orchestration overhead vs a plain loop, cache warm/cold, peak RSS, scaling plot (~1.5 h: 3 pairs on default; PIPELINE_PAIRS=5 for more)
	$(BIN)/python -m bench.pipeline_overhead $(if $(PIPELINE_PAIRS),--pairs $(PIPELINE_PAIRS),)

.PHONY: bench-ae
bench-ae: data ## the ae stage with the validation lambda sweep and every anomaly copy (profile bench)
	$(BIN)/python -m bench.ae_sweep $(foreach s,$(SET),--set $(s))

.PHONY: bench-transfer
bench-transfer: data ## source -> features -> finetune, the full sweep (profile bench), printed tables
	$(BIN)/python -m bench.transfer_sweep $(foreach s,$(SET),--set $(s))

.PHONY: bench-da
bench-da: data ## every DA method x pair x 3 seeds (profile bench), table beside the peer numbers (PAIRS=a,b: some)
	$(BIN)/python -m bench.da_sweep $(foreach s,$(SET),--set $(s)) $(if $(PAIRS),--pairs $(PAIRS),)

.PHONY: bench-trainer
bench-trainer: $(STAMP) ## images/s of the Trainer vs a bare PyTorch loop (MLP/conv AE, LeNet DANN, timm), ratios
	$(BIN)/python -m bench.trainer_overhead

.PHONY: bench-gan
bench-gan: data ## DCGAN + cGAN at 3 seeds, augmentation at 5 seeds (profile bench), printed report
	$(BIN)/python -m bench.gan_sweep $(foreach s,$(SET),--set $(s))

.PHONY: bench-seq
bench-seq: data ## Transformer vs LSTM/GRU/CNN/logreg at 5 seeds, timing to L=1280, ViT vs CNN (profile bench)
	$(BIN)/python -m bench.seq_sweep $(foreach s,$(SET),--set $(s))

.PHONY: bench-pretrain
bench-pretrain: data ## greedy vs random init over label fractions x seeds (default profile), printed table
	$(BIN)/python -m bench.pretrain_sweep $(foreach s,$(SET),--set $(s))

.PHONY: compare
compare: $(STAMP) ## report of the LAST=2 newest pipeline runs of PROFILE -> reports/compare/compare.{md,html}
	$(BIN)/adaptflow compare --set profile=$(PROFILE) --last $(or $(LAST),2)

.PHONY: ui
ui: $(STAMP) ## MLflow UI on http://127.0.0.1:PORT for mlruns/ (or for MLFLOW_TRACKING_URI's store)
	@uri="$${MLFLOW_TRACKING_URI:-}"; \
	case "$$uri" in \
	  "") mkdir -p mlruns/artifacts; \
	      echo "serving the local store mlruns/ on http://127.0.0.1:$(PORT)"; \
	      exec $(BIN)/mlflow ui --backend-store-uri sqlite:///mlruns/mlflow.db \
	        --default-artifact-root ./mlruns/artifacts --host 127.0.0.1 --port $(PORT) ;; \
	  http://*|https://*|databricks*) \
	      echo "MLFLOW_TRACKING_URI=$$uri is a tracking server: open it in your browser" \
	        "(runs go there, not to mlruns/); nothing to serve here" ;; \
	  *)  echo "serving MLFLOW_TRACKING_URI=$$uri on http://127.0.0.1:$(PORT) (not mlruns/)"; \
	      exec $(BIN)/mlflow ui --backend-store-uri "$$uri" --host 127.0.0.1 --port $(PORT) ;; \
	esac

.PHONY: tracking-server
tracking-server: $(STAMP) ## MLflow server on PostgreSQL at http://127.0.0.1:TRACKING_PORT, artifacts served (state in .tracking/)
	$(BIN)/python -m adaptflow.tracking.server start --port $(TRACKING_PORT) --pg-port $(PG_PORT)

.PHONY: tracking-stop
tracking-stop: $(STAMP) ## stop the tracking server, then its PostgreSQL (.tracking/ keeps every run)
	$(BIN)/python -m adaptflow.tracking.server stop

.PHONY: prefect-server
prefect-server: $(STAMP) ## a real Prefect server + UI on http://127.0.0.1:PREFECT_PORT (state in .prefect/)
	@echo "Prefect server on http://127.0.0.1:$(PREFECT_PORT); in other shells:" \
	  "export PREFECT_API_URL=http://127.0.0.1:$(PREFECT_PORT)/api"
	exec $(BIN)/prefect server start --host 127.0.0.1 --port $(PREFECT_PORT)

# `make schedule` / `schedule-once` talk to the server of `make prefect-server` unless
# PREFECT_API_URL points elsewhere
SCHEDULE_API = PREFECT_API_URL=$${PREFECT_API_URL:-http://127.0.0.1:$(PREFECT_PORT)/api}

.PHONY: schedule
schedule: data ## serve the pipeline on params.yaml's schedule (cron) as a Prefect deployment
	$(SCHEDULE_API) exec $(BIN)/python -m flows.schedule serve

.PHONY: schedule-pool
schedule-pool: data ## the same deployment on a work pool (POOL=adaptflow, created if absent); run it with `prefect worker start --pool POOL`
	@$(SCHEDULE_API) $(BIN)/prefect work-pool inspect $(or $(POOL),adaptflow) >/dev/null 2>&1 || \
	  $(SCHEDULE_API) $(BIN)/prefect work-pool create $(or $(POOL),adaptflow) --type process
	$(SCHEDULE_API) $(BIN)/python -m flows.schedule deploy --pool $(or $(POOL),adaptflow)

.PHONY: schedule-once
schedule-once: $(STAMP) ## a run of the served deployment now; waits for it (exit 1 unless Completed)
	$(SCHEDULE_API) $(BIN)/python -m flows.schedule once

.PHONY: lint
lint: $(STAMP) ## ruff check + format check
	$(BIN)/ruff check src flows tests bench
	$(BIN)/ruff format --check src flows tests bench

.PHONY: format
format: $(STAMP) ## ruff fix + format
	$(BIN)/ruff check --fix src flows tests bench
	$(BIN)/ruff format src flows tests bench

.PHONY: clean
clean: ## remove caches and rebuildable outputs; keeps mlruns/ (runs, registry), the versioned metrics and .venv
	rm -rf .prefect data/prepared .dvc/cache .dvc/tmp .dvc/site-cache .cache .pytest_cache .ruff_cache
	@# reports/metrics-default.json and plots-default/ are versioned in git (dvc metrics/plots diff)
	@if [ -d reports ]; then find reports -mindepth 1 -not -name metrics-default.json -not -path "reports/plots-default*" -delete; fi
	find . -name __pycache__ -type d -prune -not -path './$(VENV)/*' -exec rm -rf {} +

.PHONY: clean-runs
clean-runs: ## DELETE the experiment history and model registry (mlruns/mlflow.db, mlruns/artifacts)
	@for p in mlruns/mlflow.db mlruns/artifacts; do \
	  if [ -e "$$p" ]; then echo "removing $$p ($$(du -sh "$$p" | cut -f1))"; rm -rf "$$p"; \
	  else echo "$$p: absent"; fi; \
	done
	@echo "every MLflow run, logged model and registered version of mlruns/ is gone"

.PHONY: distclean
distclean: clean ## clean + remove .venv (keeps mlruns/: `make clean-runs` removes it)
	rm -rf $(VENV)
