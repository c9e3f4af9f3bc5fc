"""HTTP routes for runs and their messages: thin, the rules are in the services."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response

from chatledger.messages import service as messages
from chatledger.messages.schemas import MessageCreate, MessageRead
from chatledger.runs import service as runs
from chatledger.runs.schemas import RunCreate, RunDetail, RunRead, RunUpdate
from chatledger.server.deps import CallerDep, DatabaseDep, WriterDep, acting_for
from chatledger.server.pagination import MAX_LIMIT, Page, decode_time_cursor, encode_cursor

router = APIRouter(prefix="/v1/runs", tags=["runs"])

Limit = Annotated[int, Query(ge=1, le=MAX_LIMIT)]


async def _ensure(
    db: DatabaseDep, caller: WriterDep, run_id: str | None, body: RunCreate, response: Response
) -> RunRead:
    actor = acting_for(caller, body.user_id)
    async with db.transaction() as session:
        run, created = await runs.ensure(
            session,
            actor,
            run_id or body.id,
            name=body.name,
            settings=body.settings,
            metadata=body.metadata,
            created_at=body.created_at,
        )
        read = RunRead.model_validate(run)
    response.status_code = 201 if created else 200
    return read


@router.post("", status_code=201, response_model=RunRead, responses={200: {"model": RunRead}})
async def create_run(
    body: RunCreate, db: DatabaseDep, caller: WriterDep, response: Response
) -> RunRead:
    """Create a run; the same id again returns it (200), so clients may retry."""
    return await _ensure(db, caller, None, body, response)


@router.put("/{run_id}", response_model=RunRead, responses={201: {"model": RunRead}})
async def put_run(
    run_id: str, body: RunCreate, db: DatabaseDep, caller: WriterDep, response: Response
) -> RunRead:
    """Create the run if absent (201), else return it (200); renames when a name is given."""
    read = await _ensure(db, caller, run_id, body, response)
    if body.name is not None and response.status_code == 200 and read.name != body.name:
        async with db.transaction() as session:
            read = RunRead.model_validate(await runs.rename(session, caller, run_id, body.name))
    return read


@router.get("", response_model=Page[RunRead])
async def list_runs(
    db: DatabaseDep,
    caller: CallerDep,
    limit: Limit = 50,
    cursor: str | None = None,
    q: Annotated[str | None, Query(max_length=200)] = None,
) -> Page[RunRead]:
    """Runs, newest activity first; pass `next_cursor` back as `cursor` for the next page."""
    before = decode_time_cursor(cursor)
    async with db.reading() as session:
        found = await runs.list_runs(session, caller, limit=limit + 1, before=before, query=q)
        items = [RunRead.model_validate(run) for run in found[:limit]]
    next_cursor = None
    if len(found) > limit:
        last = found[limit - 1]
        next_cursor = encode_cursor(last.updated_at.isoformat(), last.id)
    return Page(items=items, next_cursor=next_cursor)


@router.get("/{run_id}", response_model=RunDetail)
async def get_run(run_id: str, db: DatabaseDep, caller: CallerDep) -> RunDetail:
    """A run with its aggregates and its messages in order."""
    async with db.reading() as session:
        run = await runs.get(session, caller, run_id)
        detail = RunDetail.model_validate(run)
        detail.messages = [
            MessageRead.model_validate(m)
            for m in await messages.list_messages(session, caller, run_id)
        ]
    return detail


@router.patch("/{run_id}", response_model=RunRead)
async def rename_run(run_id: str, body: RunUpdate, db: DatabaseDep, caller: WriterDep) -> RunRead:
    async with db.transaction() as session:
        return RunRead.model_validate(await runs.rename(session, caller, run_id, body.name))


@router.delete("/{run_id}", status_code=204)
async def delete_run(run_id: str, db: DatabaseDep, caller: WriterDep) -> Response:
    """Delete a run with its messages and tasks (and their usage)."""
    async with db.transaction() as session:
        await runs.delete_run(session, caller, run_id)
    return Response(status_code=204)


@router.post(
    "/{run_id}/messages",
    status_code=201,
    response_model=MessageRead,
    responses={200: {"model": MessageRead}},
)
async def append_message(
    run_id: str, body: MessageCreate, db: DatabaseDep, caller: WriterDep, response: Response
) -> MessageRead:
    """Append a message; the same id and content again returns it (200), never a copy."""
    new = messages.NewMessage(**body.model_dump())
    async with db.transaction() as session:
        message, created = await messages.append(session, caller, run_id, new)
        read = MessageRead.model_validate(message)
    response.status_code = 201 if created else 200
    return read


@router.get("/{run_id}/messages", response_model=list[MessageRead])
async def list_messages(run_id: str, db: DatabaseDep, caller: CallerDep) -> list[MessageRead]:
    async with db.reading() as session:
        return [
            MessageRead.model_validate(m)
            for m in await messages.list_messages(session, caller, run_id)
        ]
