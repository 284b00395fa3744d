"""What every command shares: opening the store, printing hostile text safely, tables, errors."""

from __future__ import annotations

import functools
import getpass
import json
import os
import re
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from .._settings import DEFAULT_DATABASE
from .._store import Database
from ..errors import ClearanceError

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

F = TypeVar("F", bound=Callable[..., Any])
# C0/C1 controls, DEL and bidi overrides: a tool argument must not be able to move the cursor,
# clear the screen, forge output lines or reorder text in an approver's terminal.
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def safe(text: object, *, newlines: bool = False) -> str:
    """Text with control characters shown as escapes (and newlines too, unless allowed)."""
    s = str(text)
    s = _CONTROL.sub(lambda m: f"\\u{ord(m.group()):04x}", s)
    if not newlines:
        s = s.replace("\n", "\\n").replace("\t", "\\t")
    return s


def compact_json(value: Any) -> str:
    """One-line JSON of a value, safe to print."""
    return safe(json.dumps(value, ensure_ascii=False, sort_keys=True, default=str))


def when(at_us: int | None) -> str:
    """A timestamp for people (UTC, seconds)."""
    if at_us is None:
        return "-"
    return datetime.fromtimestamp(at_us / 1e6, UTC).strftime("%Y-%m-%d %H:%M:%S")


def table(headers: Sequence[str], rows: Sequence[Sequence[object]], *, max_width: int = 60) -> str:
    """Rows as aligned columns; cells are made safe and cut to `max_width`."""
    cells = [[_cell(c, max_width) for c in row] for row in rows]
    widths = [max([len(h), *(len(r[i]) for r in cells)]) for i, h in enumerate(headers)]
    lines = ["  ".join(h.upper().ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in cells]
    return "\n".join(lines)


def _cell(value: object, width: int) -> str:
    s = safe("-" if value is None else value)
    return s if len(s) <= width else s[: width - 1] + "…"


def database_option(fn: F) -> F:
    """The `--database` option every store command takes."""
    return click.option(
        "--database",
        "--database-url",
        "database",
        envvar="CLEARANCE_DATABASE_URL",
        default=DEFAULT_DATABASE,
        show_default=True,
        help="The audit store: SQLite file path or SQLAlchemy URL (env CLEARANCE_DATABASE_URL).",
    )(fn)


def signing_key_option(help: str) -> Callable[[F], F]:
    """The `--key` option of the commands that sign or trust the signing key file (env CLEARANCE_SIGNING_KEY)."""
    return click.option(
        "--key", "key_path", envvar="CLEARANCE_SIGNING_KEY", default=None, type=click.Path(dir_okay=False), help=help
    )


def key_file(key_path: str | None, database: str) -> Path:
    """The signing key file's absolute path: `--key` (or CLEARANCE_SIGNING_KEY), else the default for the store."""
    from .. import _signing as signing

    return (Path(key_path) if key_path else signing.default_key_path(database)).absolute()


def key_file_trust(key_path: str | None, database: str) -> tuple[dict[str, Ed25519PublicKey] | None, str]:
    """The configured signing key's public half to trust (None: no key file there), and a line saying so.

    The file is `--key` / CLEARANCE_SIGNING_KEY, else the default beside the store; it is only
    read. `audit verify` and `db backup` trust it as the server trusts its own key.
    """
    from .. import _integrity as integrity

    path = key_file(key_path, database)
    shown = safe(str(path))
    try:
        with open(path, "rb") as f:
            pem = f.read(1_000_000)
    except FileNotFoundError:
        return None, (
            f"no signing key file at {shown}: the checkpoints are checked against the keys the chain"
            " introduces itself, so the chain is only shown to be self-consistent (give --public-key or --key"
            " to check who signed it)"
        )
    except OSError as exc:
        raise click.BadParameter(f"cannot read {shown}: {exc.strerror or exc}", param_hint="--key") from None
    try:
        keys = integrity.trusted_keys([pem])
    except ValueError as exc:
        raise click.BadParameter(f"{shown}: {exc}", param_hint="--key") from None
    return keys, f"trusting checkpoints of the signing key {', '.join(keys)} ({shown})"


def open_db(database: str, *, create: bool = False) -> Database:
    """Open the store for a command; a missing SQLite file is an error unless `create`."""
    return Database(database, create=create, busy_timeout=float(os.environ.get("CLEARANCE_BUSY_TIMEOUT", "30")))


def decider(by: str | None) -> str:
    """Who is deciding: `--by`, else CLEARANCE_USER, else the OS user."""
    name = by or os.environ.get("CLEARANCE_USER") or _os_user()
    if not name.strip():
        raise click.UsageError("say who is deciding with --by NAME or CLEARANCE_USER")
    return name.strip()


def _os_user() -> str:
    try:
        return getpass.getuser()
    except Exception:  # no user database entry (containers): ask for --by instead
        return ""


def friendly(fn: F) -> F:
    """Turn Clearance errors into one readable line each and exit status 1, never a traceback."""

    @functools.wraps(fn)
    def run(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except ClearanceError as exc:
            for line in str(exc).splitlines() or [type(exc).__name__]:
                click.echo(f"error: {safe(line)}", err=True)
            raise SystemExit(1) from None
        except OSError as exc:
            click.echo(f"error: {safe(exc)}", err=True)
            raise SystemExit(1) from None

    return run  # type: ignore[return-value]
