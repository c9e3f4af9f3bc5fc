"""Recording a finished exchange in one call (DESIGN.md flow 4): prompt, response, model
and usage become a run (ensured, named from the prompt), a completed task and two
messages — all in the caller's transaction, so the exchange is stored whole or not at all.

The interaction's id is its task's id. The task's exactly-once ending is what counts the
usage, so posting the same interaction again (a client retry, a re-sync) finds the task
already there and answers what was stored without counting anything; the same id with
other content is a conflict. The batch endpoint reuses `record` per item.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from chatledger.db.types import utcnow
from chatledger.errors import Conflict, InvalidInput
from chatledger.ids import checked_id
from chatledger.messages import service as messages
from chatledger.messages.models import Message
from chatledger.runs import service as runs
from chatledger.runs.models import Run
from chatledger.tasks import service as tasks
from chatledger.tasks.models import Task
from chatledger.tasks.schemas import provider_and_model
from chatledger.tenants.caller import Caller
from chatledger.tokens import TokenUsage

SERVICE = "interaction"


@dataclass
class NewInteraction:
    prompt: str
    response: str
    model: str
    usage: TokenUsage
    provider: str | None = None
    id: str | None = None
    # A cost the client computed; otherwise it is priced from the usage.
    cost_nano: int | None = None
    ttft_ms: int | None = None
    total_ms: int | None = None
    user_message_id: str | None = None
    assistant_message_id: str | None = None
    created_at: datetime | None = None
    completed_at: datetime | None = None
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Interaction:
    run: Run
    task: Task
    user_message: Message
    assistant_message: Message


async def record(
    session: AsyncSession, caller: Caller, run_id: str, new: NewInteraction
) -> tuple[Interaction, bool]:
    """Store the exchange; True when this call stored it, False for a replay."""
    provider, model = provider_and_model(new.model, new.provider)
    task_id = checked_id(new.id, "id")
    user_message_id = checked_id(new.user_message_id, "user_message_id")
    assistant_message_id = checked_id(new.assistant_message_id, "assistant_message_id")
    ended = ended_at(new)
    run, _ = await runs.ensure(
        session, caller, run_id, first_message=new.prompt, created_at=new.created_at
    )
    task, created = await tasks.create(
        session,
        caller,
        tasks.NewTask(
            id=task_id,
            run_id=run.id,
            model=model,
            provider=provider,
            user_message_id=user_message_id,
            service=SERVICE,
            request={"metadata": new.metadata},
            created_at=new.created_at,
        ),
    )
    if not created:
        return await _replayed(session, caller, run, task, new, provider, model), False

    user_message, _ = await messages.append(
        session,
        caller,
        run.id,
        messages.NewMessage(
            role="user",
            content=new.prompt,
            id=user_message_id,
            task_id=task.id,
            created_at=new.created_at,
        ),
    )
    # A user message stored earlier (say, whose first reply failed) is answered now.
    user_message.task_id = task.id
    await messages.set_outcome(session, user_message, "complete", None)
    task, _ = await tasks.finish(
        session,
        caller,
        task.id,
        tasks.Outcome(
            status="completed",
            response_text=new.response,
            usage=new.usage,
            cost_nano=new.cost_nano,
            ttft_ms=new.ttft_ms,
            total_ms=new.total_ms,
            completed_at=ended,
        ),
    )
    assistant_message, _ = await messages.append(
        session,
        caller,
        run.id,
        messages.NewMessage(
            role="assistant",
            content=new.response,
            id=assistant_message_id,
            task_id=task.id,
            parent_id=user_message.id,
            metadata={**new.metadata, "model": model},
            created_at=ended,
        ),
    )
    if assistant_message.task_id != task.id:  # an id the client used before
        raise Conflict(f"message {assistant_message.id!r} already exists", id=assistant_message.id)
    await session.refresh(run)  # its aggregates moved by UPDATE statements
    return Interaction(run, task, user_message, assistant_message), True


def ended_at(new: NewInteraction) -> datetime:
    """When the exchange ended, which is the day its usage counts on."""
    if new.completed_at is not None:
        ended = new.completed_at
    elif new.created_at is not None:
        ended = min(new.created_at + timedelta(milliseconds=new.total_ms or 0), utcnow())
    else:
        ended = utcnow()
    if new.created_at is not None and ended < new.created_at:
        raise InvalidInput("completed_at", "must not be before created_at")
    return ended


async def _replayed(
    session: AsyncSession,
    caller: Caller,
    run: Run,
    task: Task,
    new: NewInteraction,
    provider: str,
    model: str,
) -> Interaction:
    """The stored interaction if `new` says the same as it, else a conflict."""
    stored = await _stored(session, run, task)
    if stored is None or not _same(stored, new, provider, model):
        raise Conflict(f"interaction {task.id!r} already exists with other content", id=task.id)
    return stored


async def _stored(session: AsyncSession, run: Run, task: Task) -> Interaction | None:
    """The interaction a task was recorded as; None for a task made some other way."""
    if task.status != "completed" or task.user_message_id is None:
        return None
    user_message = await session.get(Message, (task.project_id, task.user_message_id))
    assistant_message = await session.scalar(
        select(Message)
        .where(
            Message.project_id == task.project_id,
            Message.run_id == task.run_id,
            Message.task_id == task.id,
            Message.role == "assistant",
        )
        .order_by(Message.seq)
        .limit(1)
    )
    if user_message is None or assistant_message is None:
        return None
    return Interaction(run, task, user_message, assistant_message)


def _same(stored: Interaction, new: NewInteraction, provider: str, model: str) -> bool:
    task, usage = stored.task, new.usage
    return (
        (task.provider, task.model) == (provider, model)
        and task.response_text == new.response
        and stored.user_message.content == new.prompt
        and task.tokens.counts() == usage.counts()
        and new.cost_nano in (None, task.cost_nano)
        and new.user_message_id in (None, stored.user_message.id)
        and new.assistant_message_id in (None, stored.assistant_message.id)
    )
