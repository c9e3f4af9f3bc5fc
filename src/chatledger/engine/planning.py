"""Step 1 of the save flow (engine/chat.py): everything before the model is called, in
the caller's transaction. A new message: the run counted in (or created, named from the
message), then the task created, the user message stored and the conversation read for
the model (engine/asked.py: one statement on PostgreSQL; when the turn names its run and
model, the run's count in it too, and on SQLite then one statement as well). A retry:
the stored user message answered again by a new task attempt. Bad input (an unknown
model or prompt, a bad setting, a taken id) is refused here, and the transaction takes
back whatever was written before it."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from chatledger.config import Settings
from chatledger.db.types import utcnow
from chatledger.engine import asked
from chatledger.engine.turn import ChatRequest, TurnPlan
from chatledger.errors import Conflict, InvalidInput
from chatledger.ids import checked_id
from chatledger.messages import service as messages
from chatledger.prompts import chat as prompt_chat
from chatledger.providers import ChatMessage, ModelRequest, Providers
from chatledger.runs import service as runs
from chatledger.runs.models import Run
from chatledger.tasks import service as tasks
from chatledger.tenants.caller import Caller


class TurnPlanner:
    def __init__(self, settings: Settings, providers: Providers) -> None:
        self._settings = settings
        self._providers = providers

    async def new(self, session: AsyncSession, caller: Caller, req: ChatRequest) -> TurnPlan:
        # With a prompt: rendered first, so an unknown one or a missing variable is refused
        # before anything is written. See prompts/chat.py for how runs keep it.
        prompt = await prompt_chat.for_chat(session, caller, req.prompt, req.variables, req.run_id)
        model_string = req.model or prompt_chat.model_of(prompt) or self._settings.default_model
        self._providers.resolve(
            model_string
        )  # an unknown model is a 422 before anything is written
        # The run remembers its model; per-turn settings stay with the turn's task.
        run_settings = {"model": model_string}
        absent = False
        follow_up = prompt is None and req.model and req.run_id and req.message_id is None
        if follow_up:
            if plan := await self._follow_up(session, caller, req):
                return plan
            absent = True  # the caller has no such run: nothing was written
        run_id, created_with_prompt = req.run_id, False
        if prompt is not None:  # the prompt's messages go first: the run must exist
            run, created_with_prompt = await runs.ensure(
                session,
                caller,
                req.run_id,
                name=req.run_name,
                first_message=req.content,
                settings=run_settings,
            )
            await prompt_chat.start_run(session, caller, run, prompt)
            run_id = run.id
        at = utcnow()
        run_opened = await runs.open_for_message(
            session,
            caller,
            run_id,
            req.content,
            at,
            name=req.run_name,
            settings=run_settings,
            absent=absent,
        )
        message_id = checked_id(req.message_id, "message.id")
        # A message id made just now cannot have been named by any task yet.
        task, task_row = await self._new_task(
            session, caller, run_opened, req, message_id, first_attempt=req.message_id is None
        )
        message_row = self._message_row(run_opened, run_opened.seq, message_id, task, req, at)
        # A new run without a prompt holds just this message: nothing to read.
        read_earlier = not run_opened.created or prompt is not None
        stored = await asked.store(session, task_row, message_row, read_earlier=read_earlier)
        run_created = run_opened.created or created_with_prompt
        return self._started(run_opened, run_created, task, message_id, stored, req.content)

    async def _follow_up(
        self, session: AsyncSession, caller: Caller, req: ChatRequest
    ) -> TurnPlan | None:
        """A message to a run the request names, with its model and no id of its own (a
        chat's follow-up turns): the run's count and the rest of the start in one statement
        (engine/asked.py). None when the caller has no such run: nothing was
        written."""
        assert req.model is not None and req.run_id is not None
        at = utcnow()
        message_id = checked_id(None, "message.id")
        # The run's owner and stored settings come from its row, in the statement.
        named = _NamedRun(caller.project_id, req.run_id, caller.user_id)
        task, task_row = await self._task_row(
            session, named, req.model, req.settings, req.task_id, message_id, first_attempt=True
        )
        message_row = self._message_row(named, 0, message_id, task, req, at)  # seq: the count's
        counted = await asked.count_and_store(session, caller, task_row, message_row)
        if counted is None:
            return None
        # The whole transaction is taken back if the settings the task runs with are bad.
        provider, _ = self._providers.resolve(req.model)
        provider.check_settings(counted.settings)
        task = replace(task, settings=counted.settings)
        return self._started(counted.run, False, task, message_id, counted.asked, req.content)

    @staticmethod
    def _message_row(
        run: tasks.RunOfTask,
        seq: int,
        message_id: str,
        task: _NewTask,
        req: ChatRequest,
        at: datetime,
    ) -> dict[str, Any]:
        message = messages.NewMessage(role="user", content=req.content, task_id=task.id)
        return messages.row(run.project_id, run.id, seq, message_id, message, at)

    def _started(
        self,
        run: runs.Opened,
        run_created: bool,
        task: _NewTask,
        message_id: str,
        stored: asked.Asked,
        content: str,
    ) -> TurnPlan:
        """The plan of a turn whose task and message `asked` has stored (or refused)."""
        if not stored.task_created:
            raise Conflict(f"task {task.id!r} already exists", id=task.id)
        if not stored.message_created:
            # Sent twice at once: the other request stored it (and answers it).
            raise Conflict(f"message {message_id!r} already exists", id=message_id)
        # Messages whose exchange failed are not part of the conversation.
        history = [ChatMessage(m.role, m.content) for m in stored.earlier if m.status == "complete"]
        history.append(ChatMessage("user", content))
        return self._plan(run, run_created, task, message_id, True, history)

    async def retry(
        self, session: AsyncSession, caller: Caller, message_id: str, req: ChatRequest | None
    ) -> TurnPlan:
        message = await messages.get(session, caller, message_id)
        if message.role != "user":
            raise InvalidInput("message_id", "only a user message can be retried")
        run = await runs.get(session, caller, message.run_id)
        for attempt in await tasks.answering(session, run, message.id):
            if attempt.status == "completed":
                raise Conflict(f"message {message.id!r} was already answered", task_id=attempt.id)
            if not attempt.is_terminal:
                raise Conflict(f"message {message.id!r} is being answered", task_id=attempt.id)
        req = req or ChatRequest(content=message.content)
        task, row = await self._new_task(session, caller, run, req, message.id)
        if not await tasks.insert_row(session, row):
            raise Conflict(f"task {task.id!r} already exists", id=task.id)
        message.task_id = task.id
        await messages.set_outcome(session, message, "complete", None)
        history = await self._history(session, run.project_id, run.id, message.id)
        return self._plan(run, False, task, message.id, False, history)

    async def _new_task(
        self,
        session: AsyncSession,
        caller: Caller,
        run: Run | runs.Opened,
        req: ChatRequest,
        message_id: str,
        *,
        first_attempt: bool = False,
    ) -> tuple[_NewTask, dict[str, Any]]:
        """The task that will answer `message_id`, and its row, for the caller to insert."""
        model_string = req.model or run.settings.get("model") or self._settings.default_model
        provider, _ = self._providers.resolve(model_string)
        settings = {**run.settings, **req.settings}
        settings.pop("model", None)
        provider.check_settings(settings)
        return await self._task_row(
            session,
            run,
            model_string,
            settings,
            req.task_id,
            message_id,
            first_attempt=first_attempt,
        )

    async def _task_row(
        self,
        session: AsyncSession,
        run: tasks.RunOfTask,
        model_string: str,
        settings: dict[str, Any],
        task_id: str | None,
        message_id: str,
        *,
        first_attempt: bool,
    ) -> tuple[_NewTask, dict[str, Any]]:
        provider, model = self._providers.resolve(model_string)
        task_id = checked_id(task_id, "id")
        row = await tasks.new_row(
            session,
            run,
            tasks.NewTask(
                run_id=run.id,
                model=model,
                provider=provider.name,
                user_message_id=message_id,
                service="chat",
                task_name="chat",
                request={"model": model_string, "settings": settings},
            ),
            task_id,
            first_attempt=first_attempt,
        )
        return _NewTask(task_id, row["attempt"], model_string, settings), row

    @staticmethod
    async def _history(
        session: AsyncSession, project_id: str, run_id: str, message_id: str
    ) -> list[ChatMessage]:
        return [
            ChatMessage(m.role, m.content)
            for m in await messages.conversation(session, project_id, run_id)
            # Messages whose exchange failed are not part of the conversation, except
            # the one being answered now.
            if m.status == "complete" or m.id == message_id
        ]

    def _plan(
        self,
        run: Run | runs.Opened,
        run_created: bool,
        task: _NewTask,
        message_id: str,
        new_message: bool,
        history: list[ChatMessage],
    ) -> TurnPlan:
        provider, model = self._providers.resolve(task.model_string)
        return TurnPlan(
            project_id=run.project_id,
            run_id=run.id,
            run_name=run.name,
            run_created=run_created,
            task_id=task.id,
            attempt=task.attempt,
            user_message_id=message_id,
            new_message=new_message,
            provider=provider,
            model=model,
            request=ModelRequest(model, tuple(history), task.settings),
        )


@dataclass(frozen=True)
class _NamedRun:
    """A run as a request names it, before its row is read."""

    project_id: str
    id: str
    user_id: str


@dataclass(frozen=True)
class _NewTask:
    """The task a turn's first transaction created."""

    id: str
    attempt: int
    model_string: str  # as asked (`provider:model` or a bare model)
    settings: dict[str, Any]
