"""The dashboard's build: packages from the registry, nothing third-party committed."""

from __future__ import annotations

import json
import subprocess

import pytest

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
