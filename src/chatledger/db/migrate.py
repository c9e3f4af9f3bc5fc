"""Bring a database to the newest schema. Runs every time a database is opened, so a
fresh file and an old one are handled the same way.

alembic is imported only when there is something to migrate (or to report): it holds
~12 MB in a process, and a server's workers open a database that is almost always up
to date already (`chatledger serve --workers N` migrates before it starts them)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import Connection, inspect, text

from chatledger.db import sqlite_procedures
from chatledger.db.engine import Database
from chatledger.errors import ChatledgerError

if TYPE_CHECKING:
    from alembic.config import Config

MIGRATIONS = Path(__file__).parent / "migrations"
VERSION_TABLE = "alembic_version"

# Several processes may open a new database at the same moment (`chatledger serve
# --workers`, replicas deployed together). On PostgreSQL they take turns on this advisory
# lock (per database, held until the transaction ends), so the first migrates and the
# others find the schema up to date; on SQLite the BEGIN IMMEDIATE of the write engine is
# already such a turn. The number is arbitrary, chatledger's own.
MIGRATION_LOCK = 0x636C_6D69_6772  # "clmigr"


def known_revisions() -> frozenset[str]:
    """This chatledger's migrations' revisions, read from the file names, which begin
    with them ("0010_project_usage_daily.py" is revision "0010", after "0009"): what
    alembic's script directory would say, without importing alembic
    (tests/db/test_schema.py checks that the two agree)."""
    return frozenset(
        path.name.split("_", 1)[0] for path in (MIGRATIONS / "versions").glob("[0-9]*.py")
    )


def head_revision() -> str:
    """The newest migration's revision."""
    return max(known_revisions())


def alembic_config(connection: Connection | None = None) -> Config:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    return config


def _upgrade(connection: Connection) -> None:
    if connection.dialect.name == "postgresql":
        connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK})
    # Cheap check first: opening an up-to-date database should cost a query or two.
    current, known = _current(connection), known_revisions()
    head = max(known)
    if current == head:
        return
    if current is not None and current not in known:
        # Migrated by a newer chatledger (an older one opening it again): alembic would
        # only say it "can't locate revision", from deep in a traceback.
        raise ChatledgerError(
            f"the database's schema is at revision {current}, which this chatledger does "
            f"not know (its newest is {head}): it was migrated by a newer chatledger; "
            "open it with that version or a later one",
            revision=current,
            head=head,
        )
    from alembic import command

    if connection.dialect.name == "sqlite":
        sqlite_procedures.forget(connection)  # SQLite renames no table while they are there
    command.upgrade(alembic_config(connection), "head")


async def upgrade(database: Database) -> None:
    async with database._serialised(), database.write_engine.begin() as connection:
        await connection.run_sync(_upgrade)


async def upgrade_at(url: str) -> None:
    """Migrate the database at `url`, then let it go: for a process that only prepares
    it for others (`chatledger serve --workers N`, before starting them)."""
    database = Database(url)
    try:
        await upgrade(database)
    finally:
        await database.dispose()


def _current(connection: Connection) -> str | None:
    """The database's revision, as alembic records it (one row in its version table),
    or None for a database never migrated."""
    if not inspect(connection).has_table(VERSION_TABLE):
        return None
    revisions = connection.execute(text(f"SELECT version_num FROM {VERSION_TABLE}")).scalars()
    return max(revisions, default=None)


async def current_revision(database: Database) -> str | None:
    async with database.read_engine.connect() as connection:
        return await connection.run_sync(_current)
