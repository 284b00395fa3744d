"""The dashboard's build: packages from the registry, nothing third-party committed."""

from __future__ import annotations

import difflib
import json
import subprocess
from pathlib import Path

import pytest

from clearance.server import _openapi

from .conftest import IN_CI, REPO

DASHBOARD = REPO / "dashboard"


def test_the_lock_file_records_no_download_urls() -> None:
    lock = (DASHBOARD / "package-lock.json").read_text()
    assert '"resolved"' not in lock
    assert "omit-lockfile-registry-resolved=true" in (DASHBOARD / ".npmrc").read_text()
    assert (
        json.loads(lock)["packages"][""]["dependencies"]
        == json.loads((DASHBOARD / "package.json").read_text())["dependencies"]
    )


def test_built_assets_and_node_modules_are_not_committed() -> None:
    tracked = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True).stdout
    assert "node_modules/" not in tracked
    assert "src/clearance/server/_static/" not in tracked


def test_the_built_page_loads_only_its_own_assets() -> None:
    index = REPO / "src" / "clearance" / "server" / "_static" / "index.html"
    if not index.exists():  # built by `make dashboard`, which `make test` runs first
        if IN_CI:
            pytest.fail("the dashboard was not built")
        pytest.skip("the dashboard is not built: make dashboard")
    html = index.read_text()
    assert "http://" not in html and "https://" not in html and "<script>" not in html


def test_the_generated_api_types_match_the_server(tmp_path: Path) -> None:
    """`dashboard/src/api.gen.ts` is what `npm run types` makes of the server's OpenAPI document now."""
    generator = DASHBOARD / "node_modules" / ".bin" / "openapi-typescript"
    if not generator.exists():  # installed by `make dashboard`, which `make test` runs first
        if IN_CI:
            pytest.fail("the dashboard's packages are not installed")
        pytest.skip("the dashboard's packages are not installed: make dashboard")
    document = tmp_path / "openapi.json"
    document.write_text(json.dumps(_openapi.document(), indent=2, ensure_ascii=False) + "\n")
    subprocess.run([generator, document, "-o", tmp_path / "api.gen.ts"], cwd=DASHBOARD, capture_output=True, check=True)
    committed = (DASHBOARD / "src" / "api.gen.ts").read_text()
    fresh = (tmp_path / "api.gen.ts").read_text()
    drift = "".join(difflib.unified_diff(committed.splitlines(True), fresh.splitlines(True), "committed", "generated"))
    assert not drift, f"dashboard/src/api.gen.ts is stale: run `make types`\n{drift}"


def test_every_rule_of_the_stylesheet_is_closed() -> None:
    """A brace lost in a merge puts every later rule inside a phone-width media query: at desktop
    width the skip link showed and the inbox's arguments ran together, with no error anywhere."""
    depth = 0
    for number, line in enumerate((DASHBOARD / "src" / "style.css").read_text().splitlines(), 1):
        depth += line.count("{") - line.count("}")
        assert depth >= 0, f"style.css line {number} closes a block that is not open"
        if line.startswith("/* =="):  # each helper's section starts at the top level
            assert depth == 0, f"style.css line {number} starts a section inside an open block"
    assert depth == 0, "style.css ends with a block still open"
