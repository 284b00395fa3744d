"""The server's Ed25519 key, and signatures over canonical JSON (checkpoints and receipts).

What is signed is always a JSON object of strings, integers, booleans and nulls, written as
RFC 8785 (JCS) text in UTF-8. For such an object that text is exactly what the standard
library writes with `json.dumps(obj, sort_keys=True, separators=(",", ":"),
ensure_ascii=False)`, so a verifier needs nothing but `json` and `cryptography`.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import rfc8785
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from .errors import ConfigurationError

KEY_FILE = "signing-key.pem"


def signed_bytes(payload: Mapping[str, Any]) -> bytes:
    """The bytes a signature covers: the RFC 8785 canonical JSON of `payload`, UTF-8."""
    return rfc8785.dumps(dict(payload))


def key_id(public: Ed25519PublicKey) -> str:
    """A short, stable name for a public key: `ed25519:` and 16 hex digits of the SHA-256 of its raw bytes."""
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return "ed25519:" + hashlib.sha256(raw).hexdigest()[:16]


def public_pem(public: Ed25519PublicKey) -> str:
    """The public key as PEM (SubjectPublicKeyInfo) text."""
    return public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()


@dataclass(frozen=True)
class SigningKey:
    """A private key that signs, with its public half's id and PEM text."""

    private: Ed25519PrivateKey
    id: str
    public_pem: str

    def sign(self, payload: Mapping[str, Any]) -> str:
        """The base64 Ed25519 signature of `signed_bytes(payload)`."""
        return base64.b64encode(self.private.sign(signed_bytes(payload))).decode()


def _from_private(private: Ed25519PrivateKey) -> SigningKey:
    public = private.public_key()
    return SigningKey(private, key_id(public), public_pem(public))


def default_key_path(database_url: str) -> Path:
    """Where the key lives unless a setting says: beside a SQLite store, else `.clearance/` here."""
    if "://" in database_url and not database_url.startswith("sqlite"):
        return Path(".clearance") / KEY_FILE
    path = database_url.split(":///", 1)[1] if database_url.startswith("sqlite") else database_url
    return Path(path).expanduser().resolve().parent / KEY_FILE


def load_or_create(path: Path | str) -> SigningKey:
    """The Ed25519 private key in the PEM file at `path`, generated there (mode 0600) when absent.

    Raises:
        ConfigurationError: The file cannot be read or written, or holds no Ed25519 private key.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return _create(path)
    except OSError as exc:
        raise ConfigurationError(f"cannot read the signing key {path}: {exc.strerror or exc}") from None
    try:
        private = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise ConfigurationError(f"the signing key {path} is not an unencrypted PEM private key: {exc}") from None
    if not isinstance(private, Ed25519PrivateKey):
        raise ConfigurationError(f"the signing key {path} is not an Ed25519 key")
    return _from_private(private)


def _create(path: Path) -> SigningKey:
    private = Ed25519PrivateKey.generate()
    pem = private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # Written whole under a name of its own, then linked into place: a process starting beside
        # this one never reads a half-written key, and the first link wins (the others load it).
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    except OSError as exc:
        raise ConfigurationError(f"cannot create the signing key {path}: {exc.strerror or exc}") from None
    try:
        with os.fdopen(fd, "wb") as out:  # mkstemp makes it 0600
            out.write(pem)
            out.flush()
            os.fsync(out.fileno())
        os.link(tmp, path)
    except FileExistsError:
        return load_or_create(path)
    except OSError as exc:
        raise ConfigurationError(f"cannot create the signing key {path}: {exc.strerror or exc}") from None
    finally:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
    return _from_private(private)


def load_public(data: bytes | str) -> Ed25519PublicKey:
    """An Ed25519 public key from PEM text (a private key's PEM gives its public half).

    Raises:
        ValueError: It is not an Ed25519 key in PEM.
    """
    raw = data.encode() if isinstance(data, str) else data
    try:
        key: object = serialization.load_pem_public_key(raw)
    except (ValueError, TypeError, binascii.Error):
        try:
            key = serialization.load_pem_private_key(raw, password=None).public_key()
        except (ValueError, TypeError, binascii.Error):
            raise ValueError("not an Ed25519 public key in PEM") from None
    if not isinstance(key, Ed25519PublicKey):
        raise ValueError("not an Ed25519 key")
    return key


def verify(public: Ed25519PublicKey, payload: Mapping[str, Any], signature: object) -> bool:
    """Whether `signature` (base64) is `public`'s signature of `signed_bytes(payload)`."""
    if not isinstance(signature, str):
        return False
    try:
        raw = base64.b64decode(signature, validate=True)
        public.verify(raw, signed_bytes(payload))
    except (InvalidSignature, binascii.Error, ValueError, rfc8785.CanonicalizationError, RecursionError):
        return False
    return True
