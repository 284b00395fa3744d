"""No input makes the API fail: schemathesis generates requests from the OpenAPI spec and sends
them to a real `clearance serve`, on SQLite and on PostgreSQL (which refuses text SQLite keeps);
any 5xx fails the test.

Valid and invalid requests are generated; then every text a valid request carries at its top
level (path, query, body fields) is spoiled in turn with a NUL and a lone surrogate, which
hypothesis rarely draws, and must be answered below 500 on both stores alike.

(schemathesis's pytest plugin does not work with pytest 9, so its strategies are driven here
with hypothesis directly.)
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.core import NOT_SET
from schemathesis.generation import GenerationMode

from clearance._store import Database
from clearance._store import _keys as keys

from .conftest import Server, _free_port

SPOILED = ("a\x00b", "a\ud800b")  # in a URL only the NUL: a lone surrogate has no UTF-8 to travel in
# Failures found here in routes being reworked elsewhere, reported to their owner: remove each when fixed.
KNOWN: dict[tuple[str, str, str], str] = {}


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, str]]:
    """A real `clearance serve` on a fresh store: (base URL, database URL)."""
    url = str(tmp_path / "live.db") if request.param == "sqlite" else str(request.getfixturevalue("pg_url"))
    Database(url).close()
    live = Server(url, _free_port(), tmp_path / "server.log", make_keys=False)
    live.start()
    try:
        yield live.base, url
    finally:
        live.stop()


def _described(case: schemathesis.Case, status: int, text: str) -> str:
    sent = {"path": case.path_parameters, "query": case.query, "body": case.body}
    return f"{case.method} {case.path} -> {status}: {text[:200]} (sent {str(sent)[:300]})"


def _spoiled(case: schemathesis.Case) -> Iterator[str]:
    """Spoil each top-level text of `case` in place, one at a time (yielding its place), then restore it."""
    for part, place in (("path_parameters", "path"), ("query", "query"), ("body", "body")):
        original = getattr(case, part)
        if not isinstance(original, dict):
            continue
        for name, value in original.items():
            if not isinstance(value, str):
                continue
            for spoiled in SPOILED if part == "body" else SPOILED[:1]:
                setattr(case, part, {**original, name: spoiled})
                yield f"{place}.{name}"
        setattr(case, part, original)


def _send_ascii(base: str, key: str, case: schemathesis.Case) -> httpx.Response:
    """Send `case` with its body as ASCII JSON (a lone surrogate as its escape, which schemathesis cannot)."""
    path = case.path
    for name, value in case.path_parameters.items():
        path = path.replace(f"{{{name}}}", quote(str(value), safe=""))
    body = None if case.body is NOT_SET or case.body is None else json.dumps(case.body)
    headers = {"X-API-Key": key, **({"Content-Type": "application/json"} if body is not None else {})}
    return httpx.request(case.method, base + path, params=case.query, content=body, headers=headers, timeout=30)


def _status_of_stream(base: str, key: str, case: schemathesis.Case) -> tuple[int, str]:
    """The status of a live stream's answer (and its body when it is an error), without reading it to an end."""
    path = case.path
    for name, value in (case.path_parameters or {}).items():
        path = path.replace(f"{{{name}}}", quote(str(value), safe=""))
    with httpx.stream(
        case.method, base + path, params=case.query, headers={"X-API-Key": key, **(case.headers or {})}, timeout=30
    ) as response:
        return response.status_code, response.read().decode(errors="replace") if response.status_code >= 400 else ""


@pytest.mark.timeout(600)
def test_no_input_makes_the_api_fail(server: tuple[str, str]) -> None:
    base, url = server
    db = Database(url)
    _, key = keys.create(
        db, name="fuzz", scopes=["admin", "approver", "agent"], agent="fuzz", environment="test", created_by="t"
    )
    db.close()
    schema = schemathesis.openapi.from_url(f"{base}/openapi.json")
    failures: list[str] = []
    operations = 0
    for result in schema.get_all_operations():
        operation = result.ok()
        operations += 1
        generated = st.one_of(
            operation.as_strategy(GenerationMode.POSITIVE), operation.as_strategy(GenerationMode.NEGATIVE)
        )

        def send(case: schemathesis.Case) -> Any:
            if case.path.endswith("/stream"):  # never ends: schemathesis (4.32) would read it for ever
                status, text = _status_of_stream(base, key, case)
            else:
                response = case.call(headers={"X-API-Key": key}, timeout=30)
                status, text = response.status_code, response.text
            if status >= 500:
                failures.append(_described(case, status, text))

        @given(case=generated)
        @settings(max_examples=12, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        def fuzz(case: schemathesis.Case) -> None:
            send(case)

        @given(case=operation.as_strategy(GenerationMode.POSITIVE))
        @settings(max_examples=2, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        def spoil(case: schemathesis.Case) -> None:
            for field in _spoiled(case):
                if case.path.endswith("/stream"):
                    status, text = _status_of_stream(base, key, case)
                else:
                    response = _send_ascii(base, key, case)
                    status, text = response.status_code, response.text
                if status >= 500 and (case.method, case.path, field) not in KNOWN:
                    failures.append(_described(case, status, text))

        fuzz()
        spoil()
    assert operations >= 25
    assert failures == [], "\n".join(failures)
