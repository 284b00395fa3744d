from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from ..conftest import run_cli


def test_health_and_readiness(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/readyz").json() == {"status": "ok", "database": "sqlite", "long_polls": "0"}


def test_key_lifecycle_over_the_api(client: TestClient, make_key: Any, server_db: str) -> None:
    admin = {"X-API-Key": make_key("admin", agent=None)}
    r = client.post(
        "/v1/keys",
        headers=admin,
        json={"name": "refund bot", "scopes": ["agent"], "agent": "refunds", "environment": "live"},
    )
    assert r.status_code == 201
    created = r.json()
    secret, key_id = created["secret"], created["key"]["id"]
    assert secret.startswith(f"clr_live_{key_id}_") and "secret" not in created["key"]
    me = client.get("/v1/me", headers={"Authorization": f"Bearer {secret}"}).json()
    assert me["agent"] == "refunds" and me["scopes"] == ["agent"] and me["last_used_at_us"] is not None
    listed = client.get("/v1/keys", headers=admin).json()
    assert {k["id"] for k in listed} >= {key_id} and all("secret" not in k for k in listed)
    # (the random part may itself contain "_": cut the prefix off, not at the last "_")
    assert secret.removeprefix(f"clr_live_{key_id}_").encode() not in Path(server_db).read_bytes() + _wal(server_db)
    assert client.delete(f"/v1/keys/{key_id}", headers=admin).json()["revoked_at_us"] is not None
    assert client.get("/v1/me", headers={"X-API-Key": secret}).status_code == 401
    assert client.delete("/v1/keys/nope", headers=admin).status_code == 404


def _wal(path: str) -> bytes:
    wal = Path(path + "-wal")
    return wal.read_bytes() if wal.exists() else b""


def test_a_key_for_one_environment_is_not_valid_as_another(client: TestClient, make_key: Any) -> None:
    key = make_key("admin", environment="test")
    assert client.get("/v1/me", headers={"X-API-Key": key.replace("clr_test_", "clr_live_", 1)}).status_code == 401


def test_openapi_is_served(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    assert {"/healthz", "/readyz", "/v1/me", "/v1/keys", "/v1/keys/{key_id}"} <= set(spec["paths"])
    assert client.get("/docs").status_code == 200


def test_keys_cli(tmp_path: Path) -> None:
    db = tmp_path / "k.db"
    assert "schema revision" in run_cli("db", "upgrade", db=db, check=True).stdout
    out = run_cli(
        "keys", "create", "--name", "ops", "--scope", "admin", "--scope", "approver", db=db, check=True
    ).stdout
    secret = out.strip().splitlines()[-1]
    assert secret.startswith("clr_test_")
    key_id = secret.split("_")[2]
    listing = run_cli("keys", "list", db=db, check=True).stdout
    assert key_id in listing and "admin,approver" in listing and secret not in listing
    bad = run_cli("keys", "create", "--name", "x", "--scope", "agent", db=db)
    assert bad.returncode == 2 and "must name the agent" in bad.stderr
    assert run_cli("keys", "revoke", key_id, db=db, check=True).stdout.startswith(f"revoked {key_id}")
    assert "revoked" in run_cli("keys", "list", db=db, check=True).stdout
    assert run_cli("keys", "revoke", "nope", db=db).returncode == 1


def test_clearance_serve_end_to_end(live_server: tuple[str, Path]) -> None:
    base, db = live_server
    secret = run_cli("keys", "create", "--name", "ops", "--scope", "admin", db=db, check=True).stdout.split()[-1]
    assert httpx.get(f"{base}/v1/me", headers={"X-API-Key": secret}).json()["scopes"] == ["admin"]
    assert httpx.get(f"{base}/v1/me").status_code == 401


@pytest.mark.postgres
def test_server_and_keys_on_postgresql(pg_url: str) -> None:
    from clearance._store import Database
    from clearance._store import _keys as keys
    from clearance.server import ServerSettings, create_app

    run_cli("db", "upgrade", db=pg_url, check=True)
    db = Database(pg_url)
    _, secret = keys.create(db, name="ops", scopes=["admin"], agent=None, environment="live", created_by="t")
    db.close()
    with TestClient(create_app(ServerSettings(database_url=pg_url))) as client:
        ready = client.get("/readyz").json()
        assert (ready["status"], ready["database"]) == ("ok", "postgresql") and ready["change_feed"] in (
            "listening",
            "lost",
        )
        assert client.get("/v1/me", headers={"X-API-Key": secret}).json()["environment"] == "live"
        assert client.get("/v1/me", headers={"X-API-Key": secret[:-1] + "x"}).status_code == 401
