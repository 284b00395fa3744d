"""Wrapping a framework's method where it has no hook to use: with wrapt, once, after a version check.

wrapt's `FunctionWrapper` binds like the function it replaces (methods, class methods, async
methods, `__init__`), so a wrapper sees `(wrapped, instance, args, kwargs)` and calls
`wrapped(*args, **kwargs)` without handling `self`.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable
from typing import Any

import wrapt

from ..errors import ConfigurationError

MARK = "__clearance_governed__"  # set on everything Clearance wrapped, so nothing is wrapped twice
Wrapper = Callable[[Any, Any, tuple[Any, ...], dict[str, Any]], Any]  # (wrapped, instance, args, kwargs)


def wrap_method(cls: type, name: str, wrapper: Wrapper) -> bool:
    """Wrap `cls.name` with `wrapper`; False (and nothing done) when Clearance wrapped it already."""
    if governed(cls, name):
        return False
    setattr(wrapper, MARK, True)
    wrapt.wrap_function_wrapper(cls, name, wrapper)
    return True


def governed(cls: type, name: str) -> bool:
    """Whether Clearance wrapped `cls.name` (here or on a base class), under anyone else's wrappers too."""
    found = inspect.getattr_static(cls, name)
    while isinstance(found, wrapt.FunctionWrapper):
        if getattr(found._self_wrapper, MARK, False):
            return True
        found = found.__wrapped__
    return False


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
