"""The newest checkpoint a signing key has signed or seen, kept in a file beside the key.

A signer must not sign a chain someone rewrote: deleted the newest checkpoints, changed records
after an older one and rehashed the rest. It checks that the chain still holds the newest
checkpoint of its key it knows (`_seals.sign`'s `known`). Known only in memory, a restart would
forget it and trust whatever the store holds; so it is kept in `<key file>.last`, a JSON object
with one entry a store (its name: a SQLite file's absolute path, else the backend, host, port
and database of its URL: `store_name`) holding `seq`, `hash`, `at_us`, `key_id` and `signature`,
and read back only when it verifies with the key. One key file may sign more than one store;
each has its own entry. A signer adopts a newer checkpoint of its key from the store (a
replica's) only while the chain still holds the one it knows (`newest`).

The file is written whole (a temporary file, flushed to disk, renamed over it; mode 0600),
under a lock on the key file, and only forward (a newer `seq`): the workers and replicas
sharing a key file share it too. A file of another key (the key file was replaced: a rotation)
is not this key's memory and is ignored, then replaced by the new key's first checkpoint.
After a store is restored from a backup, its chain lacks the newest checkpoints for a good
reason: `clearance audit checkpoint --forget` removes the store's entry (`forget`;
docs/operations/backup.md), and the signer starts from the store's.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from . import _signing as signing
from ._signing import SigningKey
from ._store import _seals as seals
from ._store._db import Database
from ._store._seals import Checkpoint
from .errors import ConfigurationError

SUFFIX = ".last"
_FIELDS = ("seq", "hash", "at_us", "key_id", "signature")


def path(key_path: Path | str) -> Path:
    """Where the memory of the key file at `key_path` lives (absolute)."""
    return Path(f"{os.path.abspath(key_path)}{SUFFIX}")


def after_restore(key_path: Path | str) -> str:
    """What to do when a restored store is the reason the chain lacks the remembered checkpoint."""
    return (
        f"if the store was restored from a backup, forget it: clearance audit checkpoint --forget --key {key_path}"
        " (and the store's --database), then restart the server"
    )


def signed_by(key: SigningKey, cp: Checkpoint) -> bool:
    """Whether `cp` is signed by `key` (a row in the store is not proof of that)."""
    return cp.key_id == key.id and signing.verify(key.private.public_key(), cp.payload(), cp.signature)


def newest(db: Database, key: SigningKey, known: Checkpoint | None, seen: Checkpoint | None) -> Checkpoint | None:
    """`seen` (the store's newest) when it is `key`'s, newer than `known`, and the chain holds both; else `known`.

    Only while the chain still holds `known`: a checkpoint of this key copied in from another
    store it signs, with that store's records, would otherwise replace the memory for good.
    """
    if seen is None or (known is not None and seen.seq <= known.seq) or not signed_by(key, seen):
        return known
    keys = public(key)
    held = known is None or seals.missing(db, known, keys) is None
    return seen if held and seals.missing(db, seen, keys) is None else known  # not held: signing refuses


def store_name(database_url: str) -> str:
    """The name of a store's entry: a SQLite file's absolute path, else its backend, host, port and database.

    The same store however its URL is spelled: `postgresql://` or `postgresql+psycopg://`, the host
    in any case, the default port given or not, any user, password or query parameters. (A host
    given by name and by address are still two names.)
    """
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    from ._store._db import normalise_url

    try:
        url = make_url(normalise_url(database_url))
    except ArgumentError:  # not a URL: opening the store says so
        return database_url
    backend = url.get_backend_name()
    if backend == "sqlite" and url.database:
        return str(Path(url.database).resolve())
    if backend == "postgresql":
        return f"postgresql://{(url.host or '').lower()}:{url.port or 5432}/{url.database or ''}"
    return url.render_as_string(hide_password=True)


def load(key_path: Path | str, keys: Mapping[str, Ed25519PublicKey], store: str) -> Checkpoint | None:
    """The newest checkpoint in `store` remembered beside the key file (None: none, or not of one of `keys`).

    `keys`: the key file's public half by id (`public(key)` for a signing key).

    Raises:
        ConfigurationError: The file cannot be read, is not one of checkpoints, or the store's
            does not verify with the key: the signer must not sign until a person has looked.
    """
    where = path(key_path)
    try:
        text = where.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ConfigurationError(f"cannot read the checkpoint memory {where}: {exc.strerror or exc}") from None
    entries = _parsed(text)
    if entries is None:
        raise ConfigurationError(f"the checkpoint memory {where} is not a checkpoint (changed, or cut short)")
    cp = entries.get(store)
    public = keys.get(cp.key_id) if cp is not None else None
    if cp is None or public is None:
        return None
    if not signing.verify(public, cp.payload(), cp.signature):
        raise ConfigurationError(f"the checkpoint memory {where} does not verify with the key {cp.key_id} (changed)")
    return cp


def stores(key_path: Path | str, keys: Mapping[str, Ed25519PublicKey]) -> list[str]:
    """The stores the file holds a checkpoint of one of `keys` for (none when the file will not do)."""
    try:
        entries = _entries(path(key_path))
    except OSError:
        return []
    return sorted(name for name, cp in (entries or {}).items() if cp.key_id in keys)


def public(key: SigningKey) -> dict[str, Ed25519PublicKey]:
    """A signing key's public half by id, as `load` takes it."""
    return {key.id: key.private.public_key()}


def _parsed(text: bytes) -> dict[str, Checkpoint] | None:
    """Each store's checkpoint in the file (None: the file is not such an object)."""
    try:
        data: Any = json.loads(text)
    except (ValueError, RecursionError):
        return None
    if not isinstance(data, dict):
        return None
    found = {}
    for store, fields in data.items():
        cp = _checkpoint(fields)
        if cp is None:
            return None
        found[store] = cp
    return found


def _checkpoint(data: Any) -> Checkpoint | None:
    if not isinstance(data, dict) or any(k not in data for k in _FIELDS):
        return None
    seq, hash_, at_us, key_id, signature = (data[k] for k in _FIELDS)
    if type(seq) is not int or type(at_us) is not int or seq < 1:
        return None
    if not all(isinstance(v, str) for v in (hash_, key_id, signature)):
        return None
    return Checkpoint(seq, hash_, at_us, key_id, signature, seq + 1)  # its record follows what it signs


def remember(key_path: Path | str, cp: Checkpoint, store: str) -> bool:
    """Keep `cp` as `store`'s newest checkpoint, unless the file holds one as new; whether it was written.

    Raises:
        OSError: The file cannot be written (the directory is read-only, the disk full).
        ConfigurationError: The file is there but not one of checkpoints: it stays for a person to look at.
    """
    where = path(key_path)
    with _locked(key_path):
        entries = _entries(where)
        if entries is None:
            raise ConfigurationError(f"the checkpoint memory {where} is not a checkpoint (changed, or cut short)")
        held = entries.get(store)
        if held is not None and held.seq >= cp.seq:
            return False
        _write(where, {**entries, store: cp})
    return True


def forget(key_path: Path | str, store: str) -> str | None:
    """Remove `store`'s entry, after a person has looked (a store restored from a backup); what was forgotten.

    A file that is not one of checkpoints is removed whole. None: nothing was remembered for `store`.
    """
    where = path(key_path)
    with _locked(key_path):
        entries = _entries(where)
        if entries is None:
            where.unlink()
            return f"{where}, which was not one of checkpoints (every store's entry)"
        gone = entries.pop(store, None)
        if gone is None:
            return None
        _write(where, entries)
    return f"the checkpoint of record {gone.seq} (hash {gone.hash[:16]}…, key {gone.key_id}) in {where}"


@contextlib.contextmanager
def _locked(key_path: Path | str) -> Iterator[None]:
    """Held by every writer: a read-then-replace is never interleaved with another."""
    with open(key_path, "rb") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _entries(where: Path) -> dict[str, Checkpoint] | None:
    try:
        return _parsed(where.read_bytes())
    except FileNotFoundError:
        return {}


def _write(where: Path, entries: dict[str, Checkpoint]) -> None:
    """Replace the file whole: a temporary file flushed to disk, renamed over it, the directory flushed."""
    text = json.dumps({name: {k: getattr(c, k) for k in _FIELDS} for name, c in entries.items()}, sort_keys=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{where.name}.", dir=where.parent)  # mode 0600
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(text)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, where)
    finally:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
    directory = os.open(where.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)
