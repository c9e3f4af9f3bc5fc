"""A group's task and message rows as the driver takes them (batch ingest), made column by
column while `bulk.build` walks the group's interactions.

`db.driver_rows` converts rows given as dictionaries, each value as its column's type
binds it: right for any table, but for a batch's ~1,500 rows the dictionaries, picking
each column back out of them and finding every shared value again cost ~4.5 µs an
interaction, as much as the rest of building them. Here an interaction adds only the
values that are its own (ids, texts, counts, its two times, each converted once for all
the columns and rows that hold it), and the columns that every row holds alike (the
project, the status, an empty document) are filled once for the group.

Each value is as the driver takes it (`DriverValues`): for SQLite's executemany as
`driver_rows` converts it, which is as SQLAlchemy's column type binds it; for
PostgreSQL's COPY a JSON document as its text and the rest as it is.
tests/db/test_bulk_rows.py checks every column of both against the same rows converted
as dictionaries.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import Boolean, Dialect

from chatledger.db import driver_rows
from chatledger.db.driver_rows import Columns
from chatledger.interactions.service import SERVICE

if TYPE_CHECKING:
    from chatledger.interactions.bulk import Pending


@dataclass(frozen=True)
class DriverValues:
    """How the driver of `insert_rows` takes a timestamp, a JSON document and a boolean:
    on SQLite as their column types bind them (text, text, an integer), for PostgreSQL's
    COPY a document as its text and the rest as they are (psycopg adapts them)."""

    timestamp: Callable[[datetime], Any]
    document: Callable[[Any], Any]
    boolean: Callable[[bool], Any]

    @classmethod
    def of(cls, dialect: Dialect) -> DriverValues:
        if dialect.name == "postgresql":
            return cls(_as_it_is, driver_rows.json_text, _as_it_is)
        boolean = driver_rows.bind_processor(Boolean(), dialect) or _as_it_is
        return cls(driver_rows.timestamp_text, driver_rows.json_text, boolean)


def _as_it_is(value: Any) -> Any:
    return value


_TASK_COLUMNS = (
    # Each row's own, in the order `add` fills them.
    *("id", "run_id", "user_id", "user_message_id", "provider", "model", "request"),
    *("response_text", "input_tokens", "output_tokens", "cached_tokens", "reasoning_tokens"),
    *("cache_write_tokens", "usage_estimated", "cost_nano", "price_source", "ttft_ms"),
    *("total_ms", "created_at", "completed_at"),
)
_MESSAGE_COLUMNS = (
    *("id", "run_id", "parent_id", "role", "content", "task_id", "metadata", "created_at"),
    "updated_at",
)
# Numbered once the runs are locked (`bulk.store`): the driver takes it as it is.
SEQ = "seq"
# The columns whose values a `DriverValues` conversion made: never replaced as they are.
_TASK_CONVERTED = frozenset(
    {
        *("request", "error", "usage_estimated"),
        *("created_at", "updated_at", "heartbeat_at", "completed_at"),
    }
)
_MESSAGE_CONVERTED = frozenset(("metadata", "created_at", "updated_at", "error"))


class GroupRows:
    """The task and two messages of each interaction of a group, as `bulk.store`
    inserts them: `add` one interaction at a time, then `tasks()` and `messages()`."""

    def __init__(self, project_id: str, now: datetime, values: DriverValues) -> None:
        self._project_id = project_id
        self._values = values
        self._now = self._values.timestamp(now)
        document = self._values.document
        self._null = document(None)  # (a JSON column's None is the JSON null)
        self._empty = document({})  # a user message's metadata
        self._bare_request = document({"metadata": {}})  # an interaction's without any
        self._bare_reply: dict[str, Any] = {}  # an assistant message's, by model
        # Each row's own values, in the order of `_TASK_COLUMNS` / `_MESSAGE_COLUMNS`:
        # turned into columns at the end, in one pass in C.
        self._tasks: list[tuple[Any, ...]] = []
        self._messages: list[tuple[Any, ...]] = []

    def add(
        self,
        p: Pending,
        owner: str,
        cost_nano: int | None,
        price_source: str | None,
        asked_at: datetime,
    ) -> None:
        """One interaction's rows: its task, completed, owned by its run's `owner`, and
        its user and assistant messages."""
        new, tokens, values = p.new, p.new.usage, self._values
        asked, ended = values.timestamp(asked_at), values.timestamp(p.ended_at)
        if new.metadata:
            request = values.document({"metadata": new.metadata})
        else:
            request = self._bare_request
        self._tasks.append(
            (
                *(p.task_id, p.run_id, owner, p.user_message_id, p.provider, p.model),
                request,
                *(new.response, tokens.input_tokens, tokens.output_tokens),
                *(tokens.cached_tokens, tokens.reasoning_tokens, tokens.cache_write_tokens),
                values.boolean(tokens.estimated),
                *(cost_nano, price_source, new.ttft_ms, new.total_ms, asked, ended),
            )
        )
        task_id, run_id = p.task_id, p.run_id
        user_message = (p.user_message_id, run_id, None, "user", new.prompt, task_id)
        reply = (p.assistant_message_id, run_id, p.user_message_id, "assistant", new.response)
        self._messages += (
            (*user_message, self._empty, asked, self._now),
            (*reply, task_id, self._reply_metadata(new.metadata, p.model), ended, ended),
        )

    def _reply_metadata(self, metadata: dict[str, Any], model: str) -> Any:
        if metadata:
            return self._values.document({**metadata, "model": model})
        bare = self._bare_reply.get(model)
        if bare is None:
            bare = self._bare_reply[model] = self._values.document({"model": model})
        return bare

    def tasks(self) -> Columns:
        alike = {
            "project_id": self._project_id,
            "attempt": 1,
            "service": SERVICE,
            "task_name": None,
            "status": "completed",
            "error": self._null,
            "heartbeat_at": self._now,
        }
        own = _by_column(_TASK_COLUMNS, self._tasks)
        own["updated_at"] = own["completed_at"]  # a completed task last changed as it ended
        return _columns(alike, own, len(self._tasks), converted=_TASK_CONVERTED)

    def messages(self) -> Columns:
        alike = {"project_id": self._project_id, SEQ: 0, "status": "complete", "error": self._null}
        own = _by_column(_MESSAGE_COLUMNS, self._messages)
        return _columns(alike, own, len(self._messages), converted=_MESSAGE_CONVERTED)


def _by_column(names: tuple[str, ...], rows: list[tuple[Any, ...]]) -> dict[str, list[Any]]:
    if not rows:
        return {name: [] for name in names}
    return dict(zip(names, map(list, zip(*rows, strict=True)), strict=True))


def _columns(
    alike: dict[str, Any], own: dict[str, list[Any]], count: int, converted: frozenset[str]
) -> Columns:
    names = (*alike, *own)
    values = (*([value] * count for value in alike.values()), *own.values())
    return Columns(names, values, frozenset(names) - converted)
