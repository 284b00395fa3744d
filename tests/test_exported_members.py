from __future__ import annotations

import subprocess
import sys

import clearance


def test_public_api_is_pinned() -> None:
    assert sorted(clearance.__all__) == sorted(
        [
            "NOT_GIVEN",
            "Approved",
            "ApprovalAlreadyDecided",
            "ApprovalAlreadyExecuted",
            "ApprovalDenied",
            "ApprovalEditRejected",
            "ApprovalError",
            "ApprovalForbidden",
            "ApprovalNotFound",
            "ApprovalPending",
            "ApprovalTimeout",
            "ChainBroken",
            "ClearanceError",
            "ConfigurationError",
            "Decision",
            "Effect",
            "GrantNotFound",
            "GrantRejected",
            "ModelCallBlocked",
            "PendingApproval",
            "Policy",
            "PolicyError",
            "ServerError",
            "Settings",
            "SpoolStatus",
            "StoreError",
            "ToolCallBlocked",
            "UsageRecord",
            "WebhookError",
            "WebhookOutcome",
            "__version__",
            "approval_mode",
            "configure",
            "current_approval",
            "flush",
            "get_session",
            "guard",
            "guard_tool",
            "handle_webhook",
            "load_policy",
            "parse_policy",
            "record_usage",
            "reset_session",
            "resume",
            "resume_async",
            "run_due",
            "session",
            "set_session",
            "shutdown",
            "spool_status",
            "verify_webhook",
        ]
    )
    for name in clearance.__all__:
        assert getattr(clearance, name) is not None


def test_errors_form_one_tree() -> None:
    for name in clearance.__all__:
        obj = getattr(clearance, name)
        if isinstance(obj, type) and issubclass(obj, Exception):
            assert issubclass(obj, clearance.ClearanceError)
    assert issubclass(clearance.PolicyError, clearance.ConfigurationError)
    assert issubclass(clearance.ModelCallBlocked, clearance.ToolCallBlocked)  # handled where a block is


def test_importing_opens_nothing_and_reads_no_environment() -> None:
    code = (
        "import os, clearance, sys; assert 'fastapi' not in sys.modules and 'uvicorn' not in sys.modules;"
        " print(sorted(m for m in sys.modules if m.startswith('clearance')))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env={"CLEARANCE_POLICY": "/nonexistent.yaml", "PATH": ""},
        cwd="/",
    ).stdout
    assert "clearance" in out  # and no error from the nonexistent policy: nothing was configured
