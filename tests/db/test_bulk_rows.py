"""A batch group's rows made column by column (interactions/bulk_rows.py) hold exactly what
the driver takes: for SQLite's executemany what `db.driver_rows` makes of the same rows
as dictionaries, which is what SQLAlchemy's column types bind
(tests/db/test_driver_rows.py); for PostgreSQL's COPY a JSON document as its text and
every other value as it is (psycopg adapts it). What the rows say is checked end to
end, against one interaction stored at a time, by tests/server/test_batch_bulk.py."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from sqlalchemy import JSON, Dialect, Table
from sqlalchemy.dialects.postgresql.psycopg import PGDialectAsync_psycopg
from sqlalchemy.dialects.sqlite.aiosqlite import SQLiteDialect_aiosqlite

from chatledger.db import driver_rows
from chatledger.db.base import table_of
from chatledger.interactions import bulk
from chatledger.interactions.bulk_rows import DriverValues, GroupRows
from chatledger.interactions.service import NewInteraction
from chatledger.messages.models import Message
from chatledger.tasks.models import Task
from chatledger.tenants.caller import Caller
from chatledger.tokens import TokenUsage

NOW = datetime(2026, 12, 5, 12, 0, 0, 123_456, tzinfo=UTC)
CALLER = Caller("project", "ana")
DIALECTS = [SQLiteDialect_aiosqlite(), PGDialectAsync_psycopg()]
# Interactions as `bulk.build` meets them: with the cost and price source it settled, and
# when each was asked.
Settled = list[tuple[bulk.Pending, int | None, str | None, datetime]]


def interactions() -> Settled:
    """With and without metadata, usage estimated or not, no cost, a time in another
    zone, one asked now (its `created_at` not given)."""
    asked = datetime(2026, 11, 1, 9, 30, tzinfo=timezone(timedelta(hours=-5)))
    made = [
        NewInteraction("Hi?", "Hello.", "openai/gpt-4o", TokenUsage(10, 5, 2), id="t1"),
        NewInteraction(
            "And?",
            "More.",
            "openai/gpt-4o",
            TokenUsage(7, 3, estimated=True),
            id="t2",
            created_at=asked,
            total_ms=1_500,
            ttft_ms=300,
            metadata={"client": "sync", "tags": ["a", "é"]},
        ),
        NewInteraction(
            "Last?",
            "Done.",
            "anthropic/claude-3-5-haiku-latest",
            TokenUsage(1, 1, reasoning_tokens=1, cache_write_tokens=1),
            id="t3",
            created_at=asked + timedelta(minutes=1),
            completed_at=asked + timedelta(minutes=2),
        ),
    ]
    for n, new in enumerate(made):
        new.user_message_id, new.assistant_message_id = f"u{n}", f"a{n}"
    pendings = [bulk.prepare(CALLER, "run", new) for new in made]
    settled = [(125_000, "client"), (None, None), (9, "genai-prices")]
    return [
        (p, cost, source, p.new.created_at or NOW)
        for p, (cost, source) in zip(pendings, settled, strict=True)
    ]


def group_rows(values: DriverValues, settled: Settled | None = None) -> GroupRows:
    rows = GroupRows(CALLER.project_id, NOW, values)
    for p, cost_nano, price_source, asked_at in settled or interactions():
        rows.add(p, "ana", cost_nano, price_source, asked_at)
    return rows


def as_it_is(value: Any) -> Any:
    return value


UNCONVERTED = DriverValues(as_it_is, as_it_is, as_it_is)


def driver_takes(table: Table, columns: driver_rows.Columns, dialect: Dialect) -> list[Any]:
    """The rows `columns` holds (unconverted) as the driver of `dialect` takes them."""
    names = list(columns.names)
    if dialect.name == "postgresql":
        documents = [isinstance(table.c[name].type, JSON) for name in names]
        return [
            tuple(
                driver_rows.json_text(value) if document else value
                for value, document in zip(row, documents, strict=True)
            )
            for row in columns.rows()
        ]
    rows = [dict(zip(names, row, strict=True)) for row in columns.rows()]
    return driver_rows.values(table, names, rows, dialect)


@pytest.mark.parametrize("dialect", DIALECTS, ids=lambda dialect: dialect.name)
def test_every_column_is_what_driver_rows_makes_of_it(dialect: Dialect) -> None:
    settled = interactions()  # (one that ends now ends once)
    made, raw = group_rows(DriverValues.of(dialect), settled), group_rows(UNCONVERTED, settled)
    for table, ours, unconverted in (
        (table_of(Task), made.tasks(), raw.tasks()),
        (table_of(Message), made.messages(), raw.messages()),
    ):
        assert ours.names == unconverted.names
        assert ours.rows() == driver_takes(table, unconverted, dialect), table.name


@pytest.mark.parametrize("model", [Task, Message], ids=["tasks", "messages"])
def test_the_rows_fill_every_column_the_table_needs(model: Any) -> None:
    table = table_of(model)
    rows = group_rows(DriverValues.of(DIALECTS[0]))
    columns = rows.tasks() if model is Task else rows.messages()
    assert set(columns.names) <= set(table.c.keys())
    needed = {
        column.name
        for column in table.c
        if not column.nullable and column.default is None and column.server_default is None
    }
    assert needed <= set(columns.names)
    assert len(columns.rows()) == (3 if model is Task else 6)


def test_the_rows_say_what_each_interaction_was() -> None:
    rows = group_rows(UNCONVERTED)
    tasks = [dict(zip(rows.tasks().names, row, strict=True)) for row in rows.tasks().rows()]
    assert [task["id"] for task in tasks] == ["t1", "t2", "t3"]
    first, second, third = tasks
    assert first["created_at"] == NOW  # asked now: no time given
    assert first["heartbeat_at"] == NOW
    assert first["request"] == {"metadata": {}}
    assert second["request"] == {"metadata": {"client": "sync", "tags": ["a", "é"]}}
    assert second["usage_estimated"] is True and first["usage_estimated"] is False
    assert (second["cost_nano"], second["price_source"]) == (None, None)
    assert third["updated_at"] == third["completed_at"] != third["created_at"]
    assert (third["reasoning_tokens"], third["cache_write_tokens"]) == (1, 1)
    messages = rows.messages()
    stored = [dict(zip(messages.names, row, strict=True)) for row in messages.rows()]
    assert [(m["role"], m["task_id"]) for m in stored[:2]] == [("user", "t1"), ("assistant", "t1")]
    user, reply = stored[2], stored[3]
    assert (user["parent_id"], reply["parent_id"]) == (None, user["id"])
    assert (user["content"], reply["content"]) == ("And?", "More.")
    assert user["metadata"] == {}
    assert reply["metadata"] == {"client": "sync", "tags": ["a", "é"], "model": "gpt-4o"}
    assert stored[1]["metadata"] == {"model": "gpt-4o"}
    assert (user["updated_at"], reply["created_at"]) == (NOW, reply["updated_at"])


def test_only_the_message_position_can_be_numbered_afterwards() -> None:
    messages = group_rows(DriverValues.of(DIALECTS[0])).messages()
    numbered = messages.replaced("seq", [1, 2, 3, 4, 5, 6])
    assert [row[messages.names.index("seq")] for row in numbered.rows()] == [1, 2, 3, 4, 5, 6]
    with pytest.raises(ValueError, match="metadata"):
        messages.replaced("metadata", [None] * 6)
