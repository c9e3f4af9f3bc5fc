"""The schema: the migration chain builds exactly what the models describe (on SQLite and
PostgreSQL), opening is idempotent, SQLite runs with its pragmas, times come back as UTC,
and the package's public surface and settings are what they say."""

from __future__ import annotations

import asyncio
import importlib
import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import platformdirs
import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, event, inspect, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import StatementError

import chatledger
from chatledger import Ledger, Settings
from chatledger.config import default_database_path
from chatledger.db.base import Base
from chatledger.db.engine import Database
from chatledger.db.migrate import (
    MIGRATIONS,
    alembic_config,
    current_revision,
    head_revision,
    known_revisions,
    upgrade,
)
from chatledger.errors import ChatledgerError
from chatledger.interactions.bulk_statements import sqlite_lookup
from chatledger.messages.models import Message
from chatledger.runs import service as runs
from chatledger.runs.models import Run
from chatledger.tasks.models import Task
from chatledger.usage import service as usage

MODEL_MODULES = (
    "chatledger.tenants.models",
    "chatledger.runs.models",
    "chatledger.messages.models",
    "chatledger.tasks.models",
    "chatledger.usage.models",
    "chatledger.traces.models",
    "chatledger.prompts.models",
    "chatledger.variables.models",
    "chatledger.prices.models",
)
TABLES = {
    *("orgs", "projects", "users", "memberships", "api_keys"),
    *("runs", "messages", "tasks", "usage_daily", "project_usage_daily"),
    *("traces", "trace_entries"),
    *("prompts", "prompt_versions", "prompt_labels", "variables"),
    "price_overrides",
}

for _module in MODEL_MODULES:  # the metadata is complete only once every model is imported
    importlib.import_module(_module)


def _differences(connection: Connection) -> list[Any]:
    context = MigrationContext.configure(
        connection, opts={"compare_type": True, "compare_server_default": True}
    )
    return list(compare_metadata(context, Base.metadata))


def _head() -> str | None:
    return ScriptDirectory.from_config(alembic_config()).get_current_head()


# -- migrations and models -------------------------------------------------------------


def test_metadata_holds_every_table() -> None:
    assert set(Base.metadata.tables) == TABLES


async def test_migrations_match_the_models(ledger: Ledger) -> None:
    async with ledger.database.write_engine.connect() as connection:
        differences = await connection.run_sync(_differences)

    assert differences == []


async def test_migrated_tables_and_indexes(ledger: Ledger) -> None:
    def describe(connection: Connection) -> dict[str, Any]:
        inspector = inspect(connection)
        return {
            "tables": set(inspector.get_table_names()),
            "messages": {
                (ix["name"], tuple(ix["column_names"]), bool(ix["unique"]))
                for ix in inspector.get_indexes("messages")
            },
            "usage_pk": inspector.get_pk_constraint("usage_daily")["constrained_columns"],
            "message_fks": [
                (fk["referred_table"], fk["constrained_columns"], fk["options"].get("ondelete"))
                for fk in inspector.get_foreign_keys("messages")
            ],
        }

    async with ledger.database.write_engine.connect() as connection:
        found = await connection.run_sync(describe)

    assert found["tables"] == TABLES | {"alembic_version"}
    assert (
        "ix_messages_project_id_run_id_seq",
        ("project_id", "run_id", "seq"),
        True,
    ) in found["messages"]
    assert found["usage_pk"] == ["project_id", "user_id", "day", "model"]
    assert [(t, c, (d or "").upper()) for t, c, d in found["message_fks"]] == [
        ("runs", ["project_id", "run_id"], "CASCADE")
    ]


async def test_downgrade_and_upgrade_again(ledger: Ledger) -> None:
    def round_trip(connection: Connection) -> tuple[set[str], list[Any]]:
        command.downgrade(alembic_config(connection), "base")
        emptied = set(inspect(connection).get_table_names()) - {"alembic_version"}
        command.upgrade(alembic_config(connection), "head")
        return emptied, _differences(connection)

    async with ledger.database.write_engine.begin() as connection:
        emptied, differences = await connection.run_sync(round_trip)

    assert emptied == set()
    assert differences == []
    assert await current_revision(ledger.database) == _head()


