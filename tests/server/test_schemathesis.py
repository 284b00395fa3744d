"""No input makes the API fail: schemathesis generates requests from the OpenAPI spec and sends
them to a real `clearance serve`; any 5xx fails the test.

(schemathesis's pytest plugin does not work with pytest 9, so its strategies are driven here
with hypothesis directly.)
"""

from __future__ import annotations

from pathlib import Path

import schemathesis
from hypothesis import HealthCheck, given, settings

from clearance.store import Database
from clearance.store import _keys as keys


def test_no_input_makes_the_api_fail(live_server: tuple[str, Path]) -> None:
    base, db_path = live_server
    db = Database(str(db_path))
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

        @given(case=operation.as_strategy())
        @settings(max_examples=12, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        def check(case: schemathesis.Case) -> None:
            response = case.call(headers={"X-API-Key": key}, timeout=30)
            if response.status_code >= 500:
                failures.append(f"{case.method} {case.formatted_path} -> {response.status_code}: {response.text[:200]}")

        check()
    assert operations >= 25
    assert failures == []
