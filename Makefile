# The same verbs everywhere: install, lint, test, bench, demo.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: install install-dev lint test bench demo clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

install: $(BIN)/python
	$(BIN)/pip install --quiet -e .

install-dev: $(BIN)/python
	$(BIN)/pip install --quiet -e '.[dev]'

lint: install-dev
	$(BIN)/ruff check src tests bench examples
	$(BIN)/ruff format --check src tests bench examples
	$(BIN)/mypy src

test: lint
	$(BIN)/pytest

bench: install-dev
	$(BIN)/python bench/guard_overhead.py
	$(BIN)/python bench/approval_wake.py
	$(BIN)/python bench/ingest.py
	$(BIN)/python bench/server.py
	$(BIN)/python bench/frameworks.py

demo: install
	$(BIN)/clearance demo

clean:
	rm -rf $(VENV) .clearance .pytest_cache .mypy_cache .ruff_cache
