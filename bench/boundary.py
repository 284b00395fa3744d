"""What the argument boundary costs a call, side by side with what it replaced and the alternative.

Per call, the guard now checks the names and the arguments (I-JSON, limits) and hashes them with
RFC 8785. Measured here in one process, on the arguments `guard_overhead.py` uses and on a
larger call: the check, the hash as it was (orjson, sorted keys), as it is (JCS: orjson where
it writes the same text), and the pure-Python `rfc8785` library for every call. Prints figures;
asserts nothing.

    .venv/bin/python bench/boundary.py [--calls 50000]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from typing import Any

import rfc8785

from clearance._boundary import admit_names, check_args
from clearance._canonical import args_hash, canonical_json, sha256_hex

SMALL = {"order_id": "A-10042", "amount": 125.5, "currency": "USD", "reason": "damaged", "customer_tier": "gold"}
WHOLE = {**SMALL, "amount": 125.0}  # a whole float: JCS writes 125, so the fast path rewrites it
LARGE = {
    "to": [f"user{i}@acme.com" for i in range(20)],
    "subject": "Quarterly update",
    "body": "Hello,\n" * 200,
    "meta": {"tags": ["a", "b", "c"], "priority": 3, "ratio": 0.25, "nested": {"k": [1, 2, {"x": "y"}]}},
}


def median_us(fn: Callable[[], Any], n: int) -> float:
    for _ in range(min(n, 2000)):
        fn()
    samples = []
    for _ in range(n):
        t = time.perf_counter_ns()
        fn()
        samples.append(time.perf_counter_ns() - t)
    return statistics.median(samples) / 1000


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=50000)
    n = parser.parse_args().calls
    print(f"the boundary, per call (median of {n}, µs)")
    print(
        f"{'arguments':<10} {'names':>7} {'check':>7} {'hash before':>12} {'hash now':>9} {'rfc8785':>9} {'added':>7}"
    )
    for label, args in (("small", SMALL), ("whole", WHOLE), ("large", LARGE)):
        names = median_us(lambda: admit_names("issue_refund", "ses_1"), n)
        check = median_us(lambda a=args: check_args(a), n)  # type: ignore[misc]
        before = median_us(lambda a=args: sha256_hex(canonical_json(a)), n)  # type: ignore[misc]
        now = median_us(lambda a=args: args_hash(a, canonical_json(a)), n)  # type: ignore[misc]
        library = median_us(lambda a=args: sha256_hex(rfc8785.dumps(a).decode()), n)  # type: ignore[misc]
        added = names + check + now - before
        print(f"{label:<10} {names:7.2f} {check:7.2f} {before:12.2f} {now:9.2f} {library:9.2f} {added:7.2f}")
    print("added = names + check + hash now - hash before: what the boundary adds to a guarded call")


if __name__ == "__main__":
    main()
