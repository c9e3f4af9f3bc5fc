"""The rules for automation traces: one trace per thread, saved incrementally.

Agents re-send the whole trace so far on every chunk. Each entry is a row keyed by
(project_id, trace_id, idx), and only entries not stored yet are inserted (INSERT … ON
CONFLICT DO NOTHING): re-sending never duplicates and nothing is rewritten as a blob.

Stored entries are immutable, except in the normal agent case: an entry still `running`
may change (status, data, ended_at; started_at if it had none) — its node reports
progress or finishes. Once an entry is anything but `running` it is final; a later
`running` report of the same node is an older snapshot arriving late and is ignored.
Any other difference is a conflict naming the idx.

Writers of one trace take its row lock first, so concurrent saves of overlapping
snapshots are serialised per trace: no deadlock, no lost update, no duplicate.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import Enum
from typing import Any, Final

from sqlalchemy import Select, bindparam, func, or_, select
from sqlalchemy import delete as delete_rows
from sqlalchemy.ext.asyncio import AsyncSession

from chatledger.db.types import utcnow
from chatledger.db.upsert import insert_if_absent, insert_or_nothing
from chatledger.errors import Conflict, NotFound
from chatledger.ids import checked_id
from chatledger.runs import service as runs
from chatledger.runs.models import Run
from chatledger.tenants.caller import Caller
from chatledger.traces.entries import NewEntry as NewEntry  # part of this API
from chatledger.traces.entries import checked_data, checked_entries, checked_name
from chatledger.traces.models import RUNNING, Trace, TraceEntry


@dataclass
class AddedEntries:
    """What one call did, by idx: inserted, updated (a `running` entry moved on), or
    left as stored (sent again unchanged, or a stale `running` report)."""

    created: list[int] = field(default_factory=list)
    updated: list[int] = field(default_factory=list)
    unchanged: list[int] = field(default_factory=list)


@dataclass
class Saved:
    trace: Trace
    created: bool  # this call created the trace
    entries: AddedEntries


class _Keep(Enum):
    KEEP = "keep"


KEEP: Final = _Keep.KEEP  # `update`: leave this field as it is


# -- reading ---------------------------------------------------------------------------


def _visible(stmt: Select[Any], caller: Caller) -> Select[Any]:
    stmt = stmt.where(Trace.project_id == caller.project_id)
    if not caller.sees_all:
        stmt = stmt.where(Trace.user_id == caller.user_id)
    return stmt


async def get(session: AsyncSession, caller: Caller, trace_id: str, *, lock: bool = False) -> Trace:
    """The caller's trace; `lock` takes its row lock (the writers' queue for this trace)."""
    stmt = _visible(select(Trace), caller).where(Trace.id == trace_id)
    if lock:
        stmt = stmt.with_for_update().execution_options(populate_existing=True)
    trace: Trace | None = await session.scalar(stmt)
    if trace is None:
        raise NotFound("trace", trace_id)
    return trace


async def get_by_thread(session: AsyncSession, caller: Caller, thread_id: str) -> Trace:
    stmt = _visible(select(Trace), caller).where(Trace.thread_id == thread_id)
    trace: Trace | None = await session.scalar(stmt)
    if trace is None:
        raise NotFound("trace for thread", thread_id)
    return trace


async def list_traces(
    session: AsyncSession,
    caller: Caller,
    *,
    limit: int = 50,
    before: tuple[datetime, str] | None = None,
    thread_id: str | None = None,
) -> list[Trace]:
    """Newest activity first; `before` is the (updated_at, id) of the last trace seen."""
    stmt = _visible(select(Trace), caller)
    if thread_id is not None:
        stmt = stmt.where(Trace.thread_id == thread_id)
    if before is not None:
        at, trace_id = before
        stmt = stmt.where(
            or_(Trace.updated_at < at, (Trace.updated_at == at) & (Trace.id < trace_id))
        )
    stmt = stmt.order_by(Trace.updated_at.desc(), Trace.id.desc())
    if limit > 0:
        stmt = stmt.limit(limit)
    return list(await session.scalars(stmt))


async def list_entries(session: AsyncSession, trace: Trace) -> list[TraceEntry]:
    stmt = (
        select(TraceEntry)
        .where(TraceEntry.project_id == trace.project_id, TraceEntry.trace_id == trace.id)
        .order_by(TraceEntry.idx)
    )
    return list(await session.scalars(stmt))


async def entry_counts(session: AsyncSession, traces: list[Trace]) -> dict[str, int]:
    """Entries per trace id (counted from the rows, so there is no counter to drift)."""
    if not traces:
        return {}
    params = {"project_id": traces[0].project_id, "trace_ids": [trace.id for trace in traces]}
    counts: dict[str, int] = dict((await session.execute(_ENTRY_COUNTS, params)).all())
    return {trace.id: counts.get(trace.id, 0) for trace in traces}


# Built once (see `_LOCK_THREAD_TRACE` below): every saved trace answers with its count.
_ENTRY_COUNTS = (
    select(TraceEntry.trace_id, func.count())
    .where(
        TraceEntry.project_id == bindparam("project_id"),
        TraceEntry.trace_id.in_(bindparam("trace_ids")),
    )
    .group_by(TraceEntry.trace_id)
)


# -- writing ---------------------------------------------------------------------------


async def store(
    session: AsyncSession,
    caller: Caller,
    thread_id: str,
    entries: list[NewEntry],
    *,
    name: str | None = None,
    trace_id: str | None = None,
) -> Saved:
    """Save a thread's trace: the run and the trace are ensured (one trace per thread,
    the same id every time), then only the entries not stored yet are inserted."""
    thread_id = checked_id(thread_id, "thread_id")
    if trace_id is not None:
        trace_id = checked_id(trace_id, "id")
    checked = checked_entries(entries)  # a bad entry must not leave a run or trace behind
    if name is not None:
        name = checked_name(name)
    run, _ = await runs.ensure(session, caller, thread_id)
    trace, created = await _ensure_trace(session, run, trace_id, name)
    if name is not None and trace.name != name:
        trace.name = name
        trace.updated_at = utcnow()
    return Saved(trace, created, await _add(session, trace, checked))


async def save(
    session: AsyncSession,
    caller: Caller,
    thread_id: str,
    entries: list[NewEntry],
    name: str | None = None,
    trace_id: str | None = None,
) -> tuple[Trace, int]:
    """`store`, answering (trace, number of entries this call inserted)."""
    saved = await store(session, caller, thread_id, entries, name=name, trace_id=trace_id)
    return saved.trace, len(saved.entries.created)


async def add_entries(
    session: AsyncSession, caller: Caller, trace_id: str, entries: list[NewEntry]
) -> AddedEntries:
    """Add entries to an existing trace, by the same rules as `store`."""
    checked = checked_entries(entries)
    trace = await get(session, caller, trace_id, lock=True)
    return await _add(session, trace, checked)


async def update(
    session: AsyncSession,
    caller: Caller,
    trace_id: str,
    *,
    name: str | _Keep | None = KEEP,
    data: dict[str, Any] | _Keep | None = KEEP,
) -> Trace:
    """Rename (None clears the name) and/or replace the trace-level data (None empties it)."""
    if name is not KEEP and name is not None:
        name = checked_name(name)
    if data is not KEEP:
        data = checked_data(data or {}, "data")
    trace = await get(session, caller, trace_id)
    if name is not KEEP:
        trace.name = name
    if data is not KEEP:
        trace.data = data
    trace.updated_at = utcnow()
    await session.flush()
    return trace


async def delete(session: AsyncSession, caller: Caller, trace_id: str) -> None:
    """Delete a trace; its entries go with it (ON DELETE CASCADE). The run stays."""
    trace = await get(session, caller, trace_id)
    await session.execute(
        delete_rows(Trace).where(Trace.project_id == trace.project_id, Trace.id == trace.id)
    )
    session.expunge(trace)


async def _ensure_trace(
    session: AsyncSession, run: Run, trace_id: str | None, name: str | None
) -> tuple[Trace, bool]:
    now = utcnow()
    values: dict[str, Any] = {
        "project_id": run.project_id,
        "id": trace_id or checked_id(None),
        "thread_id": run.id,
        "user_id": run.user_id,
        "name": name,
        "data": {},
        "created_at": now,
        "updated_at": now,
    }
    # Absent on both keys (the id, and one trace per thread): two writers racing on a new
    # thread both land on whichever trace row was inserted first.
    created = await insert_if_absent(session, Trace, values)
    trace: Trace | None = await session.scalar(
        _LOCK_THREAD_TRACE, {"project_id": run.project_id, "thread_id": run.id}
    )
    if trace is None:
        raise Conflict(f"trace id {trace_id!r} is taken by another thread's trace", id=trace_id)
    if trace_id is not None and trace.id != trace_id:
        raise Conflict(
            f"thread {run.id!r} already has trace {trace.id!r}",
            thread_id=run.id,
            trace_id=trace.id,
        )
    return trace, created


async def _add(session: AsyncSession, trace: Trace, entries: dict[int, NewEntry]) -> AddedEntries:
    """Insert what is new, move `running` entries on, refuse rewrites of final ones.
    The caller holds the trace's row lock."""
    added = AddedEntries()
    if not entries:
        return added
    stored = await _stored(session, trace, list(entries))
    _merge_all(trace, stored, entries, added)
    fresh = sorted(set(entries) - set(stored))
    if fresh:
        inserted = await _insert_missing(session, trace, {idx: entries[idx] for idx in fresh})
        added.created = sorted(inserted)
        lost = [idx for idx in fresh if idx not in inserted]
        if lost:  # stored meanwhile by a writer not holding the lock: compare with that
            _merge_all(trace, await _stored(session, trace, lost), entries, added)
    if added.created or added.updated:
        trace.updated_at = utcnow()
    await session.flush()
    return added


