# The same verbs everywhere: install, lint, test, bench, demo.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: install install-dev lint test test-crewai bench demo clean

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
	$(BIN)/pytest --ignore=tests/integrations/test_crewai.py
	$(MAKE) test-crewai

# CrewAI pins mcp<2 and pydantic<2.13, older than what the other frameworks install, so its
# integration is tested in a virtualenv of its own (about 1 GB).
CREWAI_VENV := .venv-crewai
$(CREWAI_VENV)/bin/python:
	$(PYTHON) -m venv $(CREWAI_VENV)
	$(CREWAI_VENV)/bin/pip install --quiet --upgrade pip

test-crewai: $(CREWAI_VENV)/bin/python
	$(CREWAI_VENV)/bin/pip install --quiet -e '.[crewai,test]'
	$(CREWAI_VENV)/bin/pytest tests/integrations/test_crewai.py

bench: install-dev
	$(BIN)/python bench/guard_overhead.py
	$(BIN)/python bench/approval_wake.py
	$(BIN)/python bench/ingest.py
	$(BIN)/python bench/server.py
	$(BIN)/python bench/frameworks.py

demo: install
	$(BIN)/clearance demo

clean:
	rm -rf $(VENV) $(CREWAI_VENV) .clearance .pytest_cache .mypy_cache .ruff_cache
