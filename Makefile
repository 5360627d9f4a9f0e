# `make train` and `make test` (plus `make test-fast`, the inner loop). Each sets up .venv, installs, and prepares
# the embedded data first; all are idempotent (a second run reuses the venv, the data cache and the tiny base).
# `make train` installs the runtime requirements only; `make test`/`make lint` add the dev ones (pytest, ruff, ...).
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
DEV_STAMP := $(VENV)/.installed-dev
DATA_DIR ?= data
ARGS ?=
PYTEST_ARGS ?=
TEST_ENV = APEXLM_DATA_DIR=$(DATA_DIR) WANDB_MODE=disabled
# The inner loop: everything except the slow and the 2-process tests (gpu tests skip themselves without CUDA).
FAST_MARKERS := not slow and not distributed

.PHONY: install install-dev data base train test test-fast bench lint clean-runs

$(STAMP): requirements.txt setup.cfg pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -r requirements.txt
	$(PY) -m pip install -q --disable-pip-version-check --no-deps --no-build-isolation -e .
	touch $(STAMP)

$(DEV_STAMP): $(STAMP) requirements-dev.txt
	$(PY) -m pip install -q --disable-pip-version-check -r requirements-dev.txt
	touch $(DEV_STAMP)

install: $(STAMP)

install-dev: $(DEV_STAMP)

data: install
	APEXLM_DATA_DIR=$(DATA_DIR) $(PY) -m apexlm.data.prepare --data-dir $(DATA_DIR)

base: data
	@if [ -f $(DATA_DIR)/base/tiny/config.json ]; then echo "tiny base: $(DATA_DIR)/base/tiny"; \
	else APEXLM_DATA_DIR=$(DATA_DIR) $(PY) train.py experiment=pretrain_tiny logger=csv; fi

train: base
	APEXLM_DATA_DIR=$(DATA_DIR) $(PY) train.py experiment=apex_it $(ARGS)

# Lint first, so a lint error fails `make test` (and CI, which runs it). Every marker runs: no -m filter here.
test: lint data
	$(TEST_ENV) $(PY) -m pytest -q $(PYTEST_ARGS) tests

test-fast: install-dev data
	$(TEST_ENV) $(PY) -m pytest -q -m "$(FAST_MARKERS)" $(PYTEST_ARGS) tests

bench: base
	$(PY) benchmarks/bench_overhead.py --quick --threads 1

lint: install-dev
	$(PY) -m ruff check src tests benchmarks train.py eval.py
