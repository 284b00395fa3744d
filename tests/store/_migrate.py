"""Bring a store to one migration: the tests of a migration write what the one before it wrote."""

from __future__ import annotations

from importlib import resources

from alembic import command
from alembic.config import Config
from sqlalchemy import create_engine

MIGRATIONS = resources.files("clearance._store") / "migrations"


def migrate(url: str, to: str) -> None:
    """Upgrade the store at `url` to revision `to` (and no further)."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    engine = create_engine(url)
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, to)
    engine.dispose()