async def _stored(session: AsyncSession, trace: Trace, idxs: list[int]) -> dict[int, TraceEntry]:
    found = await session.scalars(
        _STORED_ENTRIES, {"project_id": trace.project_id, "trace_id": trace.id, "idxs": idxs}
    )
    return {entry.idx: entry for entry in found}


async def _insert_missing(
    session: AsyncSession, trace: Trace, entries: dict[int, NewEntry]
) -> set[int]:
    """INSERT … ON CONFLICT DO NOTHING of many rows; the idx of each row inserted."""
    rows = [
        {
            "project_id": trace.project_id,
            "trace_id": trace.id,
            "idx": idx,
            "node": entry.node,
            "status": entry.status,
            "data": entry.data,
            "started_at": entry.started_at,
            "ended_at": entry.ended_at,
        }
        for idx, entry in entries.items()
    ]
    # Many rows at once: SQLAlchemy sends them as one multi-row INSERT … RETURNING (its
    # "insertmanyvalues").
    stmt = insert_or_nothing(session, TraceEntry, returning=("idx",))
    return set(await session.scalars(stmt, rows))


# A thread's statements, built once: built per call, each left its objects in reference
# cycles, which a serving process collects rarely (server/heap.py), and a multi-row
# VALUES of each length was a statement of its own to compile.
_LOCK_THREAD_TRACE = (
    select(Trace)
    .where(Trace.project_id == bindparam("project_id"), Trace.thread_id == bindparam("thread_id"))
    .with_for_update()
    .execution_options(populate_existing=True)
)
_STORED_ENTRIES = (
    select(TraceEntry)
    .where(
        TraceEntry.project_id == bindparam("project_id"),
        TraceEntry.trace_id == bindparam("trace_id"),
        TraceEntry.idx.in_(bindparam("idxs")),
    )
    .execution_options(populate_existing=True)
)


