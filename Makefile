# Two commands: `make train` and `make test`. Both set up .venv, install, and prepare the embedded data first;
# both are idempotent (a second run reuses the venv, the data cache and the tiny base).
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
DATA_DIR ?= data
ARGS ?=
PYTEST_ARGS ?=

.PHONY: install data base train test bench lint clean-runs

$(STAMP): requirements.txt setup.cfg pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -r requirements.txt
	$(PY) -m pip install -q --disable-pip-version-check --no-deps --no-build-isolation -e .
	touch $(STAMP)

install: $(STAMP)

data: install
	APEXLM_DATA_DIR=$(DATA_DIR) $(PY) -m apexlm.data.prepare --data-dir $(DATA_DIR)

base: data
	@if [ -f $(DATA_DIR)/base/tiny/config.json ]; then echo "tiny base: $(DATA_DIR)/base/tiny"; \
	else APEXLM_DATA_DIR=$(DATA_DIR) $(PY) train.py experiment=pretrain_tiny logger=csv; fi

train: base
	APEXLM_DATA_DIR=$(DATA_DIR) $(PY) train.py experiment=apex_it $(ARGS)

test: data
	APEXLM_DATA_DIR=$(DATA_DIR) WANDB_MODE=disabled $(PY) -m pytest -q $(PYTEST_ARGS) tests

bench: base
	$(PY) benchmarks/bench_overhead.py --quick --threads 1

lint: install
	$(PY) -m ruff check src tests benchmarks || true
