"""A scripted agent for the browser tests: one governed refund, its outcome printed as JSON.

Run as `python agent.py SERVER_URL API_KEY SPOOL AMOUNT [SESSION]`; it waits for an approval as
a real agent would, and prints `{"outcome": ..., ...}` on one line when the call ends.
"""

from __future__ import annotations

import json
import sys

import clearance


def issue_refund(order_id: str, amount: float, reason: str) -> str:
    return f"refund of ${amount:.2f} for {order_id} issued"


def main() -> None:
    server, key, spool, amount = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
    clearance.configure(server_url=server, api_key=key, spool_path=spool)
    refund = clearance.guard_tool("issue_refund", issue_refund)
    with clearance.session():
        clearance.record_usage("gpt-4o-mini", 1200, 80, provider="openai")
        print(json.dumps({"outcome": "started"}), flush=True)
        try:
            result = refund(order_id="A-1003", amount=amount, reason='<img src=x onerror="alert(1)">')
        except clearance.ApprovalDenied as denied:
            print(json.dumps({"outcome": "denied", "note": denied.note, "by": denied.decided_by}), flush=True)
        except clearance.ToolCallBlocked as blocked:
            print(json.dumps({"outcome": "blocked", "reason": blocked.reason}), flush=True)
        else:
            print(json.dumps({"outcome": "ran", "result": result}), flush=True)
    clearance.shutdown()


if __name__ == "__main__":
    main()
