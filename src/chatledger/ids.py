"""Row ids: client-chosen strings checked against one pattern, or server-made UUIDv7
(time-sortable, so new rows land at the end of every index)."""

from __future__ import annotations

import re

import uuid6

from chatledger.errors import InvalidInput

ID_PATTERN = r"^[A-Za-z0-9._:-]{1,128}$"
_ID_RE = re.compile(ID_PATTERN)


def new_id() -> str:
    return str(uuid6.uuid7())


def checked_id(value: str | None, field: str = "id") -> str:
    """The given id if it is well-formed, a fresh one if none was given."""
    if value is None:
        return new_id()
    if not _ID_RE.fullmatch(value):
        raise InvalidInput(field, "ids are 1-128 characters from [A-Za-z0-9._:-]")
    return value
