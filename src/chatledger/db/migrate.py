"""Bring a database to the newest schema. Runs every time a database is opened, so a
fresh file and an old one are handled the same way."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, text

from chatledger.db.engine import Database

MIGRATIONS = Path(__file__).parent / "migrations"

# Several processes may open a new database at the same moment (`chatledger serve
# --workers`, replicas deployed together). On PostgreSQL they take turns on this advisory
# lock (per database, held until the transaction ends), so the first migrates and the
# others find the schema up to date; on SQLite the BEGIN IMMEDIATE of the write engine is
# already such a turn. The number is arbitrary, chatledger's own.
MIGRATION_LOCK = 0x636C_6D69_6772  # "clmigr"


def alembic_config(connection: Connection | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    return config


def _upgrade(connection: Connection) -> None:
    if connection.dialect.name == "postgresql":
        connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK})
    config = alembic_config(connection)
    head = ScriptDirectory.from_config(config).get_current_head()
    # Cheap check first: opening an up-to-date database should cost one query.
    if MigrationContext.configure(connection).get_current_revision() == head:
        return
    command.upgrade(config, "head")


async def upgrade(database: Database) -> None:
    async with database._serialised(), database.write_engine.begin() as connection:
        await connection.run_sync(_upgrade)


def _current(connection: Connection) -> str | None:
    return MigrationContext.configure(connection).get_current_revision()


async def current_revision(database: Database) -> str | None:
    async with database.read_engine.connect() as connection:
        return await connection.run_sync(_current)
