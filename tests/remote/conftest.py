"""The server tests' fixtures, for the remote-mode tests: an in-process app, keys, a store on both."""

from __future__ import annotations

from ..server.conftest import any_store, client, make_key, server_db

__all__ = ["any_store", "client", "make_key", "server_db"]
