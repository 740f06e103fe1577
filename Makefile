# matdisco: the two commands of the README.
#   make run    set up .venv (first time only) and run the whole pipeline on config/config.yaml
#   make test   set up .venv (first time only), then pytest, snakemake --lint and a tiny end-to-end run
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
CORES ?= all
SNAKEMAKE := $(BIN)/snakemake
STAMP := $(VENV)/.matdisco-installed

.PHONY: run test install lint e2e pytest clean-test help

help:
	@echo "make run   - install (first time) and run the pipeline on config/config.yaml"
	@echo "make test  - install (first time) and run the test suite, lint and a tiny end-to-end run"

# torch is installed first and pinned: a loose torch would pull the multi-GB CUDA build.
# requirements.lock pins every other package (pip constraints) for a reproducible install.
$(STAMP): pyproject.toml requirements.lock
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -c requirements.lock -e ".[workflow,dev]"
	@touch $@

install: $(STAMP)

run: $(STAMP)
	$(SNAKEMAKE) --cores $(CORES)

lint: $(STAMP)
	$(SNAKEMAKE) --lint

pytest: $(STAMP)
	$(BIN)/python -m pytest

e2e: $(STAMP)
	rm -rf results/test
	$(SNAKEMAKE) --cores 2 --configfile config/test.yaml

test: $(STAMP)
	$(SNAKEMAKE) --lint
	$(BIN)/python -m pytest
	rm -rf results/test
	$(SNAKEMAKE) --cores 2 --configfile config/test.yaml

clean-test:
	rm -rf results/test
