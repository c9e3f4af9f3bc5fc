"""HTTP routes for tasks: create (run ensured), read, progress, and the one terminal
transition (complete, fail, cancel). Thin: the exactly-once rule is `tasks.finish`."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, Path, Response

from chatledger.ids import ID_PATTERN
from chatledger.server.deps import CallerDep, DatabaseDep, WriterDep, acting_for
from chatledger.tasks import service as tasks
from chatledger.tasks.schemas import (
    TaskCancel,
    TaskComplete,
    TaskCreate,
    TaskFail,
    TaskProgress,
    TaskRead,
    cost_nano,
    provider_and_model,
    tokens,
)
from chatledger.tenants.caller import Caller

router = APIRouter(tags=["tasks"])

TaskId = Annotated[str, Path(pattern=ID_PATTERN)]
RunId = Annotated[str, Path(pattern=ID_PATTERN)]


@router.post(
    "/v1/tasks", status_code=201, response_model=TaskRead, responses={200: {"model": TaskRead}}
)
async def create_task(
    body: TaskCreate, db: DatabaseDep, caller: WriterDep, response: Response
) -> TaskRead:
    """Create a task before calling the model; its run is created if absent. The same id
    for the same run again returns the task (200); for another run it is a conflict."""
    provider, model = provider_and_model(body.model, body.provider)
    new = tasks.NewTask(
        id=body.id,
        run_id=body.run_id,
        model=model,
        provider=provider,
        user_message_id=body.user_message_id,
        service=body.service,
        task_name=body.task_name,
        request=body.request,
    )
    async with db.transaction() as session:
        task, created = await tasks.create(session, acting_for(caller, body.user_id), new)
        read = TaskRead.model_validate(task)
    response.status_code = 201 if created else 200
    return read


@router.get("/v1/tasks/{task_id}", response_model=TaskRead)
async def get_task(task_id: TaskId, db: DatabaseDep, caller: CallerDep) -> TaskRead:
    async with db.reading() as session:
        return TaskRead.model_validate(await tasks.get(session, caller, task_id))


@router.get("/v1/runs/{run_id}/tasks", response_model=list[TaskRead])
async def list_run_tasks(run_id: RunId, db: DatabaseDep, caller: CallerDep) -> list[TaskRead]:
    """A run's tasks in the order they were created (attempts included)."""
    async with db.reading() as session:
        found = await tasks.list_for_run(session, caller, run_id)
        return [TaskRead.model_validate(task) for task in found]


@router.patch("/v1/tasks/{task_id}", response_model=TaskRead)
async def progress_task(
    task_id: TaskId,
    db: DatabaseDep,
    caller: WriterDep,
    body: Annotated[TaskProgress | None, Body()] = None,
) -> TaskRead:
    """Streaming progress: status `streaming`, the text so far (if sent), a heartbeat.
    A task that has ended answers 409."""
    text = body.response_text if body else None
    async with db.transaction() as session:
        return TaskRead.model_validate(await tasks.progress(session, caller, task_id, text))


async def _finish(
    db: DatabaseDep, caller: Caller, task_id: str, outcome: tasks.Outcome
) -> TaskRead:
    async with db.transaction() as session:
        task, _ = await tasks.finish(session, caller, task_id, outcome)
        return TaskRead.model_validate(task)


@router.post("/v1/tasks/{task_id}/complete", response_model=TaskRead)
async def complete_task(
    task_id: TaskId, body: TaskComplete, db: DatabaseDep, caller: WriterDep
) -> TaskRead:
    """End the task `completed` with its text, usage, cost and timings, counted into its
    run and daily usage exactly once. Sending the same completion again answers the same
    task (200); a different ending of an ended task is a conflict (409). Without
    `cost_usd` the cost is priced from the usage (null when the model has no price)."""
    outcome = tasks.Outcome(
        status="completed",
        response_text=body.response_text,
        usage=body.usage.tokens(),
        cost_nano=cost_nano(body.cost_usd),
        ttft_ms=body.ttft_ms,
        total_ms=body.total_ms,
        completed_at=body.completed_at,
    )
    return await _finish(db, caller, task_id, outcome)


@router.post("/v1/tasks/{task_id}/fail", response_model=TaskRead)
async def fail_task(
    task_id: TaskId, body: TaskFail, db: DatabaseDep, caller: WriterDep
) -> TaskRead:
    """End the task `failed`; usage already spent (if sent) is still counted, once."""
    outcome = tasks.Outcome(
        status="failed",
        response_text=body.response_text,
        usage=tokens(body.usage),
        error=body.error.model_dump(exclude_none=True),
        cost_nano=cost_nano(body.cost_usd),
        ttft_ms=body.ttft_ms,
        total_ms=body.total_ms,
        completed_at=body.completed_at,
    )
    return await _finish(db, caller, task_id, outcome)


@router.post("/v1/tasks/{task_id}/cancel", response_model=TaskRead)
async def cancel_task(
    task_id: TaskId,
    db: DatabaseDep,
    caller: WriterDep,
    body: Annotated[TaskCancel | None, Body()] = None,
) -> TaskRead:
    """End the task `cancelled` (a live chat reply stops streaming); usage is counted once."""
    body = body or TaskCancel()
    outcome = tasks.Outcome(
        status="cancelled",
        response_text=body.response_text,
        usage=tokens(body.usage),
        error={"kind": "cancelled", "message": body.reason or "cancelled by the client"},
        cost_nano=cost_nano(body.cost_usd),
        ttft_ms=body.ttft_ms,
        total_ms=body.total_ms,
        completed_at=body.completed_at,
    )
    return await _finish(db, caller, task_id, outcome)