async def test_opening_twice_is_a_no_op(settings: Settings) -> None:
    async with Ledger(settings) as first:
        assert await current_revision(first.database) == _head()
        async with first.database.transaction() as session:
            await runs.ensure(session, first.caller, "kept", name="still here")

    async with Ledger(settings) as second:
        assert await current_revision(second.database) == _head()
        await upgrade(second.database)  # and once more, directly
        assert await current_revision(second.database) == _head()
        async with second.database.reading() as session:
            run = await session.get(Run, ("local", "kept"))
            assert run is not None
            assert run.name == "still here"
            versions = list(await session.scalars(text("SELECT version_num FROM alembic_version")))
        assert versions == [_head()]


async def test_head_is_the_newest_revision() -> None:
    """One chain: the head is the newest numbered migration file, which is what opening
    a database compares its revision with before it would load alembic."""
    newest = max(p.name.split("_")[0] for p in (MIGRATIONS / "versions").glob("[0-9]*.py"))
    assert _head() == newest == head_revision()
    script = ScriptDirectory.from_config(alembic_config())
    assert known_revisions() == {revision.revision for revision in script.walk_revisions()}


async def test_a_schema_newer_than_the_code_is_refused_untouched(settings: Settings) -> None:
    # An older chatledger opening a database a newer one has migrated.
    async with Ledger(settings) as ledger:
        async with ledger.database.transaction() as session:
            await runs.ensure(session, ledger.caller, "kept", name="still here")
        async with ledger.database.write_engine.begin() as connection:
            await connection.execute(text("UPDATE alembic_version SET version_num = '9999'"))

    with pytest.raises(ChatledgerError) as refused:
        async with Ledger(settings):
            pass
    assert refused.value.message.startswith(
        "the database's schema is at revision 9999, which this chatledger does not know "
        f"(its newest is {_head()})"
    )
    assert refused.value.details == {"revision": "9999", "head": _head()}

    database = Database(settings.database_url)
    try:
        assert await current_revision(database) == "9999"
        async with database.reading() as session:
            kept = await session.scalar(select(Run.name).where(Run.id == "kept"))
    finally:
        await database.dispose()
    assert kept == "still here"


# -- SQLite ----------------------------------------------------------------------------


async def test_sqlite_pragmas_are_in_effect(ledger: Ledger) -> None:
    if not ledger.database.is_sqlite:
        pytest.skip("SQLite pragmas")
    for engine in (ledger.database.write_engine, ledger.database.read_engine):
        async with engine.connect() as connection:
            found = {
                name: (await connection.exec_driver_sql(f"PRAGMA {name}")).scalar()
                for name in ("journal_mode", "foreign_keys", "synchronous")
            }
        # The wait for another process's write lock is the connection's own, not
        # SQLite's busy_timeout: tests/db/test_sqlite_inline.py.
        assert found == {"journal_mode": "wal", "foreign_keys": 1, "synchronous": 1}  # NORMAL


