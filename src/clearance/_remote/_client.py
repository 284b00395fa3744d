"""The SDK's HTTP client for a Clearance server.

With tracing on (`configure(otel=True)`), each request carries the current span as `traceparent`,
so the server's span of it is in the agent's trace.
"""

from __future__ import annotations

from typing import Any

import httpx

from .. import _trace
from .._version import __version__
from ..errors import ServerError


class Client:
    """Calls the server's API with the agent's key; thread-safe."""

    def __init__(self, base_url: str, api_key: str, *, timeout: float = 10.0) -> None:
        self.base_url = base_url.rstrip("/")
        self._options: dict[str, Any] = {
            "base_url": self.base_url,
            "headers": {"X-API-Key": api_key, "User-Agent": f"clearance-python/{__version__}"},
            "timeout": httpx.Timeout(timeout, connect=3.0),
        }
        self._http = httpx.Client(**self._options)

    def async_client(self) -> httpx.AsyncClient:
        """An async client for the same server and key (for the caller's event loop; close it)."""
        return httpx.AsyncClient(**self._options)

    async def acall(self, http: httpx.AsyncClient, method: str, path: str, **kw: Any) -> httpx.Response:
        """`call` on an async client from `async_client`.

        Raises:
            ServerError: The server was not reached, or answered an error.
        """
        try:
            response = await http.request(method, path, **{**kw, "headers": _traced(kw.get("headers"))})
        except httpx.HTTPError as exc:
            raise ServerError(f"cannot reach the Clearance server at {self.base_url}: {exc}") from None
        return self._checked(response, (200, 201))

    def call(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        content: bytes | None = None,
        params: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
        timeout: float | None = None,
        ok: tuple[int, ...] = (200, 201),
    ) -> httpx.Response:
        """Make a request; a status outside `ok` raises. `content` is a JSON body already written.

        Raises:
            ServerError: The server was not reached, or answered with another status.
        """
        if content is not None:
            headers = {**(headers or {}), "Content-Type": "application/json"}
        try:
            response = self._http.request(
                method,
                path,
                json=json,
                content=content,
                params=params,
                headers=_traced(headers),
                timeout=httpx.USE_CLIENT_DEFAULT if timeout is None else timeout,
            )
        except httpx.HTTPError as exc:
            raise ServerError(f"cannot reach the Clearance server at {self.base_url}: {exc}") from None
        return self._checked(response, ok)

    def _checked(self, response: httpx.Response, ok: tuple[int, ...]) -> httpx.Response:
        if response.status_code not in ok:
            code, message = None, response.text[:300]
            try:
                error = response.json()["error"]
                code, message = error["code"], error["message"]
            except (ValueError, KeyError, TypeError):
                pass
            raise ServerError(
                f"the Clearance server answered {response.status_code}: {message}",
                status=response.status_code,
                code=code,
            )
        return response

    def close(self) -> None:
        """Close connections."""
        self._http.close()


def _traced(headers: dict[str, str] | None) -> dict[str, str] | None:
    """`headers` and, with tracing on, the current span's context (W3C `traceparent`, as propagated)."""
    if not _trace.enabled():
        return headers
    from opentelemetry import propagate

    carrier = dict(headers or {})
    propagate.inject(carrier)
    return carrier