def _merge_all(
    trace: Trace,
    stored: dict[int, TraceEntry],
    entries: dict[int, NewEntry],
    added: AddedEntries,
) -> None:
    conflicting = []
    for idx in sorted(stored):
        outcome = _merge(stored[idx], entries[idx])
        if outcome is None:
            conflicting.append(idx)
        else:
            (added.updated if outcome else added.unchanged).append(idx)
    if conflicting:
        raise Conflict(
            f"trace entry {conflicting[0]} is already stored with other content; stored"
            " entries only change while `running`",
            trace_id=trace.id,
            idx=conflicting[0],
            conflicting=conflicting,
        )


def _merge(stored: TraceEntry, new: NewEntry) -> bool | None:
    """True: updated; False: nothing to do; None: a conflict."""
    if (stored.node, stored.status, stored.data, stored.started_at, stored.ended_at) == (
        new.node,
        new.status,
        new.data,
        new.started_at,
        new.ended_at,
    ):
        return False
    if stored.node != new.node:
        return None
    if stored.status != RUNNING:
        # The same node reported running after it finished: an older snapshot, late.
        return False if new.status == RUNNING else None
    if new.started_at is not None and stored.started_at not in (None, new.started_at):
        return None
    stored.status = new.status
    stored.data = new.data
    stored.ended_at = new.ended_at
    stored.started_at = stored.started_at or new.started_at
    return True
