# The same verbs everywhere: install, lint, test, bench, demo.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: install install-dev dashboard types browser phoenix lint test test-pinned bench demo clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

install: $(BIN)/python
	$(BIN)/pip install --quiet -e '.[server]'
	$(MAKE) dashboard

install-dev: $(BIN)/python browser
	$(BIN)/pip install --quiet -e '.[dev]'
	$(MAKE) dashboard

# The dashboard's front end: npm packages from the registry (package.json, package-lock.json
# without download URLs), built into src/clearance/server/_static, which the wheel includes.
# Its API types (src/api.gen.ts, committed) come from the server's OpenAPI document: `make types`
# after changing what a route sends; a test fails while the committed file is stale.
dashboard: src/clearance/server/_static/index.html
src/clearance/server/_static/index.html: dashboard/package.json dashboard/package-lock.json dashboard/index.html dashboard/vite.config.ts dashboard/tsconfig.json $(shell find dashboard/src -name '*.ts*' -o -name '*.css')
	cd dashboard && npm ci --no-audit --no-fund && npm run build

types:
	cd dashboard && PYTHON=$(CURDIR)/$(BIN)/python npm run types

# The browser tests drive Debian's Chromium (never a browser downloaded by Playwright).
browser:
	@command -v chromium >/dev/null || (apt-get update -qq && apt-get install -y -qq chromium >/dev/null)

lint: install-dev
	$(BIN)/ruff check src tests bench examples
	$(BIN)/ruff format --check src tests bench examples
	$(BIN)/mypy src

test: lint phoenix
	$(BIN)/pytest $(PINNED_TESTS:%=--ignore=%)
	$(MAKE) test-pinned

# CrewAI pins mcp<2 and pydantic<2.13, and llama-index-llms-openai pins openai<3 — older than
# what the other frameworks install — so their tests run in a virtualenv of their own (~1 GB).
PINNED_VENV := .venv-pinned
PINNED_TESTS := tests/integrations/test_crewai.py tests/integrations/test_llamaindex_http.py
$(PINNED_VENV)/bin/python:
	$(PYTHON) -m venv $(PINNED_VENV)
	$(PINNED_VENV)/bin/pip install --quiet --upgrade pip

test-pinned: $(PINNED_VENV)/bin/python
	$(PINNED_VENV)/bin/pip install --quiet -e '.[pinned]'
	$(PINNED_VENV)/bin/pytest $(PINNED_TESTS)

# The tracing tests export spans to a real Arize Phoenix, run from a virtualenv of its own
# (~850 MB, many pinned dependencies); tests/tracing/conftest.py starts it. Reinstalled only when
# this Makefile changes (where the pin is); `make clean` removes it.
PHOENIX_VENV := .venv-phoenix
PHOENIX_REQUIREMENT := arize-phoenix>=20.26,<21
phoenix: $(PHOENIX_VENV)/bin/phoenix
$(PHOENIX_VENV)/bin/phoenix: Makefile
	test -x $(PHOENIX_VENV)/bin/python || $(PYTHON) -m venv $(PHOENIX_VENV)
	$(PHOENIX_VENV)/bin/pip install --quiet --upgrade pip
	$(PHOENIX_VENV)/bin/pip install --quiet '$(PHOENIX_REQUIREMENT)'
	touch $@

bench: install-dev
	$(BIN)/python bench/guard_overhead.py
	$(BIN)/python bench/otel_overhead.py
	$(BIN)/python bench/boundary.py
	$(BIN)/python bench/approval_wake.py
	$(BIN)/python bench/ingest.py
	$(BIN)/python bench/server.py
	$(BIN)/python bench/frameworks.py
	$(BIN)/python bench/cold_call.py
	$(BIN)/python bench/mcp_proxy.py
	$(BIN)/python bench/audit_paging.py

demo: install
	$(BIN)/clearance demo

clean:
	rm -rf $(VENV) $(PINNED_VENV) $(PHOENIX_VENV) .clearance .pytest_cache .mypy_cache .ruff_cache dashboard/node_modules src/clearance/server/_static artifacts
