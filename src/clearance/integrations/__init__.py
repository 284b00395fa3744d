"""Clearance inside agent frameworks: each module governs one framework's tool calls and records its LLM usage.

`install_all()` runs after every `clearance.configure()` (registered below; the package root
imports this module): each framework already imported is governed at once, and any other the
moment the application imports it — so `configure()` imports no framework itself, and tools
made before or after it are governed alike.

An integration that cannot be imported because a companion package is missing (LangGraph
beside `langchain_core`) logs a warning and governs nothing there. One that cannot be imported
because the framework itself lacks what it uses (an older or newer version than Clearance was
tested with) raises `ConfigurationError`, like a failed version check: that framework's calls
would otherwise run ungoverned.
"""

from __future__ import annotations

import importlib
import logging
import sys
from collections.abc import Callable

from .._guard._runtime import after_configure
from ..errors import ConfigurationError
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


def _missing(exc: ImportError) -> str | None:
    """The module an import failed on (the integration re-raises with its extra's name: its cause's)."""
    found: BaseException | None = exc
    while found is not None:
        if isinstance(found, ImportError) and found.name:
            return found.name
        found = found.__cause__
    return None


def _installer(top: str, module: str) -> Callable[[], None]:
    def install() -> None:
        if module in _installed or top not in sys.modules:  # (its framework's own hook installs it then)
            return
        try:
            integration = importlib.import_module(f"{__name__}.{module}")
        except ImportError as exc:
            missing = _missing(exc)
            if missing is not None and (missing == top or missing.startswith(f"{top}.")):
                raise ConfigurationError(
                    f"Clearance cannot govern this version of {top}: {missing} lacks what it uses"
                    f" ({exc.__cause__ or exc})"
                ) from exc
            log.warning("Clearance does not govern %s here: %s", module, exc)  # a companion package is missing
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
            when_imported(top, _installer(top, module))
            when_imported(f"{__name__}.{module}", _installer(top, module))


after_configure(install_all)
