# The same verbs everywhere: install, lint, test, bench, demo.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: install install-dev dashboard types browser phoenix lint test test-pinned docs docs-serve bench demo clean

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
	$(BIN)/ruff check src tests bench examples docs/_hooks
	$(BIN)/ruff format --check src tests bench examples docs/_hooks
	$(BIN)/mypy src

# Two test processes (pytest-xdist), each taking a whole file at a time: most tests wait on a
# server, a browser or a subprocess, so two halve the wall time on two cores (a sample of 190
# tests: 293 s alone, 189 s in two). Every test has its own store, port and temporary directory.
test: lint phoenix
	$(BIN)/pytest -n 2 --dist loadfile --durations=30 $(PINNED_TESTS:%=--ignore=%)
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

# The documentation site (mkdocs.yml, docs/): built strictly — a broken link or a missing page
# fails it (tests/test_docs_site.py builds it in the tests too). The reference pages are
# generated while it builds, from the code (docs/_hooks/reference.py): they cannot go stale.
docs: install-dev
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --site-dir site

docs-serve: install-dev
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs serve --strict

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
	$(BIN)/python bench/inbox_render.py

demo: install
	$(BIN)/clearance demo

clean:
	rm -rf $(VENV) $(PINNED_VENV) $(PHOENIX_VENV) site .clearance .pytest_cache .mypy_cache .ruff_cache dashboard/node_modules src/clearance/server/_static artifacts
