"""`clearance serve`, `clearance db upgrade`, `clearance keys create|list|revoke`."""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
from pydantic import ValidationError

from .._store import HEAD
from .._store import _keys as keys
from .._store import _users as users
from ._common import database_option, friendly, key_file_trust, open_db, safe, signing_key_option, table, when

if TYPE_CHECKING:
    from ..server import ServerSettings


@click.command("serve")
@click.option("--host", envvar="CLEARANCE_HOST", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option(
    "--port",
    envvar="CLEARANCE_PORT",
    default=8321,
    show_default=True,
    type=click.IntRange(1, 65535),
    help="Port to listen on.",
)
@click.option(
    "--access-log/--no-access-log",
    envvar="CLEARANCE_ACCESS_LOG",
    default=True,
    show_default=True,
    help="Log a line per request (about 5% of the server's time under load).",
)
@click.option(
    "--workers",
    envvar="CLEARANCE_WORKERS",
    default=1,
    show_default=True,
    type=click.IntRange(1, 512),
    help="Server processes on one port (PostgreSQL only); background jobs still run once across them.",
)
@database_option
@friendly
def serve(host: str, port: int, access_log: bool, workers: int, database: str) -> None:
    """Run the REST API (OpenAPI at /docs) on the store; the same SQLite file the SDK writes, or PostgreSQL."""
    run_server(database, host, port, access_log=access_log, workers=workers)


def _problem(loc: tuple[int | str, ...], message: str) -> str:
    """A settings problem as the operator set it: `CLEARANCE_<NAME>: …` (a whole-settings one as it is)."""
    message = message.removeprefix("Value error, ")
    return f"CLEARANCE_{'_'.join(map(str, loc)).upper()}: {message}" if loc else message


def run_server(
    database: str, host: str, port: int, *, access_log: bool = True, log_level: str = "info", workers: int = 1
) -> None:
    """Serve the API and the dashboard on `database` until interrupted, in `workers` processes."""
    try:
        import uvicorn

        from ..server import ServerSettings
        from ._serving import ServeConfig, serve_many
    except ImportError:
        raise click.ClickException('the server needs its extra: pip install "clearance[server]"') from None
    try:
        settings = ServerSettings(database_url=database, host=host, port=port)
    except ValidationError as exc:  # a setting from the environment: say which, not a traceback
        raise click.ClickException("; ".join(_problem(e["loc"], e["msg"]) for e in exc.errors())) from None
    if workers > 1 and not is_postgresql(settings.database_url):
        raise click.ClickException(
            f"--workers {workers} needs PostgreSQL: SQLite has a single writer, so more processes on one"
            " file only queue behind its lock. Run one process on SQLite, or move the store to PostgreSQL"
            " (clearance db upgrade --database-url postgresql+psycopg://…) and serve it with --workers"
            " or several replicas."
        )
    if log_level in ("trace", "debug", "info"):  # not for the demo's quiet server
        _say_signing_key(settings)
    config = ServeConfig(settings, log_level=log_level, access_log=access_log, workers=workers)
    with contextlib.suppress(KeyboardInterrupt):  # uvicorn re-raises Ctrl-C once it has shut down
        if workers == 1:
            uvicorn.Server(config).run()
        else:
            serve_many(config)


def _say_signing_key(settings: ServerSettings) -> None:
    """Which key file signs, as an absolute path: a default relative to here would change with the directory."""
    from .. import _signing as signing

    key = Path(settings.signing_key or signing.default_key_path(settings.database_url)).absolute()
    click.echo(f"clearance: the signing key file is {safe(str(key))}", err=True)
    if settings.signing_key is None and is_postgresql(settings.database_url):
        click.echo(
            "clearance: on PostgreSQL the default key file is relative to the working directory: set"
            " CLEARANCE_SIGNING_KEY so every start and every replica uses the same key",
            err=True,
        )


def is_postgresql(database_url: str) -> bool:
    """Whether the store at `database_url` is PostgreSQL (a malformed URL is left to the store to explain)."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    from .._store._db import normalise_url

    try:
        return make_url(normalise_url(database_url)).get_backend_name() == "postgresql"
    except ArgumentError:
        return False


@click.group("db")
def db_group() -> None:
    """Manage the store's schema."""


@db_group.command("upgrade")
@database_option
@friendly
def upgrade(database: str) -> None:
    """Apply the Alembic migrations to the store (SQLite or PostgreSQL); creates a missing SQLite file."""
    open_db(database, create=True).close()
    click.echo(f"ok: {safe(database)} is at schema revision {HEAD}")


@db_group.command("backup")
@click.argument("target", metavar="FILE", type=click.Path(dir_okay=False, path_type=Path))
@signing_key_option(
    "The signing key file whose checkpoints to trust when verifying the copy, as `audit verify`"
    " (env CLEARANCE_SIGNING_KEY; default signing-key.pem beside the store)."
)
@database_option
@friendly
def backup(target: Path, key_path: str | None, database: str) -> None:
    """Copy the SQLite store to FILE (a new file) while processes use it, then verify the copy's chain.

    SQLite's online backup: one consistent copy, writers carry on. For PostgreSQL use `pg_dump`.
    """
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    from .. import _integrity as integrity
    from .._backup import backup_sqlite
    from .._store import Database, normalise_url

    try:
        url = make_url(normalise_url(database))
    except ArgumentError as exc:
        raise click.ClickException(f"invalid database URL {safe(database)!r}: {exc}") from None
    if url.get_backend_name() != "sqlite" or not url.database:
        raise click.ClickException(
            "db backup copies a SQLite store; back up PostgreSQL with pg_dump (docs/operations/backup.md)"
        )
    done = backup_sqlite(Path(url.database), target)
    click.echo(f"copied {safe(database)} to {safe(str(done.path))} ({done.size:,} bytes, schema {done.revision})")
    if done.revision != HEAD:  # opening it would migrate the backup: verify it after restoring
        click.echo(f"not verified: the copy is at schema {done.revision}, this version's is {HEAD}")
        return
    anchor, trust = key_file_trust(key_path, database)  # the store's signing key, as `audit verify` trusts it
    db = Database(str(done.path), create=False)
    try:
        report = integrity.verify_store(db, anchor=anchor)
    finally:
        db.close()
    if not report.ok:
        click.echo(f"BROKEN: the copy's record {report.broken_seq}: {safe(report.problem)}", err=True)
        click.echo("the store itself holds the same records: run clearance audit verify on it", err=True)
        raise SystemExit(1)
    click.echo(f"ok: {report.checked} records verify; head is record {report.head_seq}, hash {report.head_hash}")
    click.echo(trust)


@db_group.command("rebuild-usage")
@database_option
@friendly
def rebuild_usage(database: str) -> None:
    """Sum the hourly LLM usage table again from the records, when `clearance audit verify` finds it differs.

    The costs pages, usage summaries and budgets read that table; the records stay as they are.
    """
    from .._store import _rollup as rollup

    db = open_db(database)
    try:
        before, _ = rollup.differences(db)
        rollup.rebuild(db)
        after, shown = rollup.differences(db)
    finally:
        db.close()
    if after:  # only if records were written between the two reads
        raise click.ClickException(f"{after} hourly sums still differ after the rebuild: {safe(shown[0])}")
    click.echo(f"ok: the hourly usage sums were rebuilt from the records ({before} differed)")


@click.group("keys")
def keys_group() -> None:
    """Create, list and revoke API keys (the store's admin, on this machine)."""


@keys_group.command("create")
@click.option("--name", required=True, help="What the key is for.")
@click.option(
    "--scope",
    "scopes",
    multiple=True,
    required=True,
    type=click.Choice(keys.SCOPES),
    help="agent (decide, record, its own approvals), approver (decide approvals), admin (policies, keys),"
    " metrics (read /metrics only).",
)
@click.option("--agent", default=None, help="The agent an agent-scoped key acts as.")
@click.option("--environment", default="test", show_default=True, help="test, live, …")
@database_option
@friendly
def create(name: str, scopes: tuple[str, ...], agent: str | None, environment: str, database: str) -> None:
    """Create a key and print it once: it is stored only as a hash and cannot be shown again."""
    db = open_db(database, create=True)
    try:
        key, secret = keys.create(db, name=name, scopes=scopes, agent=agent, environment=environment, created_by="cli")
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    finally:
        db.close()
    click.echo(f"created key {key.id} ({', '.join(key.scopes)}); it is shown once, store it now:")
    click.echo(secret)


@keys_group.command("list")
@database_option
@friendly
def list_(database: str) -> None:
    """Every key, newest first; never a secret."""
    db = open_db(database)
    try:
        rows: list[list[Any]] = [
            [
                k.id,
                k.name,
                ",".join(k.scopes),
                k.agent,
                k.environment,
                when(k.created_at_us),
                when(k.last_used_at_us),
                "revoked" if k.revoked_at_us else "active",
            ]
            for k in keys.listing(db)
        ]
    finally:
        db.close()
    click.echo(
        table(["id", "name", "scopes", "agent", "environment", "created", "last used", "status"], rows)
        if rows
        else "no keys"
    )


@keys_group.command("revoke")
@click.argument("key_id")
@database_option
@friendly
def revoke(key_id: str, database: str) -> None:
    """Revoke KEY_ID at once; requests with it get 401."""
    db = open_db(database)
    try:
        key = keys.revoke(db, key_id.strip(), by="cli")
    finally:
        db.close()
    if key is None:
        raise click.ClickException(f"no key has the id {safe(key_id)!r}")
    click.echo(f"revoked {key.id} ({safe(key.name)})")


@click.group("users")
def users_group() -> None:
    """Create and list the people who sign in to the dashboard (approvers, admins)."""


@users_group.command("create")
@click.argument("username")
@click.option(
    "--role",
    "roles",
    multiple=True,
    required=True,
    help="approver (decides approvals), admin (policies, keys, users), or an approver group (support-lead).",
)
@click.option("--password-stdin", is_flag=True, help="Read the password from standard input instead of asking.")
@database_option
@friendly
def create_user(username: str, roles: tuple[str, ...], password_stdin: bool, database: str) -> None:
    """Create USERNAME; the password is asked for (twice) or read from standard input."""
    if password_stdin:
        password = sys.stdin.readline().rstrip("\n")
    else:
        password = str(click.prompt("password", hide_input=True, confirmation_prompt=True))
    db = open_db(database, create=True)
    try:
        user = users.create(db, username, password, roles, by="cli")
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    finally:
        db.close()
    click.echo(f"created user {safe(user.username)} ({', '.join(user.roles)})")


@users_group.command("list")
@database_option
@friendly
def list_users(database: str) -> None:
    """Every user and their roles; never a password hash."""
    db = open_db(database)
    try:
        rows = [
            [u.username, ",".join(u.roles), when(u.created_at_us), "disabled" if u.disabled_at_us else "active"]
            for u in users.listing(db)
        ]
    finally:
        db.close()
    click.echo(table(["username", "roles", "created", "status"], rows) if rows else "no users")


@users_group.command("update")
@click.argument("username")
@click.option(
    "--role",
    "roles",
    multiple=True,
    help="Replace their roles with these: approver, admin, or groups (repeat the option for several).",
)
@click.option("--password", "new_password", is_flag=True, help="Set a new password (asked for, or --password-stdin).")
@click.option("--password-stdin", is_flag=True, help="Read the new password from standard input.")
@click.option(
    "--disable/--enable",
    "disabled",
    default=None,
    help="Stop them signing in (ends their sessions), or allow it again.",
)
@database_option
@friendly
def update_user(
    username: str,
    roles: tuple[str, ...],
    new_password: bool,
    password_stdin: bool,
    disabled: bool | None,
    database: str,
) -> None:
    """Change USERNAME's roles, password or access; a new password or --disable signs them out everywhere."""
    password = None
    if password_stdin:
        password = sys.stdin.readline().rstrip("\n")
    elif new_password:
        password = str(click.prompt("new password", hide_input=True, confirmation_prompt=True))
    if not roles and password is None and disabled is None:
        raise click.UsageError("nothing to change: give --role, --password, --password-stdin, --disable or --enable")
    db = open_db(database)
    try:
        user = users.update(db, username, roles=roles or None, password=password, disabled=disabled, by="cli")
    except (LookupError, ValueError) as exc:
        raise click.UsageError(str(exc)) from None
    finally:
        db.close()
    status = "disabled" if user.disabled_at_us else "active"
    click.echo(f"updated user {safe(user.username)} ({', '.join(user.roles)}; {status})")
