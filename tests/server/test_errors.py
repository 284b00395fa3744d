"""The API's one error shape, pinned (datasette's tests/test_error_shape.py)."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from clearance.server._errors import CODES


def assert_shape(body: dict[str, Any], code: str) -> None:
    assert set(body) == {"error"}
    assert set(body["error"]) == {"code", "message", "details"}
    assert body["error"]["code"] == code and isinstance(body["error"]["message"], str)
    assert isinstance(body["error"]["details"], list)


def test_codes_are_stable() -> None:
    assert CODES == {
        400: "bad_request",
        401: "unauthorized",
        403: "forbidden",
        404: "resource_not_found",
        405: "method_not_allowed",
        409: "conflict",
        413: "payload_too_large",
        415: "unsupported_media_type",
        422: "invalid_parameter",
        429: "too_many_requests",
        500: "internal_error",
        503: "unavailable",
    }


def test_unknown_route_and_method(client: TestClient) -> None:
    r = client.get("/v1/nothing-here")
    assert r.status_code == 404
    assert_shape(r.json(), "resource_not_found")
    r = client.put("/healthz")
    assert r.status_code == 405
    assert_shape(r.json(), "method_not_allowed")


def test_missing_malformed_and_unknown_keys_are_401(client: TestClient) -> None:
    for headers in (
        {},
        {"X-API-Key": "nonsense"},
        {"Authorization": "Bearer clr_test_0123456789abcdef_" + "x" * 43},
        {"Authorization": "Basic abc"},
    ):
        r = client.get("/v1/me", headers=headers)
        assert r.status_code == 401, headers
        assert_shape(r.json(), "unauthorized")
        assert r.headers["www-authenticate"].startswith("Bearer")


def test_wrong_secret_for_a_real_id_is_401(client: TestClient, make_key: Any) -> None:
    key = make_key("admin")
    forged = key[:-43] + ("A" * 43)
    assert client.get("/v1/me", headers={"X-API-Key": forged}).status_code == 401
    assert client.get("/v1/me", headers={"X-API-Key": key}).status_code == 200


def test_wrong_scope_is_403(client: TestClient, make_key: Any) -> None:
    r = client.get("/v1/keys", headers={"X-API-Key": make_key("agent")})
    assert r.status_code == 403
    assert_shape(r.json(), "forbidden")
    assert "admin" in r.json()["error"]["message"]


def test_invalid_and_unknown_fields_are_422_with_details(client: TestClient, make_key: Any) -> None:
    admin = {"X-API-Key": make_key("admin")}
    r = client.post("/v1/keys", headers=admin, json={"name": "x", "scopes": ["root"]})
    assert r.status_code == 422
    assert_shape(r.json(), "invalid_parameter")
    assert r.json()["error"]["details"][0]["location"] == "body.scopes.0"
    r = client.post("/v1/keys", headers=admin, json={"name": "x", "scopes": ["admin"], "colour": "red"})
    assert r.status_code == 422 and r.json()["error"]["details"][0]["location"] == "body.colour"
    r = client.post(
        "/v1/keys",
        headers=admin,
        content=b"{not json",
    )
    assert r.status_code == 422
    assert_shape(r.json(), "invalid_parameter")
    r = client.post("/v1/keys", headers=admin, json={"name": "x", "scopes": ["agent"]})
    assert r.status_code == 422 and "must name the agent" in r.json()["error"]["message"]


@pytest.mark.parametrize("chunked", [False, True])
def test_oversized_bodies_are_413(client: TestClient, make_key: Any, chunked: bool) -> None:
    admin = {"X-API-Key": make_key("admin")}
    payload = b'{"name": "' + b"x" * 10_000 + b'", "scopes": ["admin"]}'
    if chunked:
        r = client.post("/v1/keys", headers=admin, content=iter([payload[:3000], payload[3000:]]))
    else:
        r = client.post("/v1/keys", headers=admin, content=payload)
    assert r.status_code == 413
    assert_shape(r.json(), "payload_too_large")


def test_store_unavailable_is_503(client: TestClient, make_key: Any) -> None:
    key = make_key("admin")
    client.app.state.db.close()  # type: ignore[attr-defined]
    r = client.get("/readyz")
    assert r.status_code == 503
    assert_shape(r.json(), "unavailable")
    r = client.get("/v1/keys", headers={"X-API-Key": key})
    assert r.status_code == 503 and r.headers["retry-after"] == "1"
    assert_shape(r.json(), "unavailable")


@pytest.mark.postgres
def test_a_lost_database_connection_is_503_then_recovers(pg_url: str) -> None:
    import psycopg

    from clearance.server import ServerSettings, create_app

    url = f"{pg_url}&application_name=clearance_victim"
    with TestClient(create_app(ServerSettings(database_url=url)), raise_server_exceptions=False) as client:
        assert client.get("/readyz").status_code == 200
        # The server's background tasks share the connection and may meet the loss first (and
        # reconnect); then the request does not see it, and the loss is caused again.
        for _ in range(10):
            with psycopg.connect(pg_url.replace("postgresql+psycopg://", "postgresql://"), autocommit=True) as admin:
                killed = admin.execute(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                    " WHERE application_name = 'clearance_victim'"
                ).fetchone()
            assert killed is not None and killed[0] >= 1
            lost = client.get("/readyz")
            if lost.status_code != 200:
                break
        assert lost.status_code == 503
        assert_shape(lost.json(), "unavailable")
        assert client.get("/readyz").status_code == 200  # a new connection, no restart


def test_webhook_prefixes_must_end_the_host() -> None:
    from pydantic import ValidationError

    from clearance.server import ServerSettings

    with pytest.raises(ValidationError, match="hooks.example.com.evil.net"):
        ServerSettings(webhook_allowed="https://hooks.example.com")
    with pytest.raises(ValidationError, match="not an http"):
        ServerSettings(webhook_allowed="ftp://files/")
    assert ServerSettings(webhook_allowed="https://a.example/hooks/, http://127.0.0.1:9/").webhook_allowed == (
        "https://a.example/hooks/",
        "http://127.0.0.1:9/",
    )
