"""The agent's side of the snapshot: hostile grant fields never crash it, and old snapshots load.

A snapshot comes from the server, which a compromised one could fill with anything. A grant
the agent cannot read whole is dropped (its calls go to the server, which decides them); one
with a limit is never used here; a snapshot that is no snapshot keeps the last good one.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from clearance import ConfigurationError
from clearance._remote._client import Client
from clearance._remote._grants import HeldGrants
from clearance._remote._snapshot import PolicySync
from clearance.policy import parse_policy

from .._wait import until

POLICY = """\
version: 1
tools:
  issue_refund:
    rules:
      - {id: big, when: 'args.amount > 100', effect: require_approval, approval: {grants: {scopes: [agent]}}}
"""
REVISION = parse_policy(POLICY, "policy.yaml").revision
NOW = time.time_ns() // 1000
GOOD = {
    "id": "grt_" + "0" * 32,
    "scope": "agent",
    "session": None,
    "requester": None,
    "tool": "issue_refund",
    "rule_ids": ["big"],
    "constraints": {"amount": {"maximum": 500}},
    "max_calls": None,
    "total_arg": None,
    "max_total": None,
    "granted_by": "user:lena",
    "created_at_us": NOW,
    "expires_at_us": NOW + 3_600_000_000,
}


def deep(n: int) -> Any:
    value: Any = 1
    for _ in range(n):
        value = {"a": value}
    return value


HOSTILE: list[Any] = [
    "grt_x",
    5,
    None,
    [],
    {},
    {**GOOD, "id": "grt_short"},
    {**GOOD, "id": 7},
    {**GOOD, "id": "grt_" + "0" * 32 + "\n"},
    {**GOOD, "scope": "everyone"},
    {**GOOD, "scope": "session", "session": None},
    {**GOOD, "scope": "requester", "requester": ""},
    {**GOOD, "tool": None},
    {**GOOD, "tool": "issue_refund\x00"},
    {**GOOD, "granted_by": "lena\ud800"},
    {**GOOD, "rule_ids": "big"},
    {**GOOD, "rule_ids": [1]},
    {**GOOD, "rule_ids": None},
    {**GOOD, "expires_at_us": "soon"},
    {**GOOD, "expires_at_us": float("nan")},
    {**GOOD, "expires_at_us": 1e400},
    {**GOOD, "created_at_us": None},
    {**GOOD, "constraints": "amount <= 500"},
    {**GOOD, "constraints": {"amount": "number"}},
    {**GOOD, "constraints": {"amount": {"pattern": "("}}},
    {**GOOD, "constraints": {"amount": {"maximum": "lots"}}},
    {**GOOD, "constraints": {"amount": {"maximum": float("nan")}}},
    {**GOOD, "constraints": {"amount": {"bogus": 1}}},
    {**GOOD, "constraints": {"amount": deep(900)}},
    {**GOOD, "constraints": {"\ud800": {"maximum": 1}}},
    {k: v for k, v in GOOD.items() if k != "expires_at_us"},
]
LIMITED: list[Any] = [
    {**GOOD, "id": "grt_" + "1" * 32, "max_calls": 3},
    {**GOOD, "id": "grt_" + "2" * 32, "max_calls": -1},
    {**GOOD, "id": "grt_" + "3" * 32, "total_arg": "amount", "max_total": "NaN"},
    {**GOOD, "id": "grt_" + "4" * 32, "max_total": "500"},
]


def covered(held: HeldGrants, amount: Any = 300, at: int = NOW) -> str | None:
    found = held.covering(
        "issue_refund", session="s1", requester=None, rule_ids=("big",), args={"amount": amount}, at=at
    )
    return found.id if found else None


def test_hostile_grants_are_dropped_and_limited_ones_never_used_here() -> None:
    held = HeldGrants.read([*HOSTILE, *LIMITED, GOOD])
    assert held.ids() == [GOOD["id"]]
    assert held.dropped == len(HOSTILE) and held.counts("issue_refund")
    assert covered(held) == GOOD["id"]
    assert covered(held, 501) is None  # past its constraint
    assert covered(held, "300") is None  # a maximum holds only for a number
    assert covered(held, at=GOOD["expires_at_us"]) is None  # expired by this agent's clock
    for items in ("grants", 7, {"a": GOOD}, [None] * 10_000):
        assert HeldGrants.read(items).ids() == []


def test_a_constraint_that_backtracks_covers_nothing_rather_than_stall() -> None:
    slow = {**GOOD, "constraints": {"order_id": {"pattern": "^(a+)+$"}}}
    held = HeldGrants.read([slow])
    started = time.monotonic()
    found = held.covering(
        "issue_refund", session="s1", requester=None, rule_ids=("big",), args={"order_id": "a" * 40 + "!"}, at=NOW
    )
    assert found is None and time.monotonic() - started < 2


@contextlib.contextmanager
def sync_against(tmp_path: Path, answer: Callable[[httpx.Request], httpx.Response]) -> Iterator[PolicySync]:
    """A policy sync whose server answers with `answer`."""
    client = Client("http://clearance.test", "key")
    client._http = httpx.Client(transport=httpx.MockTransport(answer), base_url="http://clearance.test")
    sync = PolicySync(client, tmp_path / "s.snapshot.json")
    yield sync
    sync.close()


def snapshot(**more: Any) -> dict[str, Any]:
    return {"revision": REVISION, "content_hash": "h", "source": "policy.yaml", "text": POLICY, **more}


def answering(body: Any, *, raw: bytes | None = None, etag: str = "e1") -> Callable[[httpx.Request], httpx.Response]:
    def answer(request: httpx.Request) -> httpx.Response:
        if request.headers.get("if-none-match") == f'"{etag}"':
            time.sleep(0.05)  # a long poll that sees no change
            return httpx.Response(304, headers={"ETag": f'"{etag}"'})
        content = raw if raw is not None else json.dumps(body).encode()
        return httpx.Response(200, content=content, headers={"ETag": f'"{etag}"'})

    return answer


@pytest.mark.parametrize(
    "grants",
    ["all of them", 42, {"id": GOOD["id"]}, [GOOD] * 2 + HOSTILE, [[GOOD]], None],
    ids=["text", "number", "object", "mixed", "nested", "null"],
)
def test_a_snapshot_with_hostile_grants_still_gives_the_policy(tmp_path: Path, grants: Any) -> None:
    with sync_against(tmp_path, answering(snapshot(grants=grants))) as sync:
        sync.start()
        assert sync.policy.revision == REVISION and sync.state.etag == "e1"
        assert sync.state.grants.ids() in ([], [GOOD["id"], GOOD["id"]])


@pytest.mark.parametrize(
    "shadow",
    ["x", 5, {"text": "version: 1"}, {**snapshot(), "text": "version: [nope"}, {**snapshot(), "revision": "rev_x"}],
    ids=["text", "number", "partial", "no-compile", "wrong-revision"],
)
def test_a_shadow_the_agent_cannot_use_is_left_out_and_the_policy_kept(tmp_path: Path, shadow: Any) -> None:
    with sync_against(tmp_path, answering(snapshot(shadow=shadow, grants=[GOOD]))) as sync:
        sync.start()
        assert sync.policy.revision == REVISION and sync.state.shadow is None
        assert sync.state.grants.ids() == [GOOD["id"]]


@pytest.mark.parametrize(
    "raw",
    [b"not json", b"[1, 2]", json.dumps({"revision": REVISION}).encode(), b"[" * 100_000 + b"]" * 100_000],
    ids=["not-json", "list", "no-text", "deep"],
)
def test_an_answer_that_is_no_snapshot_fails_closed_without_a_saved_one(tmp_path: Path, raw: bytes) -> None:
    with sync_against(tmp_path, answering(None, raw=raw)) as sync:
        with pytest.raises(ConfigurationError, match="no policy"):
            sync.start()


def test_a_cached_snapshot_from_before_grants_still_loads(tmp_path: Path) -> None:
    cache = tmp_path / "s.snapshot.json"
    cache.write_text(json.dumps(snapshot()))  # what agents before v2 saved: the policy alone

    def down(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused")

    with sync_against(tmp_path, down) as sync:
        sync.start()
        assert sync.policy.revision == REVISION
        assert sync.state.grants.ids() == [] and sync.state.shadow is None and sync.state.etag is None


def test_grants_are_never_saved_a_shadow_is(tmp_path: Path) -> None:
    shadow_text = POLICY.replace("100", "50")
    shadow = {**snapshot(), "text": shadow_text, "revision": parse_policy(shadow_text, "policy.yaml").revision}
    with sync_against(tmp_path, answering(snapshot(grants=[GOOD], shadow=shadow))) as sync:
        sync.start()
        assert sync.state.grants.ids() == [GOOD["id"]]
    saved = json.loads((tmp_path / "s.snapshot.json").read_text())
    assert "grants" not in saved and saved["shadow"]["revision"] == shadow["revision"]
    with sync_against(tmp_path, answering(None, raw=b"down")) as sync:
        sync.start()  # from the saved one: no grants (a revocation could not have reached it)
        assert sync.state.grants.ids() == [] and sync.state.shadow is not None
        assert sync.state.shadow.revision == shadow["revision"]


def test_a_new_grant_swaps_the_grants_but_keeps_the_compiled_policy(tmp_path: Path) -> None:
    answers = {None: ("e1", snapshot(grants=[])), '"e1"': ("e2", snapshot(grants=[GOOD]))}
    granted = threading.Event()

    def answer(request: httpx.Request) -> httpx.Response:
        sent = request.headers.get("if-none-match")
        if sent == '"e1"':
            granted.wait(10)  # the long poll is held until the grant is given
        if sent not in answers:
            time.sleep(0.05)  # a long poll that sees no change
            return httpx.Response(304, headers={"ETag": sent or ""})
        etag, body = answers[sent]
        return httpx.Response(200, json=body, headers={"ETag": f'"{etag}"'})

    with sync_against(tmp_path, answer) as sync:
        sync.start()
        first = sync.policy
        assert sync.state.grants.ids() == []
        granted.set()
        until(lambda: sync.state.grants.ids() == [GOOD["id"]], "the new grant arrives")
        assert sync.policy is first and sync.state.etag == "e2"  # the same revision is not compiled again


def test_a_held_grant_covers_nothing_once_the_policy_stops_the_rule_granting() -> None:
    from clearance._remote._local import decide
    from clearance._remote._snapshot import Synced

    held = HeldGrants.read([GOOD])
    granting = Synced(parse_policy(POLICY, "policy.yaml"), held, None, None)
    decision, use = decide(granting, "issue_refund", {"amount": 300}, session="s1", requester=None, at=NOW)
    assert decision.effect.value == "allow" and use is not None and use.grant_id == GOOD["id"]
    stricter = POLICY.replace(", approval: {grants: {scopes: [agent]}}", "")
    tightened = Synced(parse_policy(stricter, "policy.yaml"), held, None, None)
    decision, use = decide(tightened, "issue_refund", {"amount": 300}, session="s1", requester=None, at=NOW)
    assert decision.effect.value == "require_approval" and use is None  # before: allowed by the old grant


def test_the_person_who_granted_gets_no_grant_for_their_own_calls() -> None:
    held = HeldGrants.read([GOOD])
    found = held.covering(
        "issue_refund", session="s1", requester="lena", rule_ids=("big",), args={"amount": 300}, at=NOW
    )
    assert found is None
    assert covered(held) == GOOD["id"]  # for anyone else it still does
