"""Automation traces, service level: one trace per thread with the same id throughout,
the whole trace re-sent on every chunk stores each entry once, `running` entries move
on while final ones never change, concurrent saves agree, and a trace is its owner's."""

from __future__ import annotations

import asyncio
import math
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select

from chatledger import Conflict, InvalidInput, Ledger, NotFound, PayloadTooLarge
from chatledger.runs import service as runs
from chatledger.tenants import service as tenants
from chatledger.tenants.caller import Caller
from chatledger.traces import service as traces
from chatledger.traces.entries import NewEntry
from chatledger.traces.models import Trace, TraceEntry

T0 = datetime(2025, 5, 1, 12, 0, tzinfo=UTC)


def snapshot(length: int) -> list[NewEntry]:
    """The trace an agent holds after `length` node executions: finished nodes are
    completed with their output, the newest one is still running."""
    entries = [
        NewEntry(
            node=f"node-{i}",
            status="completed",
            data={"output": i},
            started_at=T0 + timedelta(seconds=i),
            ended_at=T0 + timedelta(seconds=i, milliseconds=500),
        )
        for i in range(length)
    ]
    if entries:
        last = entries[-1]
        last.status, last.data, last.ended_at = "running", {}, None
    return entries


async def save(
    ledger: Ledger,
    thread_id: str,
    entries: list[NewEntry],
    *,
    caller: Caller | None = None,
    **options: str,
) -> traces.Saved:
    async with ledger.database.transaction() as session:
        return await traces.store(session, caller or ledger.caller, thread_id, entries, **options)


async def stored_entries(ledger: Ledger, trace_id: str) -> list[TraceEntry]:
    async with ledger.database.reading() as session:
        stmt = select(TraceEntry).where(TraceEntry.trace_id == trace_id).order_by(TraceEntry.idx)
        return list(await session.scalars(stmt))


async def trace_count(ledger: Ledger) -> int:
    async with ledger.database.reading() as session:
        return await session.scalar(select(func.count()).select_from(Trace)) or 0


async def other_user(ledger: Ledger, user_id: str = "bob") -> Caller:
    async with ledger.database.transaction() as session:
        await tenants.ensure_user(session, user_id)
    return Caller(ledger.caller.project_id, user_id)


# -- saving incrementally --------------------------------------------------------------


async def test_resending_the_growing_trace_stores_each_entry_once(ledger: Ledger) -> None:
    first = await save(ledger, "thread-1", snapshot(2), name="research agent")
    second = await save(ledger, "thread-1", snapshot(4))
    third = await save(ledger, "thread-1", snapshot(6))

    assert first.created and not second.created and not third.created
    assert first.trace.id == second.trace.id == third.trace.id
    assert first.entries.created == [0, 1]
    # Each time: node k-1 finished (was running), two new ones arrived.
    assert (second.entries.created, second.entries.updated) == ([2, 3], [1])
    assert (third.entries.created, third.entries.updated) == ([4, 5], [3])
    assert third.entries.unchanged == [0, 1, 2]
    stored = await stored_entries(ledger, first.trace.id)
    assert [(e.idx, e.node, e.status) for e in stored] == [
        *((i, f"node-{i}", "completed") for i in range(5)),
        (5, "node-5", "running"),
    ]
    assert stored[2].data == {"output": 2}
    assert stored[2].ended_at == T0 + timedelta(seconds=2, milliseconds=500)
    assert await trace_count(ledger) == 1
    async with ledger.database.reading() as session:
        run = await runs.get(session, ledger.caller, "thread-1")  # the thread's run, ensured
        trace = await traces.get_by_thread(session, ledger.caller, "thread-1")
        assert trace.name == "research agent"
        assert await traces.entry_counts(session, [trace]) == {trace.id: 6}
    assert run.user_id == trace.user_id == ledger.caller.user_id


async def test_sending_the_same_trace_again_changes_nothing(ledger: Ledger) -> None:
    first = await save(ledger, "t", snapshot(3))
    again = await save(ledger, "t", snapshot(3))

    assert (again.entries.created, again.entries.updated) == ([], [])
    assert again.entries.unchanged == [0, 1, 2]
    assert again.trace.updated_at == first.trace.updated_at


