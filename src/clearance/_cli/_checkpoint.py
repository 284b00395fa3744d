"""`clearance audit checkpoint`, and what `audit verify` reads of the signer's memory (KEY.last)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from .. import _seal_memory as memory
from ..errors import ClearanceError
from ._common import database_option, friendly, key_file, open_db, safe, signing_key_option

if TYPE_CHECKING:
    from .._signing import SigningKey
    from .._store._db import Database
    from .._store._seals import Checkpoint

UNUSABLE = "not verified against the signer's memory"  # `audit verify` fails with a line starting so


def remembered(
    key_path: str | None, database: str, anchor: dict[str, Any] | None, db: Database
) -> tuple[Checkpoint | None, str]:
    """The newest checkpoint the signer remembers for this store (KEY.last) to look for, and a line saying so.

    The line starts with `UNUSABLE` when the memory will not do (the signer refuses then too),
    with WARNING when it holds none for this store but the store's newest checkpoint is of the key.
    """
    from .._store import _seals as seals

    if anchor is None:
        return None, ""
    path, store = key_file(key_path, database), memory.store_name(database)
    try:
        kept = memory.load(path, anchor, store)
    except ClearanceError as exc:
        return None, f"{UNUSABLE}: {safe(exc)}; once you know why, clearance audit checkpoint --forget removes it"
    if kept is None:
        others = _others(path, anchor, store, seals.latest(db))
        return None, f"WARNING: {others}" if others else ""
    return kept, f"the signer's newest checkpoint, of record {kept.seq} ({safe(memory.path(path))}), is in the chain"


def _others(path: Path, keys: dict[str, Any], store: str, latest: Checkpoint | None) -> str:
    """What to say when the memory holds checkpoints of the key for other stores, not this one that it signed."""
    names = [n for n in memory.stores(path, keys) if n != store]
    if latest is None or latest.key_id not in keys or not names:
        return ""
    return (
        f"{safe(memory.path(path))} remembers no checkpoint for {safe(store)}, whose newest checkpoint is of key"
        f" {latest.key_id}, but remembers ones of that key for {safe(', '.join(names))}: if --database names one"
        " of those stores in another way, give it as the server does"
    )


@click.command("checkpoint")
@signing_key_option(
    "The Ed25519 private key (PEM) to sign with; created (mode 0600) when absent, unless --forget"
    " (env CLEARANCE_SIGNING_KEY; default signing-key.pem beside the SQLite store)."
)
@click.option(
    "--forget",
    is_flag=True,
    help="First forget the newest checkpoint remembered for this store (KEY.last): after restoring it from"
    " a backup, whose chain lacks the checkpoints signed since. Then restart the server.",
)
@click.option(
    "--adopt",
    is_flag=True,
    help="Trust this store's newest checkpoint when KEY.last remembers checkpoints of the key for other"
    " stores only (a store it signed before its memory was kept).",
)
@database_option
@friendly
def checkpoint(key_path: str | None, forget: bool, adopt: bool, database: str) -> None:
    """Sign the chain head now (a signed checkpoint), unless nothing was recorded since the last.

    Refused when the chain no longer holds the newest checkpoint this key has signed, as the
    server refuses: it is kept beside the key file (KEY.last), and a restart forgets nothing.
    """
    from .. import _signing as signing
    from .._clock import now_us
    from .._store import _seals as seals
    from ..errors import ChainBroken

    path, store = key_file(key_path, database), memory.store_name(database)
    if forget and not path.is_file():
        raise click.ClickException(
            f"no signing key file at {safe(str(path))}: --forget removes what a key remembers (give its --key)"
        )
    db = open_db(database)
    try:
        key = signing.load_or_create(path)
        if forget:
            _forget(path, key, store)
        try:
            known = memory.load(path, memory.public(key), store)
        except ClearanceError as exc:
            raise click.ClickException(f"not signing: {safe(exc)}; once you know why, --forget removes it") from None
        latest = seals.latest(db)
        if known is None and not (adopt or forget) and (others := _others(path, memory.public(key), store, latest)):
            raise click.ClickException(f"not signing: {others}; if not, --adopt trusts this store's newest checkpoint")
        known = memory.newest(db, key, known, latest)
        made = seals.sign(db, key, now_us=now_us(), known=known)
    except ChainBroken as exc:
        raise click.ClickException(f"not signing: {safe(exc)}; {safe(memory.after_restore(path))}") from None
    finally:
        db.close()
    kept = made or known
    try:
        if kept is not None:
            memory.remember(path, kept, store)
    except (OSError, ClearanceError) as exc:
        click.echo(f"warning: cannot keep the newest checkpoint in {safe(memory.path(path))}: {safe(exc)}", err=True)
    if made is None:
        where = f" (the last signs record {latest.seq})" if latest else ""
        click.echo(f"nothing recorded since the last checkpoint{where}: none signed")
        return
    click.echo(f"signed record {made.seq}, hash {made.hash}, with key {made.key_id}")


def _forget(path: Path, key: SigningKey, store: str) -> None:
    gone = memory.forget(path, store)
    if gone is None:
        names = memory.stores(path, memory.public(key))
        held = f"it remembers checkpoints for {safe(', '.join(names))}" if names else "it remembers none of this key"
        raise click.ClickException(
            f"nothing was remembered for {safe(store)} in {safe(memory.path(path))} ({held}): check --database"
        )
    click.echo(f"forgot {safe(gone)}")
