# matdisco: the two commands of the README.
#   make run    set up .venv (first time only) and run the whole pipeline on config/config.yaml
#   make test   set up .venv (first time only), then lint, pytest and a tiny end-to-end run
#   make test-fast   lint and the fast tests only (pytest -m "not slow"), for the edit loop
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
CORES ?= all
SNAKEMAKE := $(BIN)/snakemake
STAMP := $(VENV)/.matdisco-installed

.PHONY: run test test-fast install gpaw lint e2e pytest clean-test help

help:
	@echo "make run   - install (first time) and run the pipeline on config/config.yaml"
	@echo "make test  - install (first time) and run the test suite, lint and a tiny end-to-end run"
	@echo "make test-fast - lint and the fast tests (pytest -m 'not slow')"
	@echo "make lint  - ruff, snakefmt --check and snakemake --lint"

# torch is installed first and pinned: a loose torch would pull the multi-GB CUDA build.
# requirements.lock pins every other package (pip constraints) for a reproducible install.
$(STAMP): pyproject.toml requirements.lock
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -c requirements.lock -e ".[workflow,dev]"
	@touch $@

# GPAW (real DFT backend) is built from its PyPI sdist against Debian's libxc/OpenBLAS/FFTW,
# serial (see envs/gpaw-siteconfig.py). As root the libraries are apt-installed when missing;
# otherwise install them yourself (the GPAW test then skips with the reason).
GPAW_STAMP := $(VENV)/.matdisco-gpaw
GPAW_LIBS := libxc-dev libopenblas-dev libfftw3-dev
$(GPAW_STAMP): $(STAMP) envs/gpaw-siteconfig.py
	@if ! dpkg -s $(GPAW_LIBS) >/dev/null 2>&1; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $(GPAW_LIBS) >/dev/null; \
	  else echo "gpaw: $(GPAW_LIBS) missing and not root: skipping the GPAW build"; exit 0; fi; \
	fi; \
	GPAW_CONFIG=$(CURDIR)/envs/gpaw-siteconfig.py OMP_NUM_THREADS=1 $(BIN)/python -m pip install --quiet -c requirements.lock gpaw==26.7.0 gpaw-data==1.2.1 && touch $@

gpaw: $(GPAW_STAMP)

install: $(STAMP)

# the run folder of config/config.yaml (run_name); the report goes inside it so the archive holds it
RUN ?= default

run: $(STAMP)
	$(SNAKEMAKE) --cores $(CORES)
	$(SNAKEMAKE) --report results/$(RUN)/report.html
	$(BIN)/matdisco archive results/$(RUN) --command "snakemake --cores $(CORES)" --command "snakemake --report results/$(RUN)/report.html"
	$(BIN)/matdisco verify results/$(RUN).tar.gz

# ruff and snakefmt settings are in pyproject.toml
LINT_PATHS := src tests benchmarks workflow scripts

lint: $(STAMP)
	$(BIN)/ruff check $(LINT_PATHS)
	$(BIN)/snakefmt --check Snakefile workflow/rules
	$(SNAKEMAKE) --lint

pytest: $(STAMP)
	$(BIN)/python -m pytest

e2e: $(STAMP)
	rm -rf results/test results/test.tar.gz
	$(SNAKEMAKE) --cores 2 --configfile config/test.yaml

test-fast: lint
	$(BIN)/python -m pytest -m "not slow"

test: $(STAMP) $(GPAW_STAMP) lint
	$(BIN)/python -m pytest
	rm -rf results/test results/test.tar.gz
	$(SNAKEMAKE) --cores 2 --configfile config/test.yaml
	$(SNAKEMAKE) --configfile config/test.yaml --report results/test/report.html
	$(BIN)/matdisco archive results/test --command "snakemake --cores 2 --configfile config/test.yaml"
	$(BIN)/matdisco verify results/test.tar.gz

clean-test:
	rm -rf results/test
