"""The save flow (DESIGN.md flow 1), step for step:

1. one transaction: the run is counted in or created (named from the first message),
   the task is created *before* the model is called, the user message is stored
   (engine/planning.py);
2. the reply streams; its text is saved debounced as status `streaming`;
3. one transaction: the task ends exactly once with text, tokens, cost and timings, the
   run's aggregates and daily usage move with it, the assistant message is stored and
   linked to the task, and the user message records how its reply went.

A failed call ends the task `failed` and marks the user message `error`; a retry of that
message keeps its id and adds a task attempt. The turn runs on its own asyncio task:
whoever watches it (a terminal, an SSE client) can go away without stopping the record.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from chatledger import pricing
from chatledger.config import Settings
from chatledger.db.engine import Database
from chatledger.db.types import utcnow
from chatledger.engine import answered
from chatledger.engine import usage as turn_usage
from chatledger.engine.events import ChatEvent, EventLog
from chatledger.engine.planning import TurnPlanner
from chatledger.engine.progress import Progress, ProgressWriter
from chatledger.engine.turn import ChatRequest, TurnPlan, TurnResult
from chatledger.errors import Conflict, InvalidInput, ProviderError
from chatledger.messages import service as messages
from chatledger.messages.models import Message
from chatledger.providers import (
    Delta,
    Providers,
    StreamEvent,
    UsageSoFar,
)
from chatledger.tasks import service as tasks
from chatledger.tasks.models import Task
from chatledger.tenants.caller import Caller
from chatledger.tokens import TokenUsage

logger = logging.getLogger(__name__)


class Turn:
    """One reply in flight. Watch it with `events()`; `result()` waits for the record."""

    def __init__(self, plan: TurnPlan, log: EventLog) -> None:
        self.plan = plan
        self.log = log
        self._job: asyncio.Task[TurnResult] | None = None
        # A cancelled job re-raises its cancellation (as asyncio expects), after it has
        # recorded the turn: the record is kept here so `result()` can still answer it.
        self.cancelled_as: TurnResult | None = None

    def events(self, after: int = 0) -> Any:
        return self.log.follow(after)

    async def result(self) -> TurnResult:
        """The recorded result, whatever the ending (a cancelled turn's included)."""
        job = self._running()
        try:
            return await asyncio.shield(job)
        except asyncio.CancelledError:
            if job.cancelled() and self.cancelled_as is not None:
                return self.cancelled_as
            raise  # the caller itself was cancelled, or the turn never began

    def cancel(self) -> None:
        self._running().cancel()

    def _running(self) -> asyncio.Task[TurnResult]:
        if self._job is None:
            raise RuntimeError("the turn has not been launched")
        return self._job


class ChatEngine:
    def __init__(
        self, database: Database, settings: Settings, providers: Providers | None = None
    ) -> None:
        self.database = database
        self.settings = settings
        # This engine's model providers, configured by its own settings.
        self.providers = providers or Providers(settings)
        self._planner = TurnPlanner(settings, self.providers)
        self._live: set[asyncio.Task[TurnResult]] = set()
        self._progress = ProgressWriter(
            database,
            interval_s=settings.stream_debounce_ms / 1000,
            heartbeat_s=settings.task_lease_seconds / 3,
        )
        # The turns in flight in this process, by (project, task id), so that a client
        # that lost its stream can follow the reply again (`GET /v1/tasks/{id}/stream`).
        self._turns: dict[tuple[str, str], Turn] = {}

    async def start(self, caller: Caller, request: ChatRequest) -> Turn:
        """Record the user's message and start the reply. Bad input raises here, before
        anything is written."""
        if not request.content.strip():
            raise InvalidInput("content", "must not be empty")
        async with self.database.transaction() as session:
            existing = None
            if request.message_id is not None:
                existing = await session.get(Message, (caller.project_id, request.message_id))
            if existing is not None:
                # Another user's message is a 404 whatever the content: comparing it
                # first would let a caller confirm a guess of someone else's text.
                await messages.get(session, caller, existing.id)
                if existing.content != request.content:
                    raise Conflict(
                        f"message {existing.id!r} already exists with other content",
                        id=existing.id,
                    )
                # The same message sent again (a client retrying its POST): answer it
                # as a retry, which refuses if it was already answered.
                plan = await self._planner.retry(session, caller, existing.id, request)
            else:
                plan = await self._planner.new(session, caller, request)
        return await self._launch(caller, plan)

    async def retry(
        self, caller: Caller, message_id: str, request: ChatRequest | None = None
    ) -> Turn:
        """Answer a user message again: same message id, a new task attempt."""
        async with self.database.transaction() as session:
            plan = await self._planner.retry(session, caller, message_id, request)
        return await self._launch(caller, plan)

    @property
    def live_count(self) -> int:
        """Replies streaming now."""
        return len(self._live)

    def live_turn(self, project_id: str, task_id: str) -> Turn | None:
        """The turn answering this task, while it is in flight in this process."""
        return self._turns.get((project_id, task_id))

    async def shutdown(self) -> None:
        """Cancel the replies in flight (each records itself as cancelled), then close
        the providers' connections."""
        for job in list(self._live):
            job.cancel()
        await asyncio.gather(*self._live, return_exceptions=True)
        await self.providers.aclose()

    async def _launch(self, caller: Caller, plan: TurnPlan) -> Turn:
        log = EventLog()
        log.emit("run", {"id": plan.run_id, "name": plan.run_name, "created": plan.run_created})
        log.emit("task", {"id": plan.task_id, "attempt": plan.attempt, "model": plan.model})
        turn = Turn(plan, log)
        job = asyncio.create_task(self._reply(caller, turn), name=f"turn:{plan.task_id}")
        turn._job = job
        self._live.add(job)
        job.add_done_callback(self._live.discard)
        job.add_done_callback(_report_crash)
        key = (caller.project_id, plan.task_id)
        self._turns[key] = turn
        # Once done, the task's record is committed: late watchers read it from there.
        job.add_done_callback(lambda _: self._turns.pop(key, None))
        # Let the job take its first step: a task cancelled before it starts never runs
        # its body, so its cancellation would never be recorded (the task left pending).
        await asyncio.sleep(0)
        return turn

    # -- steps 2 and 3: the reply and its record ----------------------------------------

    async def _reply(self, caller: Caller, turn: Turn) -> TurnResult:
        plan, log = turn.plan, turn.log
        writer = self._progress.follow(plan.project_id, plan.task_id)
        got = _Received()
        try:
            # Closed however the loop ends (break, cancel), so the provider's connection
            # is released now rather than whenever the generator is collected.
            async with contextlib.aclosing(plan.provider.stream(plan.request)) as stream:
                async for event in stream:
                    got.take(event)
                    if isinstance(event, Delta):
                        writer.note(got.text)
                        log.emit("delta", {"text": event.text})
                        if writer.ended_as is not None:
                            break
            # Still inside the try: a cancel that arrives once the stream has ended, before
            # its completion is recorded, must be recorded too, not leave the task pending.
            await writer.close()
            if writer.ended_as is None:
                return await _to_the_end(self._record_success(caller, plan, log, got))
        except ProviderError as exc:
            error = {"kind": exc.kind, "message": exc.message, "retryable": exc.retryable}
            if "retry_after" in exc.details:  # the provider said when to try again
                error["retry_after"] = exc.details["retry_after"]
            return await _to_the_end(self._record_failure(writer, caller, plan, log, got, error))
        except asyncio.CancelledError:
            error = {"kind": "cancelled", "message": "the reply was cancelled"}
            turn.cancelled_as = await _to_the_end(
                self._record_failure(writer, caller, plan, log, got, error)
            )
            raise
        except Exception as exc:
            error = {"kind": "internal", "message": f"{type(exc).__name__}: {exc}"}
            await _to_the_end(self._record_failure(writer, caller, plan, log, got, error))
            raise
        # The task was ended elsewhere (cancelled through the API): it is recorded already;
        # its message is marked as a failed exchange, as if the turn had been cancelled here.
        ended_as = writer.ended_as or "ended"
        error = {"kind": ended_as, "message": f"the task was {ended_as}"}
        async with self.database.transaction() as session:
            await _mark_failed(session, plan, error)
        log.emit("error", error)
        log.close()
        return TurnResult(
            plan.run_id, plan.task_id, plan.user_message_id, ended_as, got.text, error=error
        )

    async def _record_success(
        self,
        caller: Caller,
        plan: TurnPlan,
        log: EventLog,
        got: _Received,
    ) -> TurnResult:
        text = got.text
        # The provider reported nothing: estimate, and say so.
        usage = got.usage or turn_usage.estimated(plan.request, text)
        at = utcnow()  # when the task ended, and so when its reply was said
        outcome = tasks.Outcome(
            status="completed",
            response_text=text,
            usage=usage,
            ttft_ms=got.ttft_ms,
            total_ms=got.elapsed_ms(),
            completed_at=at,
        )
        reply = messages.NewMessage(
            role="assistant",
            content=text,
            task_id=plan.task_id,
            parent_id=plan.user_message_id,
            metadata={"model": plan.model},
            created_at=at,
        )
        async with self.database.transaction() as session:
            # A retried message may say its last reply failed: one more statement.
            last = plan.new_message
            task, assistant_id = await answered.record(
                session, caller, plan, outcome, reply, last=last
            )
            if not last:
                await messages.mark_answered(session, plan.project_id, plan.user_message_id)
        log.emit("usage", usage_event(task))
        result = TurnResult(
            run_id=plan.run_id,
            task_id=task.id,
            user_message_id=plan.user_message_id,
            status="completed",
            text=text,
            assistant_message_id=assistant_id,
            usage=usage,
            cost_nano=task.cost_nano,
            price_source=task.price_source,
            ttft_ms=task.ttft_ms,
            total_ms=task.total_ms,
        )
        log.emit("done", {"task_id": task.id, "message_id": assistant_id, "status": "completed"})
        log.close()
        return result

    async def _record_failure(
        self,
        writer: Progress,
        caller: Caller,
        plan: TurnPlan,
        log: EventLog,
        got: _Received,
        error: dict[str, Any],
    ) -> TurnResult:
        await writer.close()  # no progress write may land after the ending
        cancelled = error["kind"] == "cancelled"
        text = got.text
        # Tokens already streamed were paid for: keep them rather than lose them.
        usage = turn_usage.cut_short(plan.request, text, got.known)
        outcome = tasks.Outcome(
            status="cancelled" if cancelled else "failed",
            response_text=text,
            usage=usage,
            error=error,
            ttft_ms=got.ttft_ms,
            total_ms=got.elapsed_ms(),
        )
        async with self.database.transaction() as session:
            task = await _end(session, caller, plan, outcome)
            await _mark_failed(session, plan, error)
        log.emit("error", error)
        log.close()
        return TurnResult(
            run_id=plan.run_id,
            task_id=task.id,
            user_message_id=plan.user_message_id,
            status=outcome.status,
            text=text,
            usage=usage or TokenUsage(),
            cost_nano=task.cost_nano,
            price_source=task.price_source,
            ttft_ms=task.ttft_ms,
            total_ms=task.total_ms,
            error=error,
        )


async def _end(
    session: AsyncSession, caller: Caller, plan: TurnPlan, outcome: tasks.Outcome
) -> Task:
    """End the turn's task: straight to the guarded UPDATE, the turn knowing its task."""
    ended = await tasks.end(session, plan.task, outcome)
    if ended is None:  # ended meanwhile elsewhere: answered as a replay (or its conflict)
        task, _ = await tasks.finish(session, caller, plan.task_id, outcome)
        return task
    return ended


async def _mark_failed(session: AsyncSession, plan: TurnPlan, error: dict[str, Any]) -> None:
    """The user message's exchange failed: it says so, and which task failed it."""
    await messages.mark(
        session, plan.project_id, plan.user_message_id, "error", {**error, "task_id": plan.task_id}
    )


def usage_event(task: answered.Answered) -> dict[str, Any]:
    """The `usage` event of a finished task (also replayed from the database: `Answered.of`
    a stored task)."""
    cost = pricing.usd(task.cost_nano)
    return {
        "input_tokens": task.input_tokens,
        "output_tokens": task.output_tokens,
        "cached_tokens": task.cached_tokens,
        "reasoning_tokens": task.reasoning_tokens,
        "cache_write_tokens": task.cache_write_tokens,
        "estimated": task.usage_estimated,
        "cost_usd": None if cost is None else f"{cost:f}",
        "price_source": task.price_source,
        "ttft_ms": task.ttft_ms,
        "total_ms": task.total_ms,
    }


async def _to_the_end(record: Coroutine[Any, Any, TurnResult]) -> TurnResult:
    """Record a reply that is over, to the end: a cancel that comes meanwhile is too late
    and is ignored. Cut in half, the record would be lost (the task left live) and, on
    SQLite, the interrupted transaction could keep the write lock."""
    job = asyncio.ensure_future(record)
    while not job.done():
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.shield(job)
    return job.result()


def _report_crash(job: asyncio.Task[TurnResult]) -> None:
    # A watcher may never ask for the result (a client that went away): say here that
    # the reply crashed (it is recorded as failed), rather than asyncio's "never retrieved".
    if not job.cancelled() and (error := job.exception()) is not None:
        logger.error("reply %s crashed", job.get_name(), exc_info=error)


@dataclass
class _Received:
    """What the provider has sent so far in one reply."""

    started: float = field(default_factory=time.monotonic)
    text: str = ""
    ttft_ms: int | None = None
    usage: TokenUsage | None = None  # the final count (`Finished`)
    known: TokenUsage | None = None  # reported before the end (`UsageSoFar`)

    def take(self, event: StreamEvent) -> None:
        if isinstance(event, Delta):
            if self.ttft_ms is None:
                self.ttft_ms = self.elapsed_ms()
            self.text += event.text
        elif isinstance(event, UsageSoFar):
            self.known = event.usage
        else:
            self.usage = event.usage

    def elapsed_ms(self) -> int:
        return round((time.monotonic() - self.started) * 1000)


__all__ = ["ChatEngine", "ChatEvent", "ChatRequest", "Turn", "TurnResult", "usage_event"]
