"""Version checks for the integrations that must patch a framework (it has no hook to use)."""

from __future__ import annotations

import re

from ..errors import ConfigurationError


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
