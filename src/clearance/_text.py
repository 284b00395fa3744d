"""Text at the boundary: what every store can hold, refused with a reason that says where.

PostgreSQL cannot keep a NUL in text, no encoder can write a lone surrogate, and both are
refused on every way in (arguments, names, ids, notes, policy text, queries), so SQLite and
PostgreSQL accept and refuse exactly the same input.
"""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import AfterValidator

UNSTORABLE = re.compile("[\x00\ud800-\udfff]")  # NUL and lone surrogates
LONE_SURROGATE = re.compile("[\ud800-\udfff]")


def text_problem(text: str, *, nul: bool = True) -> str | None:
    """Why `text` cannot be stored as it is, or None when it can.

    With `nul=False` only lone surrogates count (a NUL inside JSON text is written escaped).
    """
    found = (UNSTORABLE if nul else LONE_SURROGATE).search(text)
    if found is None:
        return None
    char, at = found.group(), found.start()
    if char == "\x00":
        return f"holds a NUL character (U+0000) at position {at}, which conditions would see cut and no store keeps"
    return f"holds a lone surrogate (U+{ord(char):04X}) at position {at}, which is not Unicode text"


def escaped(text: str) -> str:
    r"""`text` with each NUL written `\x00` and each lone surrogate as its `\udXXX` escape.

    For messages, reprs and errors: text that is shown, not decided on.
    """
    if text.isascii() and "\x00" not in text:
        return text
    return text.encode("utf-8", "backslashreplace").decode().replace("\x00", "\\x00")


def checked_text(text: str) -> str:
    """`text` itself, or ValueError saying why it cannot be stored."""
    if text.isascii() and "\x00" not in text:  # most text, decided without a search: no surrogate is ASCII
        return text
    problem = text_problem(text)
    if problem is not None:
        raise ValueError(problem)
    return text


# A str field of a request model that every store can keep (pydantic answers 422 naming the field).
Text = Annotated[str, AfterValidator(checked_text)]