async def test_save_answers_the_trace_and_the_count_inserted(ledger: Ledger) -> None:
    async with ledger.database.transaction() as session:
        trace, inserted = await traces.save(session, ledger.caller, "t", snapshot(3))
        again, inserted_again = await traces.save(session, ledger.caller, "t", snapshot(5))

    assert (inserted, inserted_again) == (3, 2)
    assert again.id == trace.id


async def test_entries_keep_the_idx_they_were_given(ledger: Ledger) -> None:
    entries = [NewEntry("b", "completed", idx=7), NewEntry("a", "completed", idx=3)]
    saved = await save(ledger, "t", entries)

    assert saved.entries.created == [3, 7]
    assert [(e.idx, e.node) for e in await stored_entries(ledger, saved.trace.id)] == [
        (3, "a"),
        (7, "b"),
    ]


async def test_add_entries_to_an_existing_trace(ledger: Ledger) -> None:
    saved = await save(ledger, "t", snapshot(1))
    more = [NewEntry("late", "completed", idx=1), NewEntry("later", "failed", idx=2)]
    async with ledger.database.transaction() as session:
        added = await traces.add_entries(session, ledger.caller, saved.trace.id, more)

    assert added.created == [1, 2]
    assert [e.status for e in await stored_entries(ledger, saved.trace.id)] == [
        "running",
        "completed",
        "failed",
    ]
    with pytest.raises(NotFound):
        async with ledger.database.transaction() as session:
            await traces.add_entries(session, ledger.caller, "no-such-trace", more)


async def test_a_trace_id_may_be_chosen_once_per_thread(ledger: Ledger) -> None:
    saved = await save(ledger, "t1", snapshot(1), trace_id="trace-a")
    assert saved.trace.id == "trace-a"
    assert (await save(ledger, "t1", snapshot(2), trace_id="trace-a")).trace.id == "trace-a"

    with pytest.raises(Conflict) as other_id:
        await save(ledger, "t1", snapshot(2), trace_id="trace-b")
    assert other_id.value.details == {"thread_id": "t1", "trace_id": "trace-a"}
    with pytest.raises(Conflict):
        await save(ledger, "t2", snapshot(1), trace_id="trace-a")
    assert await trace_count(ledger) == 1


# -- running entries move on, final ones never change ----------------------------------


async def test_a_running_entry_completes(ledger: Ledger) -> None:
    started = T0
    running = NewEntry("search", "running", {"query": "x"}, started_at=started)
    first = await save(ledger, "t", [running])
    done = NewEntry(
        "search", "completed", {"hits": 3}, started_at=started, ended_at=started + timedelta(1)
    )

    completed = await save(ledger, "t", [done])
    late = await save(ledger, "t", [running])  # an older snapshot arriving after

    assert completed.entries.updated == [0]
    assert late.entries.unchanged == [0]
    [entry] = await stored_entries(ledger, first.trace.id)
    assert (entry.status, entry.data, entry.started_at) == ("completed", {"hits": 3}, started)
    assert entry.ended_at == started + timedelta(1)
    assert completed.trace.updated_at >= first.trace.updated_at


async def test_a_running_entry_may_report_progress(ledger: Ledger) -> None:
    await save(ledger, "t", [NewEntry("llm", "running", {"tokens": 10})])
    progress = await save(ledger, "t", [NewEntry("llm", "running", {"tokens": 20})])

    assert progress.entries.updated == [0]
    [entry] = await stored_entries(ledger, progress.trace.id)
    assert entry.data == {"tokens": 20}


@pytest.mark.parametrize(
    "rewrite",
    [
        NewEntry("planner", "completed", {"plan": "other"}),  # other data
        NewEntry("planner", "failed", {"plan": "a"}),  # other final status
        NewEntry("critic", "completed", {"plan": "a"}),  # other node
        NewEntry("critic", "running"),  # other node, even running
    ],
)
async def test_a_final_entry_never_changes(ledger: Ledger, rewrite: NewEntry) -> None:
    saved = await save(ledger, "t", [NewEntry("planner", "completed", {"plan": "a"})])

    with pytest.raises(Conflict) as caught:
        # The new entry in the same call is not stored either: one transaction.
        await save(ledger, "t", [rewrite, NewEntry("next", "completed")])

    assert caught.value.details == {"trace_id": saved.trace.id, "idx": 0, "conflicting": [0]}
    [entry] = await stored_entries(ledger, saved.trace.id)
    assert (entry.node, entry.status, entry.data) == ("planner", "completed", {"plan": "a"})


