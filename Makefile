# The two commands of the README: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PIP := $(BIN)/pip install --constraint constraints.txt
DEMO_DIR ?= build/demo

.PHONY: install test test-fast lint demo bench soak-distributed clean

$(BIN)/activate:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: $(BIN)/activate pyproject.toml constraints.txt
	$(PIP) --upgrade pip setuptools
	$(PIP) -e '.[dev,bench,search,lora]'
	touch $@

install: $(VENV)/.installed

test: install
	$(BIN)/python -m pytest -q tests

# The inner loop: everything but the slow end-to-end tests, the benchmarks' machinery and the
# multi-process tests (`make test` runs them all, and CI runs `make test`).
test-fast: install
	$(BIN)/python -m pytest -q -m "not slow and not bench and not distributed" tests

lint: install
	$(BIN)/ruff check src tests examples
	$(BIN)/ruff format --check src tests examples
	$(BIN)/mypy

demo: install
	$(BIN)/mixflow data demo $(DEMO_DIR)/data
	$(BIN)/mixflow train examples/demo.yaml overwrite_output_dir=true
	$(BIN)/mixflow plot $(DEMO_DIR)/run

# Every benchmark at full size; results under benchmarks/results/. Long on 2 CPU cores (the arena alone
# took 44 minutes there; README "Benchmarks" has the measured times).
bench: install
	$(BIN)/mixflow bench run all --out benchmarks/results

# Every multi-process test SOAK_RUNS times (default 50; about 70 s a run on 2 cores); not part of `make test`.
SOAK_RUNS ?= 50
soak-distributed: install
	PYTHON=$(BIN)/python tests/soak_distributed.sh $(SOAK_RUNS) build/soak

clean:
	rm -rf build $(VENV)
