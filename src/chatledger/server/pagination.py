"""Cursor pagination: a cursor is the opaque position after the last item of a page, so
pages stay stable while rows are added (unlike offsets)."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime
from typing import Any, Generic, TypeVar

from pydantic import BaseModel

from chatledger.errors import InvalidInput

T = TypeVar("T")

MAX_LIMIT = 200


class Page(BaseModel, Generic[T]):
    items: list[T]
    next_cursor: str | None = None


def encode_cursor(*position: Any) -> str:
    return base64.urlsafe_b64encode(json.dumps(position, default=str).encode()).decode()


def decode_cursor(cursor: str | None) -> list[Any] | None:
    if cursor is None:
        return None
    try:
        position = json.loads(base64.urlsafe_b64decode(cursor.encode()))
    except ValueError as exc:
        raise _not_ours() from exc
    if not isinstance(position, list):
        raise _not_ours()
    return position


def decode_time_cursor(cursor: str | None) -> tuple[datetime, str] | None:
    """The position `encode_cursor(time.isoformat(), id)` gave out: the time as an aware
    UTC datetime, as it is compared with the stored ones."""
    position = decode_cursor(cursor)
    if position is None:
        return None
    try:
        time, id_ = position
        at = datetime.fromisoformat(time)
        if at.tzinfo is None:
            raise ValueError("no zone")  # every time this server gives out has one
        return at.astimezone(UTC), str(id_)
    except (TypeError, ValueError, OverflowError) as exc:  # (OverflowError: not in UTC's years)
        raise _not_ours() from exc


def _not_ours() -> InvalidInput:
    return InvalidInput("cursor", "not a cursor this server gave out")
