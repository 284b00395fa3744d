"""The package version, in a module of its own so nothing imports the package root for it."""

from __future__ import annotations

__version__ = "0.1.0"
