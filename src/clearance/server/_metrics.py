"""Prometheus metrics for the people on call: `GET /metrics` (to be built)."""

from __future__ import annotations

from fastapi import FastAPI

from ._settings import ServerSettings


def install(app: FastAPI, settings: ServerSettings) -> None:
    """Serve the server's metrics (placeholder until the metrics are built)."""
