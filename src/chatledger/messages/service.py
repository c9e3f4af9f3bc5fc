"""The rules for messages: appended as rows, idempotent by id, and updated in place only
to record how the reply to them went (so a retry never duplicates a message)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import bindparam, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from chatledger.db.base import table_of
from chatledger.db.prepared import Prepared
from chatledger.db.types import utcnow
from chatledger.db.upsert import insert_if_absent
from chatledger.errors import Conflict, InvalidInput, NotFound
from chatledger.ids import checked_id
from chatledger.messages.models import Message
from chatledger.runs import service as runs
from chatledger.tenants.caller import Caller

if TYPE_CHECKING:
    from chatledger.runs.models import Run

ROLES = ("system", "user", "assistant", "tool")
STATUSES = ("pending", "complete", "error")


@dataclass
class NewMessage:
    role: str
    content: str
    id: str | None = None
    status: str = "complete"
    error: dict[str, Any] | None = None
    task_id: str | None = None
    parent_id: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    created_at: datetime | None = None


async def append(
    session: AsyncSession, caller: Caller, run_id: str, new: NewMessage, run: Run | None = None
) -> tuple[Message, bool]:
    """Store a message at the end of its run (`run`: the caller's run, when the caller
    has just read or ensured it); True when this call stored it.

    Sending the same message again (same id, role and content) returns the stored row
    unchanged: clients retry and re-sync, and neither may add a row or count it twice.
    The same id with other content is a conflict, not an overwrite.
    """
    if new.role not in ROLES:
        raise InvalidInput("role", f"must be one of {', '.join(ROLES)}")
    if new.status not in STATUSES:
        raise InvalidInput("status", f"must be one of {', '.join(STATUSES)}")
    message_id = checked_id(new.id, "id")
    if run is None or run.id != run_id:
        run = await runs.get(session, caller, run_id)
    existing = await session.get(Message, (run.project_id, message_id))
    if existing is not None:
        return _same_or_conflict(existing, run_id, new), False

    at = new.created_at or utcnow()
    seq = await runs.count_message(session, run.project_id, run.id, new.content, at)
    if not await insert(session, run.project_id, run.id, seq, message_id, new, at):
        # Lost a race with a concurrent append of the same id (possible on PostgreSQL,
        # where the run lock only orders appends to one run): give the count back.
        await _uncount(session, run.project_id, run.id)
        existing = await session.get(Message, (run.project_id, message_id))
        if existing is None:
            # The id is another user's row, hidden by row-level security (PostgreSQL).
            raise Conflict(f"message {message_id!r} already exists", id=message_id)
        return _same_or_conflict(existing, run_id, new), False
    message = await session.get(Message, (run.project_id, message_id))
    assert message is not None
    return message, True


async def insert(
    session: AsyncSession,
    project_id: str,
    run_id: str,
    seq: int,
    message_id: str,
    new: NewMessage,
    at: datetime,
) -> bool:
    """Insert a message's row at `seq` (counted into its run by the caller) unless its
    id exists; True when this call inserted it."""
    return await insert_if_absent(
        session, Message, row(project_id, run_id, seq, message_id, new, at)
    )


def row(
    project_id: str, run_id: str, seq: int, message_id: str, new: NewMessage, at: datetime
) -> dict[str, Any]:
    """A new message's row at `seq`, by column name."""
    return {
        "project_id": project_id,
        "id": message_id,
        "run_id": run_id,
        "seq": seq,
        "parent_id": new.parent_id,
        "role": new.role,
        "content": new.content,
        "status": new.status,
        "error": new.error,
        "task_id": new.task_id,
        "metadata": new.metadata,
        "created_at": at,
        "updated_at": at,
    }


async def add_reply(session: AsyncSession, project_id: str, run_id: str, new: NewMessage) -> str:
    """Append a reply the caller has just produced (its id new, its run known to be the
    caller's): counted and inserted, two statements, nothing read. Returns its id."""
    message_id = checked_id(new.id, "id")
    at = new.created_at or utcnow()
    seq = await runs.count_message(session, project_id, run_id, new.content, at)
    if not await insert(session, project_id, run_id, seq, message_id, new, at):
        raise Conflict(f"message {message_id!r} already exists", id=message_id)
    return message_id


def _same_or_conflict(existing: Message, run_id: str, new: NewMessage) -> Message:
    if (existing.run_id, existing.role, existing.content) != (run_id, new.role, new.content):
        raise Conflict(
            f"message {existing.id!r} already exists with other content",
            id=existing.id,
        )
    return existing


async def _uncount(session: AsyncSession, project_id: str, run_id: str) -> None:
    from chatledger.runs.models import Run

    await session.execute(
        update(Run)
        .where(Run.project_id == project_id, Run.id == run_id)
        .values(message_count=Run.message_count - 1)
    )


async def get(session: AsyncSession, caller: Caller, message_id: str) -> Message:
    message = await session.get(Message, (caller.project_id, message_id))
    if message is None:
        raise NotFound("message", message_id)
    try:
        await runs.get(session, caller, message.run_id)
    except NotFound:
        # Not the caller's run: the same 404 as an unknown message, which must not name
        # the run (that would tell which of another user's runs the message is in).
        raise NotFound("message", message_id) from None
    return message


async def list_messages(session: AsyncSession, caller: Caller, run_id: str) -> list[Message]:
    run = await runs.get(session, caller, run_id)
    stmt = (
        select(Message)
        .where(Message.project_id == run.project_id, Message.run_id == run.id)
        .order_by(Message.seq)
    )
    return list(await session.scalars(stmt))


# What a model is shown of a run, read on every chat turn: built once, as Core.
_messages = table_of(Message)
_CONVERSATION = Prepared(
    select(
        _messages.c.id, _messages.c.seq, _messages.c.role, _messages.c.content, _messages.c.status
    )
    .where(
        _messages.c.project_id == bindparam("in_project"), _messages.c.run_id == bindparam("run")
    )
    .order_by(_messages.c.seq)
)


async def conversation(session: AsyncSession, project_id: str, run_id: str) -> Sequence[Any]:
    """A run the caller has just written to, read back for the model: each message's id,
    seq, role, content and status, in order."""
    return (await _CONVERSATION.execute(session, {"in_project": project_id, "run": run_id})).rows


async def mark(
    session: AsyncSession,
    project_id: str,
    message_id: str,
    status: str,
    error: dict[str, Any] | None = None,
) -> None:
    """As `set_outcome`, by id, in one statement, for a message the caller has in hand."""
    await session.execute(
        update(Message)
        .where(Message.project_id == project_id, Message.id == message_id)
        .values(status=status, error=error, updated_at=utcnow())
        .execution_options(synchronize_session=False)
    )


async def mark_answered(session: AsyncSession, project_id: str, message_id: str) -> None:
    """Record that the message's reply completed: one statement, and none written when it
    already says so (the usual case: a new message is stored `complete`)."""
    await session.execute(
        update(Message)
        .where(
            Message.project_id == project_id,
            Message.id == message_id,
            Message.status != "complete",
        )
        .values(status="complete", error=None, updated_at=utcnow())
        .execution_options(synchronize_session=False)
    )


async def set_outcome(
    session: AsyncSession, message: Message, status: str, error: dict[str, Any] | None = None
) -> Message:
    """Record how the reply to a message went; the text and position never change."""
    message.status = status
    message.error = error
    message.updated_at = utcnow()
    await session.flush()
    return message
