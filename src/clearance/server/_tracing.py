"""The server's own OpenTelemetry instrumentation (to be built)."""

from __future__ import annotations

from fastapi import FastAPI

from ._settings import ServerSettings


def install(app: FastAPI, settings: ServerSettings) -> None:
    """Trace the server's requests and queries (placeholder until tracing is built)."""
