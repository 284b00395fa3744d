"""Refuse to build a wheel without the dashboard: run `make dashboard` (npm) first."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hatchling.builders.hooks.plugin.interface import BuildHookInterface


class DashboardCheck(BuildHookInterface):  # type: ignore[type-arg]
    """Stops a wheel that would serve a 503 at `/` (an editable install builds nothing, so may)."""

    PLUGIN_NAME = "custom"

    def initialize(self, version: str, build_data: dict[str, Any]) -> None:
        index = Path(self.root) / "src" / "clearance" / "server" / "_static" / "index.html"
        if version != "editable" and not index.is_file():
            raise RuntimeError("the dashboard is not built: run `make dashboard` (needs Node.js and npm) first")
