"""A record's time comes from an agent: one no calendar holds is shown as its number, and the pages still work.

`new Date(9e15).toISOString()` throws in the browser, so one such record once blanked the whole
audit log for everyone (any agent key could hide its own activity that way).
"""

from __future__ import annotations

import time

import httpx
from playwright.sync_api import expect

from clearance._store._events import new_id

from .conftest import Dashboard

FAR = 9_000_000_000_000_000_000  # within 64 bits, past JavaScript's dates (±8.64e18 µs)


def test_a_record_dated_past_any_calendar_leaves_every_page_readable(dashboard: Dashboard) -> None:
    now = time.time_ns() // 1000
    records = [
        {"id": new_id("evt"), "at_us": now, "kind": "tool_call.decided", "tool": "lookup", "call_id": "call-ok"}
        | {"decision": "allow", "args": {"order_id": "FINE-1"}, "session": "s-time"},
        {"id": new_id("evt"), "at_us": FAR, "kind": "tool_call.decided", "tool": "lookup", "call_id": "call-far"}
        | {"decision": "allow", "args": {"order_id": "FAR-1"}, "session": "s-time"},
    ]
    sent = httpx.post(
        f"{dashboard.server.base}/v1/events", headers={"X-API-Key": dashboard.server.agent}, json={"events": records}
    )
    assert sent.status_code == 200 and not sent.json()["refused"], sent.text
    dashboard.login()
    page = dashboard.page
    for fragment in ("#/audit", "#/audit?view=records"):
        page.goto(dashboard.url(fragment))
        expect(page.get_by_text("FINE-1").first).to_be_visible()
        expect(page.get_by_text("FAR-1").first).to_be_visible()
        expect(page.get_by_text(f"{FAR} µs (not a date)").first).to_be_visible()
    page.goto(dashboard.url("#/sessions"))
    expect(page.get_by_text("s-time").first).to_be_visible()
    assert not dashboard.console_errors, dashboard.console_errors
