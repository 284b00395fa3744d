"""The Clearance server: `create_app(settings)` builds the REST API (`pip install "clearance[server]"`)."""

from __future__ import annotations

try:
    import fastapi  # noqa: F401
except ImportError as exc:  # the server is an extra
    raise ImportError('the Clearance server needs its extra: pip install "clearance[server]"') from exc

from ._app import create_app
from ._settings import ServerSettings

__all__ = ["ServerSettings", "create_app"]
