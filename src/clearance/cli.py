"""Entry point of the `clearance` command (`clearance --help`)."""

from __future__ import annotations

from ._cli import main

__all__ = ["main"]

if __name__ == "__main__":
    main()
