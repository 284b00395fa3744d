"""Policies: load a YAML/JSON policy, validate and compile it, decide calls.

Pure: no I/O on the decision path; `load_policy` only reads the file it is given.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import PolicyError, PolicyProblem
from ._compile import Decision, Policy, ToolPlan, parse_policy
from ._facts import FactSpec, parse_fact
from ._model import ApprovalSpec, Effect, PolicyDocument, parse_duration

__all__ = [
    "ApprovalSpec",
    "Decision",
    "Effect",
    "FactSpec",
    "Policy",
    "PolicyDocument",
    "ToolPlan",
    "load_policy",
    "parse_duration",
    "parse_fact",
    "parse_policy",
]


def load_policy(path: str | os.PathLike[str]) -> Policy:
    """Read, validate and compile a policy file (YAML or JSON).

    Raises:
        PolicyError: When the file cannot be read or the policy is invalid; every problem is
            located as `file:line:column`.
    """
    name = os.fspath(path)
    try:
        text = Path(name).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise PolicyError([PolicyProblem(f"cannot read the policy file: {reason}", name)]) from None
    return parse_policy(text, name)
