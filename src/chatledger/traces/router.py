"""HTTP routes for automation traces: thin, the rules are in the service."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Response
from sqlalchemy.ext.asyncio import AsyncSession

from chatledger.ids import ID_PATTERN
from chatledger.server.deps import CallerDep, DatabaseDep, WriterDep, acting_for
from chatledger.server.pagination import MAX_LIMIT, Page, decode_time_cursor, encode_cursor
from chatledger.tenants.caller import Caller
from chatledger.traces import service as traces
from chatledger.traces.models import Trace
from chatledger.traces.schemas import (
    TraceCreate,
    TraceDetail,
    TraceEntryRead,
    TraceRead,
    TraceSaved,
    TraceUpdate,
    TraceUpsert,
)

router = APIRouter(prefix="/v1/automation/traces", tags=["traces"])

Limit = Annotated[int, Query(ge=1, le=MAX_LIMIT)]
TraceId = Annotated[str, Path(pattern=ID_PATTERN)]
ThreadId = Annotated[str, Path(pattern=ID_PATTERN)]


async def _read(session: AsyncSession, trace: Trace) -> TraceRead:
    read = TraceRead.model_validate(trace)
    read.entry_count = (await traces.entry_counts(session, [trace]))[trace.id]
    return read


async def _detail(session: AsyncSession, trace: Trace) -> TraceDetail:
    entries = await traces.list_entries(session, trace)
    return TraceDetail(
        **TraceRead.model_validate(trace).model_dump(exclude={"entry_count"}),
        entry_count=len(entries),
        entries=[TraceEntryRead.model_validate(entry) for entry in entries],
    )


async def _save(
    db: DatabaseDep, caller: Caller, thread_id: str, body: TraceUpsert, response: Response
) -> TraceSaved:
    actor = acting_for(caller, body.user_id)
    entries = [entry.to_new() for entry in body.entries]
    async with db.transaction() as session:
        saved = await traces.store(
            session, actor, thread_id, entries, name=body.name, trace_id=body.id
        )
        read = await _read(session, saved.trace)
    response.status_code = 201 if saved.created else 200
    return TraceSaved(
        **read.model_dump(),
        created=len(saved.entries.created),
        updated=len(saved.entries.updated),
    )


@router.post("", status_code=201, response_model=TraceSaved, responses={200: {}})
async def create_trace(
    body: TraceCreate, db: DatabaseDep, caller: WriterDep, response: Response
) -> TraceSaved:
    """Save a thread's trace (its run ensured): 201 when the trace is new, 200 when the
    thread already had one — then only entries not stored yet are added."""
    return await _save(db, caller, body.thread_id, body, response)


@router.get("", response_model=Page[TraceRead])
async def list_traces(
    db: DatabaseDep,
    caller: CallerDep,
    limit: Limit = 50,
    cursor: str | None = None,
    thread_id: Annotated[str | None, Query(pattern=ID_PATTERN)] = None,
) -> Page[TraceRead]:
    """Traces, newest activity first; pass `next_cursor` back as `cursor`."""
    before = decode_time_cursor(cursor)
    async with db.reading() as session:
        found = await traces.list_traces(
            session, caller, limit=limit + 1, before=before, thread_id=thread_id
        )
        page = found[:limit]
        counts = await traces.entry_counts(session, page)
    items = [
        TraceRead.model_validate(t).model_copy(update={"entry_count": counts[t.id]}) for t in page
    ]
    next_cursor = None
    if len(found) > limit:
        last = found[limit - 1]
        next_cursor = encode_cursor(last.updated_at.isoformat(), last.id)
    return Page(items=items, next_cursor=next_cursor)


@router.get("/thread/{thread_id}", response_model=TraceDetail)
async def get_thread_trace(thread_id: ThreadId, db: DatabaseDep, caller: CallerDep) -> TraceDetail:
    """The thread's trace with its entries in idx order."""
    async with db.reading() as session:
        return await _detail(session, await traces.get_by_thread(session, caller, thread_id))


@router.put(
    "/thread/{thread_id}", response_model=TraceSaved, responses={201: {"model": TraceSaved}}
)
async def put_thread_trace(
    thread_id: ThreadId, body: TraceUpsert, db: DatabaseDep, caller: WriterDep, response: Response
) -> TraceSaved:
    """Upsert by thread: send the whole trace so far every time; the trace id stays the
    same, only entries not stored yet are inserted (`created` counts them)."""
    return await _save(db, caller, thread_id, body, response)


@router.get("/{trace_id}", response_model=TraceDetail)
async def get_trace(trace_id: TraceId, db: DatabaseDep, caller: CallerDep) -> TraceDetail:
    """A trace with its entries in idx order."""
    async with db.reading() as session:
        return await _detail(session, await traces.get(session, caller, trace_id))


@router.patch("/{trace_id}", response_model=TraceRead)
async def update_trace(
    trace_id: TraceId, body: TraceUpdate, db: DatabaseDep, caller: WriterDep
) -> TraceRead:
    """Rename and/or replace the trace-level data; the entries are not changed here."""
    changes = {name: getattr(body, name) for name in body.model_fields_set}
    async with db.transaction() as session:
        trace = await traces.update(session, caller, trace_id, **changes)
        return await _read(session, trace)


@router.delete("/{trace_id}", status_code=204)
async def delete_trace(trace_id: TraceId, db: DatabaseDep, caller: WriterDep) -> Response:
    """Delete a trace and its entries; the thread's run stays."""
    async with db.transaction() as session:
        await traces.delete(session, caller, trace_id)
    return Response(status_code=204)