async def test_a_running_entry_keeps_its_node_and_start(ledger: Ledger) -> None:
    await save(ledger, "t", [NewEntry("llm", "running", started_at=T0)])

    with pytest.raises(Conflict):
        await save(ledger, "t", [NewEntry("tool", "completed", started_at=T0)])
    with pytest.raises(Conflict):
        await save(ledger, "t", [NewEntry("llm", "completed", started_at=T0 + timedelta(1))])


# -- concurrency -----------------------------------------------------------------------


@pytest.mark.parametrize("run_exists", [False, True])
async def test_concurrent_saves_of_one_thread_agree(ledger: Ledger, run_exists: bool) -> None:
    """Snapshots of one growing trace arrive at once and in any order, for a thread with
    no trace yet: one run, one trace, each entry once, every finished node completed."""
    lengths = [3, 8, 1, 6, 8, 2, 7, 5, 4, 8]
    if run_exists:  # then nothing orders the writers before they race on the trace row
        async with ledger.database.transaction() as session:
            await runs.ensure(session, ledger.caller, "busy")

    results = await asyncio.gather(*(save(ledger, "busy", snapshot(n)) for n in lengths))

    assert len({saved.trace.id for saved in results}) == 1
    assert sum(saved.created for saved in results) == 1
    assert sum(len(saved.entries.created) for saved in results) == 8
    stored = await stored_entries(ledger, results[0].trace.id)
    assert [e.idx for e in stored] == list(range(8))
    assert [e.status for e in stored] == ["completed"] * 7 + ["running"]
    assert all(e.data == {"output": e.idx} for e in stored[:7])
    assert await trace_count(ledger) == 1


# -- reading, changing, deleting -------------------------------------------------------


async def test_update_renames_and_replaces_data(ledger: Ledger) -> None:
    saved = await save(ledger, "t", snapshot(1), name="first")
    async with ledger.database.transaction() as session:
        renamed = await traces.update(session, ledger.caller, saved.trace.id, name="  second ")
        assert (renamed.name, renamed.data) == ("second", {})
        changed = await traces.update(session, ledger.caller, saved.trace.id, data={"k": [1]})
        assert (changed.name, changed.data) == ("second", {"k": [1]})
        cleared = await traces.update(session, ledger.caller, saved.trace.id, name=None, data=None)
        assert (cleared.name, cleared.data) == (None, {})
        with pytest.raises(InvalidInput) as blank:
            await traces.update(session, ledger.caller, saved.trace.id, name="  ")
        assert blank.value.field == "name"


async def test_delete_takes_the_entries_and_leaves_the_run(ledger: Ledger) -> None:
    saved = await save(ledger, "t", snapshot(3))
    async with ledger.database.transaction() as session:
        await traces.delete(session, ledger.caller, saved.trace.id)

    assert await stored_entries(ledger, saved.trace.id) == []
    async with ledger.database.reading() as session:
        with pytest.raises(NotFound):
            await traces.get(session, ledger.caller, saved.trace.id)
        await runs.get(session, ledger.caller, "t")
    again = await save(ledger, "t", snapshot(1))  # the thread may get a new trace
    assert again.created and again.trace.id != saved.trace.id


async def test_deleting_the_run_deletes_its_trace(ledger: Ledger) -> None:
    saved = await save(ledger, "t", snapshot(3))
    async with ledger.database.transaction() as session:
        await runs.delete_run(session, ledger.caller, "t")

    assert await trace_count(ledger) == 0
    assert await stored_entries(ledger, saved.trace.id) == []


