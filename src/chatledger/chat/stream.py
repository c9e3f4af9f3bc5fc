"""Chat replies as Server-Sent Events (FastAPI's `fastapi.sse` format), from one of two
sources:

- a turn live in this process: its EventLog, whose ids (1..n) let a client that
  reconnects with `Last-Event-ID` resume exactly, without duplicates;
- the database, for a task that has ended or is answered by another process: a `task`
  event, one `delta` holding the whole text so far (`"replay": true`: replace, don't
  append), new text as the progress writer saves it, then `usage` + `done` or `error`.
  These events have ids `r1, r2…`, which can never be mistaken for a live log's ids.

Neither source holds a DB session for the stream: the database is read in short polls.
Fan-out across replicas through Redis is not done here: another replica's reply is
followed through the database, at the progress writer's debounce.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass
from typing import Any

from fastapi.encoders import jsonable_encoder
from fastapi.sse import KEEPALIVE_COMMENT, EventSourceResponse, ServerSentEvent, format_sse_event
from sqlalchemy import select

from chatledger.db.engine import Database
from chatledger.engine.answered import Answered
from chatledger.engine.chat import Turn, usage_event
from chatledger.engine.events import ChatEvent
from chatledger.errors import NotFound
from chatledger.messages.models import Message
from chatledger.tasks import service as tasks
from chatledger.tasks.models import Task
from chatledger.tenants.caller import Caller

# A comment line when nothing was sent for this long, so that proxies keep the stream.
PING_INTERVAL_S = 15.0

# Plain JSON needs no encoder walk; `jsonable_encoder` only for what json cannot say
# itself (a Decimal cost, a datetime). One encoder for every event: `json.dumps` given a
# `default` makes a new one per call (1.76 -> 1.05 µs an event with one).
_JSON = json.JSONEncoder(default=jsonable_encoder)


# One event of a stream: from the database (a ServerSentEvent), from a live turn's log
# (a ChatEvent, sent as it is), or None: send a keep-alive.
Outgoing = ServerSentEvent | ChatEvent | None


def response(
    events: AsyncIterator[ServerSentEvent], headers: dict[str, str] | None = None
) -> EventSourceResponse:
    """A stream of `events`, with keep-alive pings in its silences."""
    return _response(_with_pings(events), headers)


def live_response(
    turn: Turn, after: int | None, headers: dict[str, str] | None = None
) -> EventSourceResponse:
    """A live turn's events after id `after` (see `follow_live`), pinged by the log."""
    return _response(follow_live(turn, after), headers)


def _response(
    events: AsyncIterator[Outgoing], headers: dict[str, str] | None
) -> EventSourceResponse:
    # Not a generator route (`response_class=EventSourceResponse`): its headers would go
    # out before the route could answer a failed first token with a status.
    return EventSourceResponse(_encoded(events), headers=headers)


async def follow_live(turn: Turn, after: int | None) -> AsyncIterator[Outgoing]:
    """The turn's events after id `after`. None: the client holds text from elsewhere (a
    database replay), so it gets the text so far as one replacing delta, then the rest."""
    if after is None:
        events = list(turn.log.events)
        task = next(e for e in events if e.kind == "task")
        yield ServerSentEvent(
            event="task",
            id=str(task.id),
            data={**task.data, "run_id": turn.plan.run_id, "replay": True},
        )
        deltas = [e for e in events if e.kind == "delta"]
        after = task.id
        if deltas:
            after = deltas[-1].id
            text = "".join(e.data["text"] for e in deltas)
            yield ServerSentEvent(event="delta", id=str(after), data={"text": text, "replay": True})
    # Straight from the log, pings included: no task between the turn and the response.
    # Closed with this generator (`async for` would leave it to the collector).
    async with contextlib.aclosing(turn.log.follow_pinging(after, idle_s=PING_INTERVAL_S)) as live:
        async for event in live:
            yield event


@dataclass(frozen=True)
class _Stored:
    task: Task
    assistant_message_id: str | None


async def read_task(database: Database, caller: Caller, task_id: str) -> _Stored:
    """The caller's task (NotFound otherwise) and the message that answered it, if any."""
    async with database.reading() as session:
        task = await tasks.get(session, caller, task_id)
        answer = await session.scalar(
            select(Message.id).where(
                Message.project_id == task.project_id,
                Message.task_id == task.id,
                Message.role == "assistant",
            )
        )
    return _Stored(task, answer)


async def replay(
    database: Database, caller: Caller, first: _Stored, poll_s: float
) -> AsyncIterator[ServerSentEvent]:
    """The task as stored, followed until it ends (see the module docstring)."""
    count = 0

    def event(kind: str, data: dict[str, Any]) -> ServerSentEvent:
        nonlocal count
        count += 1
        return ServerSentEvent(event=kind, id=f"r{count}", data=data)

    stored, task = first, first.task
    yield event(
        "task",
        {"id": task.id, "attempt": task.attempt, "model": task.model, "run_id": task.run_id}
        | {"status": task.status, "replay": True},
    )
    text = None
    while True:
        task = stored.task
        if task.response_text != (text or ""):
            if text and task.response_text.startswith(text):
                yield event("delta", {"text": task.response_text[len(text) :]})
            else:
                yield event("delta", {"text": task.response_text, "replay": True})
            text = task.response_text
        if task.is_terminal:
            break
        await asyncio.sleep(poll_s)
        try:
            stored = await read_task(database, caller, task.id)
        except NotFound:
            yield event("error", {"kind": "not_found", "message": "the task was deleted"})
            return
    if task.status == "completed":
        yield event("usage", usage_event(Answered.of(task)))
        done = {"task_id": task.id, "message_id": stored.assistant_message_id}
        yield event("done", done | {"status": "completed"})
    else:
        error = task.error or {}
        yield event(
            "error",
            {"kind": task.status, "message": f"the task was {task.status}"} | error,
        )


async def _encoded(events: AsyncIterator[Outgoing]) -> AsyncGenerator[bytes, None]:
    async for event in events:
        if event is None:
            yield KEEPALIVE_COMMENT
            continue
        data = _JSON.encode(event.data)
        if isinstance(event, ChatEvent):
            yield format_sse_event(data_str=data, event=event.kind, id=str(event.id))
        else:
            yield format_sse_event(data_str=data, event=event.event, id=event.id)


_ENDED = object()  # the source has no more events


async def _with_pings(
    events: AsyncIterator[ServerSentEvent],
) -> AsyncIterator[ServerSentEvent | None]:
    """The events, and None each time none came for PING_INTERVAL_S.

    One task reads the source for the whole stream and hands each event over a short
    queue: a ping only stops waiting on the queue, never a read of the source, so no
    event is lost to it (and no task is made per event)."""
    handed: asyncio.Queue[Any] = asyncio.Queue(maxsize=8)

    async def read() -> None:
        try:
            async for event in events:
                await handed.put(event)
        except Exception as exc:  # the consumer raises it, in order
            await handed.put(exc)
        await handed.put(_ENDED)

    reader = asyncio.create_task(read())
    try:
        while True:
            if handed.empty():
                try:
                    async with asyncio.timeout(PING_INTERVAL_S):
                        item = await handed.get()
                except TimeoutError:
                    yield None
                    continue
            else:
                item = handed.get_nowait()
            if item is _ENDED:
                return
            if isinstance(item, Exception):
                raise item
            yield item
    finally:
        # The client went away: stop reading the source (a live turn goes on recording).
        reader.cancel()
