"""Clearance inside agent frameworks: each module governs one framework's tool calls and records its LLM usage.

`install_all()` runs after every `clearance.configure()` (registered below; the package root
imports this module): each framework already imported is governed at once, and any other the
moment the application imports it — so `configure()` imports no framework itself, and tools
made before or after it are governed alike.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable

from .._guard._runtime import after_configure
from ._imports import when_imported

# (the top-level module the application imports, the module here that governs its framework)
FRAMEWORKS = (
    ("langchain_core", "langchain"),
    ("agents", "agents"),
    ("mcp", "mcp"),
    ("google.adk", "adk"),
    ("ag2", "ag2"),
    ("llama_index.core", "llamaindex"),
    ("crewai", "crewai"),
    ("pydantic_ai", "pydantic_ai"),
    ("claude_agent_sdk", "claude_agent"),
    ("openai", "openai"),
    ("anthropic", "anthropic"),
)
_installed: set[str] = set()
log = logging.getLogger("clearance")


def _installer(module: str) -> Callable[[], None]:
    def install() -> None:
        if module in _installed:
            return
        try:
            integration = importlib.import_module(f"{__name__}.{module}")
        except ImportError as exc:  # a companion package is missing: say so, break nothing
            log.warning("Clearance does not govern %s here: %s", module, exc)
            return
        if not hasattr(integration, "install"):
            # The application imported the integration module itself, which imported its framework
            # first: it installs the moment it is imported whole (its own hook, below).
            return
        integration.install()  # a version it cannot govern safely raises here, loudly
        _installed.add(module)

    return install


def install_all() -> None:
    """Install Clearance into every framework: now if imported, else when first imported."""
    for top, module in FRAMEWORKS:
        if module not in _installed:
            when_imported(top, _installer(module))
            when_imported(f"{__name__}.{module}", _installer(module))


after_configure(install_all)
