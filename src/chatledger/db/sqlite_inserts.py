"""Many rows into a SQLite table in a few multi-row INSERT statements (batch ingest).

An `executemany` runs its statement once per row: for each it resets the statement,
binds the row and steps it, a round through the driver and SQLite's virtual machine
that cost more than the row's insert (a batch's 1,500 task and message rows).
`INSERT … VALUES (…), (…), …` binds a block of rows at once and inserts them in one
step: a batch's rows inserted in ~15% less time, the server's CPU ~2-3 µs less an
interaction and its one-process ingest ~5% faster (docs/benchmarks.md, "A twenty-sixth
session").

A statement of many rows costs SQLite ~4 µs a row to compile, more than inserting them,
so it must be compiled once and then reused: the blocks have a few fixed sizes (powers
of two up to `BLOCK_ROWS`), which the driver keeps compiled in its statement cache, and
any number of rows is sent as whole blocks, then the rest in smaller powers of two.

The statements go to the driver directly, on the connection of the caller's
transaction: through SQLAlchemy each cost ~50 µs of its statement machinery, and a
batch sends some fifteen. A failure is raised as SQLAlchemy would have raised it.
"""

from __future__ import annotations

import functools
import itertools
import sqlite3
from collections.abc import Sequence
from typing import Any

from sqlalchemy.exc import DBAPIError

from chatledger.db.sqlite_inline import InlineConnection

# Rows of the largest statement. Larger blocks gain little (a block's rows cost about
# the same from 64 rows up) and each compiled statement holds SQLite's program for its
# every row: ~100 KB at 128 rows of a task's 28 columns, per connection.
BLOCK_ROWS = 128


def block_sizes(row_count: int, largest: int = BLOCK_ROWS) -> list[int]:
    """`row_count` rows as statements of the fixed sizes: whole `largest` blocks, then
    the rest as its binary digits (at most one statement of each smaller size)."""
    sizes = [largest] * (row_count // largest)
    rest, size = row_count % largest, largest // 2
    while rest:
        if rest >= size:
            sizes.append(size)
            rest -= size
        size //= 2
    return sizes


def largest_block(connection: sqlite3.Connection, width: int) -> int:
    """The largest block of rows `width` columns wide that one statement may bind: at
    most `BLOCK_ROWS`, within the connection's limit on bound parameters (32,766 since
    SQLite 3.32, 999 before), as a power of two."""
    fits = connection.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER) // width
    largest = 1
    while largest * 2 <= min(fits, BLOCK_ROWS):
        largest *= 2
    return largest


@functools.lru_cache(maxsize=64)
def insert_sql(table: str, columns: tuple[str, ...], row_count: int) -> str:
    names = ", ".join(f'"{name}"' for name in columns)
    row = f"({', '.join('?' * len(columns))})"
    return f'INSERT INTO "{table}" ({names}) VALUES {", ".join([row] * row_count)}'


async def insert(
    connection: InlineConnection,
    table: str,
    columns: tuple[str, ...],
    values: Sequence[Sequence[Any]],
) -> None:
    """Insert the rows whose columns are `values` (one sequence per column of
    `columns`, as `driver_rows.Columns` holds them), in the connection's transaction.
    Raises SQLAlchemy's error (`IntegrityError` for a key stored already); the rows of
    the statement that failed are not stored, those of the ones before it are."""
    driver = connection.driver
    width = len(columns)
    sizes = block_sizes(len(values[0]) if values else 0, largest_block(driver, width))
    # Row after row, as the statements bind them: one pass in C.
    flat = list(itertools.chain.from_iterable(zip(*values, strict=True)))

    def run() -> None:
        cursor = driver.cursor()
        try:
            at = 0
            for size in sizes:
                end = at + size * width
                cursor.execute(insert_sql(table, columns, size), flat[at:end])
                at = end
        finally:
            cursor.close()

    try:
        await connection.run(run)
    except sqlite3.Error as exc:
        raise DBAPIError.instance(
            f'INSERT INTO "{table}"', None, exc, sqlite3.Error, dialect=None
        ) from exc
