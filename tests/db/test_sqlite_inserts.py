"""Batch ingest's multi-row INSERTs on SQLite (db/sqlite_inserts.py): any number of rows
stored exactly, in statements of a few fixed sizes only (each compiled once), within
the connection's limit on bound parameters, failures raised as SQLAlchemy's."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy.exc import IntegrityError, OperationalError

from chatledger.db import sqlite_inserts
from chatledger.db.sqlite_inline import InlineConnection

COLUMNS = ("id", "n", "body", "at")
SIZES = {2**k for k in range(8)}  # the statements' row counts, up to BLOCK_ROWS


@pytest.fixture
def connection(tmp_path: Path) -> Iterator[InlineConnection]:
    raw = sqlite3.connect(tmp_path / "rows.db", isolation_level=None, check_same_thread=False)
    raw.execute('CREATE TABLE "rows" (id TEXT PRIMARY KEY, n INTEGER, body TEXT, at TEXT)')
    yield InlineConnection(raw, busy_timeout_s=1.0)
    raw.close()


def columns_of(count: int, first: int = 0) -> tuple[list[object], ...]:
    ids = [f"row-{n}" for n in range(first, first + count)]
    numbers: list[object] = [n * 7 if n % 5 else None for n in range(first, first + count)]
    bodies: list[object] = [f"text \u00e9 {n}" for n in range(first, first + count)]
    times: list[object] = ["2026-12-05 20:00:00.000000"] * count
    return (list(ids), numbers, bodies, times)


def stored(connection: InlineConnection) -> list[tuple[object, ...]]:
    rows = connection.driver.execute('SELECT id, n, body, at FROM "rows" ORDER BY rowid')
    return rows.fetchall()


def statements_seen(connection: InlineConnection) -> list[str]:
    seen: list[str] = []
    connection.driver.set_trace_callback(seen.append)
    return seen


@pytest.mark.parametrize("count", [0, 1, 2, 3, 127, 128, 129, 500, 1_000, 1_111])
async def test_every_row_is_stored_as_given_in_order(
    connection: InlineConnection, count: int
) -> None:
    values = columns_of(count)
    seen = statements_seen(connection)

    await sqlite_inserts.insert(connection, "rows", COLUMNS, values)
    sent = list(seen)

    assert stored(connection) == list(zip(*values, strict=True))
    # Only the fixed sizes, so that a batch of any length reuses compiled statements.
    # (The trace shows each statement with its values: one id a row.)
    assert {statement.count("'row-") for statement in sent} <= SIZES
    assert len(sent) == count // 128 + bin(count % 128).count("1")


def test_block_sizes_add_up_and_come_from_the_fixed_few() -> None:
    for count in range(0, 700):
        sizes = sqlite_inserts.block_sizes(count)
        assert sum(sizes) == count
        assert set(sizes) <= SIZES
        assert sizes == sorted(sizes, reverse=True)
    assert sqlite_inserts.block_sizes(500) == [128, 128, 128, 64, 32, 16, 4]


async def test_a_low_limit_on_parameters_makes_the_blocks_smaller(
    connection: InlineConnection,
) -> None:
    # SQLite before 3.32 allowed 999 bound parameters a statement.
    connection.driver.setlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER, 999)
    assert sqlite_inserts.largest_block(connection.driver, 28) == 32
    assert sqlite_inserts.largest_block(connection.driver, len(COLUMNS)) == 128
    connection.driver.setlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER, 50)
    values = columns_of(300)

    await sqlite_inserts.insert(connection, "rows", COLUMNS, values)

    assert stored(connection) == list(zip(*values, strict=True))


async def test_a_key_stored_already_is_sqlalchemys_integrity_error(
    connection: InlineConnection,
) -> None:
    await sqlite_inserts.insert(connection, "rows", COLUMNS, columns_of(1, first=200))
    connection.driver.execute("BEGIN IMMEDIATE")

    with pytest.raises(IntegrityError):
        await sqlite_inserts.insert(connection, "rows", COLUMNS, columns_of(300))

    # The blocks before the one holding the stored key went in; the caller's savepoint
    # or rollback takes them back, as it would an executemany's first rows.
    assert len(stored(connection)) == 1 + 128
    connection.driver.execute("ROLLBACK")
    assert [row[0] for row in stored(connection)] == ["row-200"]


async def test_another_failure_is_sqlalchemys_too(connection: InlineConnection) -> None:
    with pytest.raises(OperationalError, match="no such table"):
        await sqlite_inserts.insert(connection, "missing", COLUMNS, columns_of(3))
