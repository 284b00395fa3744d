"""A decided approval's signed receipt, downloaded from the dashboard, verifies with the server's key."""

from __future__ import annotations

import json
import re
from pathlib import Path

from playwright.sync_api import expect

from clearance import _integrity as integrity
from clearance import _receipts as receipts
from clearance import _signing as signing

from .conftest import Dashboard


def test_download_receipt_of_a_denial(dashboard: Dashboard) -> None:
    page = dashboard.page
    agent = dashboard.agent(300)
    dashboard.login()
    page.get_by_role("link", name=re.compile("issue_refund by refunds")).click()
    detail = page.get_by_role("region", name="Approval", exact=True)
    expect(detail.get_by_role("link", name="Download receipt")).to_have_count(0)  # pending: nothing to sign yet
    page.get_by_role("button", name="Deny…").click()
    page.get_by_label("Note for the agent (why not)").fill("No \u202eevil note")
    page.get_by_role("button", name="Deny", exact=True).click()
    assert dashboard.outcome(agent)["outcome"] == "denied"
    with page.expect_download() as download:
        detail.get_by_role("link", name="Download receipt").click()
    receipt = json.loads(Path(download.value.path()).read_text())
    assert receipt["payload"]["decision"] == "denied" and receipt["payload"]["note"] == "No \u202eevil note"
    key = signing.load_or_create(Path(str(dashboard.server.db)).parent / signing.KEY_FILE)
    assert receipts.problem(receipt, integrity.trusted_keys([key.public_pem.encode()])) is None
