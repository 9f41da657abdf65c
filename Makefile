# The two commands a new user needs: `make run` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
STAMP   = $(VENV)/.installed

.PHONY: run test fmt lint check bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/ticker serve --host 127.0.0.1 --port 8080 --feed sim

test: $(STAMP)
	$(BIN)/python -m pytest -q

fmt: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# Lint plus the type checker (mypy, strict); CI runs this before the tests.
check: lint
	$(BIN)/mypy

# `make bench` (about 10-15 min) or `make bench QUICK=1` (2-3 min); more: bench/README.md.
# BENCH_ARGS passes anything else, e.g. BENCH_ARGS="--scenario fanout --server ticker".
bench: $(STAMP)
	$(BIN)/python -m bench.run $(if $(filter 1 yes true,$(QUICK)),--quick) $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .mypy_cache build dist *.egg-info
