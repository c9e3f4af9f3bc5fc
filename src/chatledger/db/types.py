"""Column types, one per idea, portable across SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, DateTime, Dialect, String
from sqlalchemy.dialects import postgresql
from sqlalchemy.types import TypeDecorator

# JSON documents: JSONB on PostgreSQL (indexable, compact), JSON text on SQLite.
JSON_ = JSON().with_variant(postgresql.JSONB(), "postgresql")

# Money is integer nano-USD: sums are exact on both databases, unlike floats, and a
# 64-bit integer holds 9 billion dollars.
NanoUSD = BigInteger

# Ids are short strings (client-chosen or UUIDv7); 128 is the documented maximum.
Id = String(128)


def utcnow() -> datetime:
    return datetime.now(UTC)


class UtcTimeStamp(TypeDecorator[datetime]):
    """A timezone-aware UTC datetime on the way in and out.

    SQLite stores no zone, and PostgreSQL returns the session's zone: normalising here
    means the rest of the code never sees a naive or non-UTC datetime.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> Any:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given; chatledger stores UTC-aware times only")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)
