"""A live demo agent: runs its conversations over and over, waiting for real people's decisions.

`python -m clearance._demo._live DATABASE AGENT` (the demo starts one process per agent). Each
turn is logged on stdout; a call that needs approval waits until someone decides it in the
dashboard (or it expires), then the agent carries on. `_CLEARANCE_DEMO_SEED` (private: for the
dashboard screenshots) draws the same amounts and pauses every run.
"""

from __future__ import annotations

import itertools
import os
import random
import sys
import time

import clearance

from ._script import AGENTS, Turn
from ._seed import POLICY, play

PAUSE_SECONDS = (2.0, 5.0)


def _varied(turn: Turn, rng: random.Random) -> Turn:
    """The same kind of call with amounts within 20%, so approvals keep coming, each new."""
    args = dict(turn.args)
    if "amount" in args:
        args["amount"] = round(float(args["amount"]) * rng.uniform(0.8, 1.2), 2)
    if "order_id" in args:
        args["order_id"] = f"A-{rng.randint(2000, 9999)}"
    return Turn(turn.model, turn.tokens, turn.latency_ms * rng.uniform(0.7, 1.5), turn.tool, args)


def main(database: str, agent: str) -> None:
    """Loop over the agent's conversations until stopped."""
    clearance.configure(policy=str(POLICY), database_url=database, agent=agent, environment="production")
    seed = os.environ.get("_CLEARANCE_DEMO_SEED", "")
    rng = random.Random(int(seed) if seed.isdigit() else None)  # unset: a new draw every run

    def waiting(p: clearance.PendingApproval) -> None:
        print(f"{agent}: {p.tool} waits for approval {p.approval_id} in the dashboard", flush=True)

    script = AGENTS[agent]
    # From the second conversation: the support and billing agents' first call waits for approval.
    for conversation in itertools.cycle(script[1:] + script[:1]):
        with clearance.session():
            for turn in conversation:
                time.sleep(rng.uniform(*PAUSE_SECONDS))
                outcome = play(_varied(turn, rng), database, waiting)
                print(f"{agent}: {turn.tool} -> {outcome}", flush=True)


if __name__ == "__main__":
    try:
        main(sys.argv[1], sys.argv[2])
    except KeyboardInterrupt:
        pass
    finally:
        clearance.shutdown()