async def test_a_projects_daily_usage_is_read_from_its_index_alone(ledger: Ledger) -> None:
    """The owner's usage over a range sums every user's rows: without a table lookup per
    row (docs/benchmarks.md, reads at scale). Summed over users it is not summed at all:
    the project's rows are read by their key (migration 0010)."""
    if not ledger.database.is_sqlite:
        pytest.skip("SQLite's query plan")
    sent: list[tuple[str, Any]] = []

    def remember(_conn: Any, _cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        sent.append((statement, parameters))

    owner = replace(ledger.caller, sees_all=True)
    engine = ledger.database.read_engine.sync_engine
    event.listen(engine, "before_cursor_execute", remember)
    try:
        async with ledger.database.reading() as session:
            today = datetime.now(UTC).date()
            for group_by in (None, "user", "model"):
                first = today - timedelta(days=89)
                await usage.daily(session, owner, first, today, group_by=group_by)
    finally:
        event.remove(engine, "before_cursor_execute", remember)
    index = {
        "FROM usage_daily": "COVERING INDEX ix_usage_daily_project_day_sums",
        # Its primary key (SQLite names the index of a text primary key itself).
        "FROM project_usage_daily": "project_usage_daily USING INDEX sqlite_autoindex",
    }
    reads = [
        (sql, args, uses) for sql, args in sent for table, uses in index.items() if table in sql
    ]
    assert [uses for *_, uses in reads] == [
        *[index["FROM usage_daily"]] * 2,
        index["FROM project_usage_daily"],
    ]
    async with ledger.database.read_engine.connect() as connection:
        for sql, args, uses in reads:
            plan = (await connection.exec_driver_sql(f"EXPLAIN QUERY PLAN {sql}", args)).all()
            details = " ".join(str(row[-1]) for row in plan)
            assert uses in details, details


async def test_sqlite_bulk_lookups_search_their_index(ledger: Ledger) -> None:
    # Batch ingest asks which of 500 ids are stored as `IN (SELECT value FROM
    # json_each(?))`: one parameter, and still one index search per id.
    if not ledger.database.is_sqlite:
        pytest.skip("SQLite's query plan")
    lookups = [
        (Task.__table__.c.id, "sqlite_autoindex_tasks_1"),
        (Task.__table__.c.user_message_id, "ix_tasks_project_id_user_message_id"),
        (Message.__table__.c.id, "sqlite_autoindex_messages_1"),
    ]
    params = {"project_id": "local", "ids": json.dumps(["a", "b"])}
    async with ledger.database.read_engine.connect() as connection:
        for column, index in lookups:
            compiled = sqlite_lookup(column).compile(dialect=connection.dialect)
            args = tuple(params[name] for name in compiled.positiontup or ())
            plan = (await connection.exec_driver_sql(f"EXPLAIN QUERY PLAN {compiled}", args)).all()
            details = " ".join(str(row[-1]) for row in plan)
            assert f"SEARCH {column.table.name} USING COVERING INDEX {index}" in details, details


async def test_sqlite_database_directory_is_created(tmp_path: Path) -> None:
    path = tmp_path / "nested" / "deeper" / "ledger.db"
    database = Database(f"sqlite+aiosqlite:///{path}")
    try:
        await upgrade(database)
        assert await current_revision(database) == _head()
    finally:
        await database.dispose()
    assert path.is_file()


# -- time ------------------------------------------------------------------------------


async def test_timestamps_round_trip_as_utc(ledger: Ledger) -> None:
    india = timezone(timedelta(hours=5, minutes=30))
    at = datetime(2025, 1, 1, 3, 15, 30, 123_456, tzinfo=india)
    async with ledger.database.transaction() as session:
        await runs.ensure(session, ledger.caller, "r1", created_at=at)

    async with ledger.database.reading() as session:
        if not ledger.database.is_sqlite:
            # The session's zone must not leak into what chatledger reads.
            await session.execute(text("SET TIME ZONE 'America/New_York'"))
        run = await session.scalar(
            select(Run).where(Run.id == "r1").execution_options(populate_existing=True)
        )
        assert run is not None
        stored = run.created_at
        earlier = await session.scalar(select(Run.id).where(Run.created_at < at))
        same = await session.scalar(select(Run.id).where(Run.created_at == at))

    assert stored == at
    assert stored.tzinfo is not None
    assert stored.utcoffset() == timedelta(0)
    assert stored == datetime(2024, 12, 31, 21, 45, 30, 123_456, tzinfo=UTC)
    assert (stored.year, stored.day, stored.hour, stored.microsecond) == (2024, 31, 21, 123_456)
    assert earlier is None
    assert same == "r1"


async def test_naive_datetimes_are_refused(ledger: Ledger) -> None:
    with pytest.raises(StatementError) as caught:
        async with ledger.database.transaction() as session:
            await runs.ensure(session, ledger.caller, "r1", created_at=datetime(2025, 1, 1))

    assert isinstance(caught.value.orig, ValueError)
    assert "naive" in str(caught.value.orig)


# -- public surface and settings -------------------------------------------------------

PUBLIC = [
    "AsyncClient",
    "Busy",
    "ChatledgerError",
    "Client",
    "Conflict",
    "InvalidInput",
    "Ledger",
    "NotFound",
    "PayloadTooLarge",
    "ProviderError",
    "RunDetail",
    "Settings",
    "TokenUsage",
]


def test_public_names_are_exactly_the_curated_list() -> None:
    assert chatledger.__all__ == PUBLIC
    namespace: dict[str, Any] = {}
    exec("from chatledger import *", namespace)
    assert set(namespace) - {"__builtins__"} == set(PUBLIC)
    for name in PUBLIC:
        assert getattr(chatledger, name) is not None
        module = importlib.import_module(getattr(chatledger, name).__module__)
        assert getattr(module, name) is getattr(chatledger, name)
    errors = [chatledger.Busy, chatledger.Conflict, chatledger.InvalidInput, chatledger.NotFound]
    errors += [chatledger.PayloadTooLarge, chatledger.ProviderError]
    assert all(issubclass(error, chatledger.ChatledgerError) for error in errors)


def test_public_names_load_when_first_used_and_no_others_exist() -> None:
    # The package loads its names lazily (a server's worker needs no client): they are
    # listed by dir(), and a name it does not have is an AttributeError, as for any module.
    assert set(PUBLIC) <= set(dir(chatledger))
    with pytest.raises(AttributeError, match="no attribute 'Nothing'"):
        chatledger.Nothing  # type: ignore[attr-defined]  # noqa: B018
    assert not hasattr(chatledger, "client_of_nobody")


def test_default_database_is_a_sqlite_file_in_the_user_data_dir(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("CHATLEDGER_DATABASE_URL", raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))

    url = make_url(Settings().database_url)

    assert url.drivername == "sqlite+aiosqlite"
    data_dir = Path(platformdirs.user_data_dir("chatledger", appauthor=False))
    assert url.database is not None
    path = Path(url.database)
    assert path == default_database_path() == data_dir / "chatledger.db"
    assert path.is_relative_to(tmp_path / "data")


def test_database_url_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    configured = "postgresql+psycopg://app:secret@db.internal:5432/ledger"
    monkeypatch.setenv("CHATLEDGER_DATABASE_URL", configured)

    assert Settings().database_url == configured
    # An explicit argument still wins over the environment.
    assert Settings(database_url="sqlite+aiosqlite:///x.db").database_url == (
        "sqlite+aiosqlite:///x.db"
    )


def test_other_knobs_have_laptop_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("TASK_LEASE_SECONDS", "STREAM_DEBOUNCE_MS", "ADMIN_KEY"):
        monkeypatch.delenv(f"CHATLEDGER_{name}", raising=False)
    settings = Settings()
    assert (settings.task_lease_seconds, settings.stream_debounce_ms) == (60.0, 500)
    assert settings.admin_key is None

    monkeypatch.setenv("CHATLEDGER_TASK_LEASE_SECONDS", "5")
    monkeypatch.setenv("CHATLEDGER_STREAM_DEBOUNCE_MS", "0")
    settings = Settings()
    assert (settings.task_lease_seconds, settings.stream_debounce_ms) == (5.0, 0)


async def test_servers_starting_at_once_migrate_once(empty_database_url: str) -> None:
    # `chatledger serve --workers N`, or N replicas deployed together: every process opens
    # the new database at the same moment, and each must come up on the newest schema.
    databases = [Database(empty_database_url) for _ in range(4)]
    try:
        await asyncio.gather(*(upgrade(database) for database in databases))
        revisions = {await current_revision(database) for database in databases}
    finally:
        for database in databases:
            await database.dispose()
    assert revisions == {_head()}
