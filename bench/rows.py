"""Writing chatledger's rows with the plain driver (sqlite3, psycopg), as the baselines
and the seeding of large databases do: values stored exactly as chatledger's own column
types store them, so that the app reads these rows as if it had written them.

The database must already have chatledger's schema (`chatledger.db.migrate.upgrade`).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, date, datetime
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from bench.common import BenchDatabase

Row = dict[str, Any]

USAGE_KEY = ("project_id", "user_id", "day", "model")
USAGE_COUNTERS = (
    "requests",
    "failed_requests",
    "input_tokens",
    "output_tokens",
    "cached_tokens",
    "reasoning_tokens",
    "cost_nano",
)


def _sqlite_value(value: Any) -> Any:
    # As SQLAlchemy's SQLite types store them: UTC text timestamps, ISO dates, JSON text.
    if isinstance(value, datetime):
        return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, dict | list):
        return json.dumps(value)
    if isinstance(value, bool):
        return int(value)
    return value


def _postgres_value(value: Any) -> Any:
    return Jsonb(value) if isinstance(value, dict | list) else value


class DriverWriter:
    """One plain-driver connection with chatledger's durability settings (on SQLite the
    same pragmas as chatledger's engine: WAL, synchronous=NORMAL, foreign keys)."""

    def __init__(self, database: BenchDatabase) -> None:
        self.dialect = database.dialect
        if self.dialect == "sqlite":
            self._sqlite = sqlite3.connect(database.driver_target, isolation_level=None)
            for pragma in ("journal_mode=WAL", "synchronous=NORMAL", "foreign_keys=ON"):
                self._sqlite.execute(f"PRAGMA {pragma}")
            self._mark = "?"
        else:
            self._postgres = psycopg.connect(database.driver_target)
            self._mark = "%s"

    def close(self) -> None:
        if self.dialect == "sqlite":
            self._sqlite.close()
        else:
            self._postgres.close()

    @contextmanager
    def transaction(self) -> Iterator[None]:
        if self.dialect == "sqlite":
            self._sqlite.execute("BEGIN IMMEDIATE")
            try:
                yield
            except BaseException:
                self._sqlite.execute("ROLLBACK")
                raise
            self._sqlite.execute("COMMIT")
        else:
            with self._postgres.transaction():
                yield

    def _values(self, rows: Iterable[Row], columns: Sequence[str]) -> list[tuple[Any, ...]]:
        convert = _sqlite_value if self.dialect == "sqlite" else _postgres_value
        return [tuple(convert(row[name]) for name in columns) for row in rows]

    def _executemany(self, sql: str, params: list[tuple[Any, ...]]) -> None:
        if self.dialect == "sqlite":
            self._sqlite.executemany(sql, params)
        else:
            with self._postgres.cursor() as cursor:
                cursor.executemany(sql, params)

    def prepared(self, table: str, rows: Sequence[Row]) -> tuple[str, list[tuple[Any, ...]]]:
        """INSERT statement and driver parameters for `rows` (built before timing)."""
        columns = list(rows[0])
        marks = ", ".join(self._mark for _ in columns)
        sql = f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({marks})"
        return sql, self._values(rows, columns)

    def prepared_usage(self, rows: Sequence[Row]) -> tuple[str, list[tuple[Any, ...]]]:
        """An upsert adding to usage_daily's counters, as chatledger's own does."""
        columns = [*USAGE_KEY, *USAGE_COUNTERS]
        marks = ", ".join(self._mark for _ in columns)
        adds = ", ".join(
            f"{name} = usage_daily.{name} + excluded.{name}" for name in USAGE_COUNTERS
        )
        sql = (
            f"INSERT INTO usage_daily ({', '.join(columns)}) VALUES ({marks}) "
            f"ON CONFLICT ({', '.join(USAGE_KEY)}) DO UPDATE SET {adds}"
        )
        return sql, self._values(rows, columns)

    def execute_prepared(self, sql: str, params: list[tuple[Any, ...]]) -> None:
        if params:
            self._executemany(sql, params)

    def insert(self, table: str, rows: Sequence[Row]) -> None:
        if rows:
            self.execute_prepared(*self.prepared(table, rows))

    def load(self, table: str, columns: Sequence[str], rows: Iterable[tuple[Any, ...]]) -> None:
        """Bulk load rows (tuples in `columns` order), streamed: COPY on PostgreSQL,
        executemany on SQLite (which has no COPY)."""
        if self.dialect == "sqlite":
            marks = ", ".join("?" for _ in columns)
            sql = f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({marks})"
            self._sqlite.executemany(sql, (tuple(map(_sqlite_value, row)) for row in rows))
            return
        with (
            self._postgres.cursor() as cursor,
            cursor.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy,
        ):
            for row in rows:
                copy.write_row([_postgres_value(value) for value in row])

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Run one query (written with `?` marks) and fetch all its rows."""
        if self.dialect == "sqlite":
            return self._sqlite.execute(sql, params).fetchall()
        with self._postgres.cursor() as cursor:
            cursor.execute(sql.replace("?", "%s"), params)
            rows = cursor.fetchall()
        self._postgres.rollback()  # end the read transaction psycopg opened
        return rows

    def analyze(self) -> None:
        if self.dialect == "sqlite":
            self._sqlite.execute("ANALYZE")
        else:
            self._postgres.commit()
            self._postgres.autocommit = True
            self._postgres.execute("VACUUM ANALYZE")
            self._postgres.autocommit = False


def add_usage(totals: dict[tuple[Any, ...], Row], task: Row) -> None:
    """Count an ended task into per-(project, user, day, model) usage sums."""
    completed_at: datetime = task["completed_at"]
    key = (task["project_id"], task["user_id"], completed_at.date(), task["model"])
    row = totals.get(key)
    if row is None:
        row = dict(zip(USAGE_KEY, key, strict=True)) | dict.fromkeys(USAGE_COUNTERS, 0)
        totals[key] = row
    row["requests"] += 1
    row["failed_requests"] += task["status"] in ("failed", "interrupted")
    for name in ("input_tokens", "output_tokens", "cached_tokens", "reasoning_tokens"):
        row[name] += task[name]
    row["cost_nano"] += task["cost_nano"] or 0