async def test_list_is_newest_activity_first(ledger: Ledger) -> None:
    for thread in ("a", "b", "c"):
        await save(ledger, thread, snapshot(1))
    await save(ledger, "a", snapshot(2))  # new activity moves "a" to the front

    async with ledger.database.reading() as session:
        found = await traces.list_traces(session, ledger.caller)
        only_b = await traces.list_traces(session, ledger.caller, thread_id="b")
        counts = await traces.entry_counts(session, found)

    assert [t.thread_id for t in found] == ["a", "c", "b"]
    assert [t.thread_id for t in only_b] == ["b"]
    assert [counts[t.id] for t in found] == [2, 1, 1]


async def test_a_trace_is_its_owners(ledger: Ledger) -> None:
    saved = await save(ledger, "alices-thread", snapshot(2))
    bob = await other_user(ledger)

    async with ledger.database.transaction() as session:
        with pytest.raises(NotFound):
            await traces.get(session, bob, saved.trace.id)
        with pytest.raises(NotFound):
            await traces.get_by_thread(session, bob, "alices-thread")
        with pytest.raises(NotFound):
            await traces.update(session, bob, saved.trace.id, name="mine")
        with pytest.raises(NotFound):
            await traces.delete(session, bob, saved.trace.id)
        with pytest.raises(NotFound):
            await traces.add_entries(session, bob, saved.trace.id, snapshot(3))
        assert await traces.list_traces(session, bob) == []
    with pytest.raises(NotFound):
        await save(ledger, "alices-thread", snapshot(3), caller=bob)
    admin = Caller(ledger.caller.project_id, "bob", sees_all=True)
    async with ledger.database.reading() as session:
        assert (await traces.get(session, admin, saved.trace.id)).user_id == "local"
    assert len(await stored_entries(ledger, saved.trace.id)) == 2


# -- input -----------------------------------------------------------------------------


async def test_more_than_a_thousand_entries_is_too_large(ledger: Ledger) -> None:
    with pytest.raises(PayloadTooLarge):
        await save(ledger, "t", [NewEntry("n", "completed") for _ in range(1001)])
    saved = await save(ledger, "t", [NewEntry("n", "completed") for _ in range(1000)])
    assert len(saved.entries.created) == 1000


@pytest.mark.parametrize(
    ("entries", "field"),
    [
        ([NewEntry("a", "completed"), NewEntry("b", "completed", idx=0)], "entries.1.idx"),
        ([NewEntry("a", "completed", idx=-1)], "entries.0.idx"),
        ([NewEntry("a", "completed", idx=2**31)], "entries.0.idx"),
        ([NewEntry(" ", "completed")], "entries.0.node"),
        ([NewEntry("a" * 201, "completed")], "entries.0.node"),
        ([NewEntry("a\x00", "completed")], "entries.0.node"),
        ([NewEntry("a", "")], "entries.0.status"),
        ([NewEntry("a", "completed", {"x": math.nan})], "entries.0.data"),
        ([NewEntry("a", "completed", {"x": [{"y": math.inf}]})], "entries.0.data"),
        ([NewEntry("a", "completed", {"x": "nul\x00"})], "entries.0.data"),
        ([NewEntry("a", "completed", {"nul\x00": 1})], "entries.0.data"),
        (
            [NewEntry("a", "completed", started_at=datetime.now(UTC) + timedelta(hours=1))],
            "entries.0.started_at",
        ),
        ([NewEntry("a", "completed", ended_at=datetime(2025, 1, 1))], "entries.0.ended_at"),
        (
            [NewEntry("a", "completed", started_at=T0, ended_at=T0 - timedelta(1))],
            "entries.0.ended_at",
        ),
    ],
)
async def test_bad_entries_are_refused_before_anything_is_written(
    ledger: Ledger, entries: list[NewEntry], field: str
) -> None:
    with pytest.raises(InvalidInput) as caught:
        await save(ledger, "t", entries)

    assert caught.value.field == field
    assert await trace_count(ledger) == 0
    async with ledger.database.reading() as session:
        with pytest.raises(NotFound):
            await runs.get(session, ledger.caller, "t")


async def test_bad_ids_name_their_field(ledger: Ledger) -> None:
    with pytest.raises(InvalidInput) as thread:
        await save(ledger, "not an id", snapshot(1))
    with pytest.raises(InvalidInput) as trace:
        await save(ledger, "t", snapshot(1), trace_id="not/an/id")

    assert (thread.value.field, trace.value.field) == ("thread_id", "id")
