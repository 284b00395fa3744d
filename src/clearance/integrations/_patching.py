"""Wrapping a framework's method where it has no hook to use: once, after a version check."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from ..errors import ConfigurationError

MARK = "__clearance_governed__"  # set on everything Clearance wrapped, so nothing is wrapped twice


def wrap_method(cls: type, name: str, make: Callable[[Any], Any]) -> bool:
    """Replace `cls.name` by `make(original)`; False (and nothing done) when it is wrapped already."""
    original = getattr(cls, name)
    if getattr(original, MARK, False):
        return False
    replacement = make(original)
    setattr(replacement, MARK, True)
    setattr(cls, name, replacement)
    return True


def check_version(dist: str, version: str, *, minimum: tuple[int, int], below: tuple[int, int]) -> None:
    """Fail loudly when `dist` is outside the versions the patch was tested against.

    Raises:
        ConfigurationError: Unparseable, too old, or too new.
    """
    found = re.match(r"(\d+)\.(\d+)", version)
    if found is None:
        raise ConfigurationError(f"cannot read the version of {dist} ({version!r}); Clearance cannot govern it safely")
    have = (int(found[1]), int(found[2]))
    if not minimum <= have < below:
        raise ConfigurationError(
            f"Clearance governs {dist} {_v(minimum)} up to (not including) {_v(below)}, and {version} is installed:"
            f' install a supported version (pip install "{dist}>={_v(minimum)},<{_v(below)}") or upgrade Clearance'
        )


def _v(version: tuple[int, int]) -> str:
    return ".".join(map(str, version))
