"""What a trace entry is, and what input is accepted before anything is written: the
limits, the idx rules, and JSON that both databases can store."""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from chatledger.db.types import utcnow
from chatledger.errors import InvalidInput, PayloadTooLarge

MAX_ENTRIES = 1000  # per request: a bigger trace is sent in parts (idx keeps them apart)
MAX_IDX = 2**31 - 1  # the column is a 32-bit integer on PostgreSQL
NAME_LENGTH = 200
NODE_LENGTH = 200
STATUS_LENGTH = 32
# Client clocks run a little ahead; beyond this a timestamp is refused as future.
CLOCK_SKEW = timedelta(minutes=1)


@dataclass
class NewEntry:
    node: str
    status: str
    data: dict[str, Any] = field(default_factory=dict)
    # Position in the trace; None means its position in the list sent.
    idx: int | None = None
    started_at: datetime | None = None
    ended_at: datetime | None = None


def checked_entries(entries: list[NewEntry]) -> dict[int, NewEntry]:
    """Entries by idx, every field checked (422 naming it) before anything is written."""
    if len(entries) > MAX_ENTRIES:
        raise PayloadTooLarge(
            f"at most {MAX_ENTRIES} trace entries per request; send the rest in another",
            limit=MAX_ENTRIES,
            given=len(entries),
        )
    by_idx: dict[int, NewEntry] = {}
    positions: dict[int, int] = {}
    now = utcnow()
    for position, entry in enumerate(entries):
        at = f"entries.{position}"
        idx = position if entry.idx is None else entry.idx
        if not 0 <= idx <= MAX_IDX:
            raise InvalidInput(f"{at}.idx", f"must be between 0 and {MAX_IDX}")
        if idx in positions:
            raise InvalidInput(
                f"{at}.idx", f"idx {idx} is also entries.{positions[idx]}; each idx once"
            )
        _checked_text(entry.node, f"{at}.node", NODE_LENGTH)
        _checked_text(entry.status, f"{at}.status", STATUS_LENGTH)
        checked_data(entry.data, f"{at}.data")
        for name, value in (("started_at", entry.started_at), ("ended_at", entry.ended_at)):
            _checked_time(value, f"{at}.{name}", now)
        if entry.started_at and entry.ended_at and entry.ended_at < entry.started_at:
            raise InvalidInput(f"{at}.ended_at", "is before started_at")
        positions[idx] = position
        by_idx[idx] = replace(entry, idx=idx)
    return by_idx


def checked_name(name: str) -> str:
    name = name.strip()
    _checked_text(name, "name", NAME_LENGTH)
    return name


def _checked_text(value: str, field: str, length: int) -> None:
    if not isinstance(value, str) or not value.strip():
        raise InvalidInput(field, "must be a non-blank string")
    if len(value) > length:
        raise InvalidInput(field, f"must be at most {length} characters")
    if "\x00" in value:
        raise InvalidInput(field, "must not contain NUL (\\u0000)")


def _checked_time(value: datetime | None, field: str, now: datetime) -> None:
    if value is None:
        return
    if value.tzinfo is None:
        raise InvalidInput(field, "must carry a timezone")
    if value > now + CLOCK_SKEW:
        raise InvalidInput(field, "is in the future")


def checked_data(data: Any, field: str) -> dict[str, Any]:
    """A JSON object both databases can store: PostgreSQL's JSONB refuses NUL characters
    and NaN/Infinity, which Python's JSON parser lets through."""
    if not isinstance(data, dict):
        raise InvalidInput(field, "must be a JSON object")
    pending: list[Any] = [data]
    while pending:  # iterative: deep nesting must not exhaust the stack
        value = pending.pop()
        if isinstance(value, dict):
            for key in value:
                if "\x00" in str(key):
                    raise InvalidInput(field, "must not contain NUL (\\u0000)")
            pending.extend(value.values())
        elif isinstance(value, list):
            pending.extend(value)
        elif isinstance(value, str) and "\x00" in value:
            raise InvalidInput(field, "must not contain NUL (\\u0000)")
        elif isinstance(value, float) and not math.isfinite(value):
            raise InvalidInput(field, "numbers must be finite (no NaN or Infinity)")
    return data
