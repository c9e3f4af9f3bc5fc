"""Row locks on runs (PostgreSQL; SQLite's one write lock is the database's): a writer
that locks a run to move its counts takes the lock that the change needs, FOR NO KEY
UPDATE, never FOR UPDATE, which also waits for every transaction that merely stored a
row naming the run (a foreign key's check holds FOR KEY SHARE on it until commit).

With FOR UPDATE, a batch that had written a run, then locked it again for a group of
interactions, waited for a single interaction that had inserted its task into the run,
which waited to count its message into the run the batch held: a deadlock, answered
503 to one of them (seen in tests/proof/test_concurrency.py).

A batch writes many runs, one item after another, and holds each to its end: it writes
its usage after all of them (usage/tally.py), so that a write holding a run never waits
for a usage row the batch holds; and a batch that takes runs in another order than
another writer, which PostgreSQL rolls back to break the deadlock, is run again."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from datetime import date

import pytest
from sqlalchemy.ext.asyncio import AsyncSession

from chatledger import Ledger
from chatledger.batch import service as batch
from chatledger.batch.body import Upload
from chatledger.interactions import bulk, bulk_runs
from chatledger.interactions import service as interactions
from chatledger.messages import service as messages
from chatledger.prompts import chat as prompt_chat
from chatledger.prompts import service as prompts
from chatledger.prompts.schemas import PromptCreate
from chatledger.runs import service as runs
from chatledger.tasks import service as tasks
from chatledger.tokens import TokenUsage
from chatledger.usage import service as usage
from chatledger.verify import find_drift

pytestmark = pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)

# Far above a lock that is granted at once, far below a test's patience.
GRANTED_WITHIN_S = 5.0


def interaction(n: int) -> interactions.NewInteraction:
    return interactions.NewInteraction(
        prompt=f"Question {n}?",
        response=f"Answer {n}.",
        model="openai/gpt-4o",
        usage=TokenUsage(input_tokens=10, output_tokens=n),
        id=f"i{n}",
        cost_nano=1_000,
    )


async def referenced_meanwhile(
    ledger: Ledger, locker: Callable[[AsyncSession], Awaitable[None]]
) -> int:
    """Run `locker` in a transaction while another has stored a task in run "shared"
    (holding FOR KEY SHARE on it), then that other counts a message into the run, as
    `interactions.record` does next. `locker` must not wait for the other, which waits
    for it; both commit. The run's message count afterwards."""
    caller = ledger.caller
    async with contextlib.AsyncExitStack() as single:
        referencing = await single.enter_async_context(ledger.database.transaction())
        new_task = tasks.NewTask(run_id="shared", model="gpt-4o", provider="openai", id="t")
        await tasks.create(referencing, caller, new_task)

        async with ledger.database.transaction() as locking:
            await asyncio.wait_for(locker(locking), GRANTED_WITHIN_S)
            # The single's next write waits for this transaction's lock; commit releases it.
            waiting = asyncio.ensure_future(
                messages.append(
                    referencing, caller, "shared", messages.NewMessage(role="user", content="Hi")
                )
            )
            await asyncio.sleep(0.2)
            assert not waiting.done(), "the run's lock let another writer in"
        await asyncio.wait_for(waiting, GRANTED_WITHIN_S)
    async with ledger.database.reading() as session:
        return (await runs.get(session, caller, "shared")).message_count


async def test_a_batch_locking_a_run_it_wrote_waits_for_no_reference_to_it(
    ledger: Ledger,
) -> None:
    """A batch records one item on its own (the run's counts updated), then stores a
    group of fresh interactions into the same run (the run locked again)."""
    async with ledger.database.transaction() as session:
        await runs.ensure(session, ledger.caller, "shared")

    async def batch(session: AsyncSession) -> None:
        await interactions.record(session, ledger.caller, "shared", interaction(1))
        pending = bulk.prepare(ledger.caller, "shared", interaction(2))
        await bulk.store(session, [pending])

    assert await referenced_meanwhile(ledger, batch) == 5


async def test_locking_the_runs_of_a_group_waits_for_no_reference_to_them(
    ledger: Ledger,
) -> None:
    async with ledger.database.transaction() as session:
        await runs.ensure(session, ledger.caller, "shared")

    async def lock(session: AsyncSession) -> None:
        locked = await bulk_runs.locked(session, ledger.caller.project_id, ["shared"])
        assert list(locked) == ["shared"]

    assert await referenced_meanwhile(ledger, lock) == 1


async def test_a_prompts_first_turn_locking_its_run_waits_for_no_reference_to_it(
    ledger: Ledger,
) -> None:
    async with ledger.database.transaction() as session:
        greeting = {"name": "greet", "messages": [{"role": "system", "content": "Be brief."}]}
        await prompts.create(session, ledger.caller, PromptCreate.model_validate(greeting))
        await runs.ensure(session, ledger.caller, "shared")

    async def first_turn(session: AsyncSession) -> None:
        rendered = await prompt_chat.for_chat(
            session, ledger.caller, prompts.PromptRef(name="greet"), {}, "shared"
        )
        assert rendered is not None
        shared = await runs.get(session, ledger.caller, "shared")
        assert await prompt_chat.start_run(session, ledger.caller, shared, rendered)

    # The prompt's message, then the other transaction's.
    assert await referenced_meanwhile(ledger, first_turn) == 2


def synced(n: int, run_id: str) -> dict[str, object]:
    """An interaction item of a batch, ended today (its usage row the live writes')."""
    return {
        "kind": "interaction",
        "id": f"sync{n}",
        "run_id": run_id,
        "prompt": f"Offline {n}?",
        "response": "Yes.",
        "model": "openai/gpt-4o",
        "usage": {"input_tokens": 10, "output_tokens": n},
        "cost_usd": "0.001",
    }


def upload(*items: dict[str, object]) -> Upload:
    return Upload(raw=list(items), valid=None, check_each=True)


async def stored_batch(ledger: Ledger, items: Upload) -> list[str]:
    """The batch stored as the route stores it (checked, built, then its transaction);
    each item's verdict."""
    checked = batch.check(ledger.caller, items)
    built = await batch.build(ledger.database, ledger.caller, checked)
    results = await batch.store_in_transaction(ledger.database, ledger.caller, checked, built)
    return [result.status for result in results]


async def requests_counted(ledger: Ledger) -> int:
    async with ledger.database.reading() as session:
        assert await find_drift(session) == []
        rows = await usage.daily(session, ledger.caller, date.min, date.max)
    return sum(row["requests"] for row in rows)


async def test_a_batch_holds_no_usage_row_while_it_waits_for_a_run(ledger: Ledger) -> None:
    """A batch has stored an interaction into run A and waits for run C; an interaction
    posted alone makes run B, which the batch comes to next, and counts its usage into
    the day's row. Had the batch counted run A's interaction into that row already, each
    would wait for the other."""
    caller = ledger.caller
    async with ledger.database.transaction() as session:
        for run_id in ("A", "C"):
            await runs.ensure(session, caller, run_id)
    holding_c, single = contextlib.AsyncExitStack(), contextlib.AsyncExitStack()
    async with holding_c, single:
        holder = await holding_c.enter_async_context(ledger.database.transaction())
        await messages.append(holder, caller, "C", messages.NewMessage(role="user", content="."))
        alone = await single.enter_async_context(ledger.database.transaction())
        await runs.ensure(alone, caller, "B")

        note = {"kind": "message", "id": "note", "run_id": "C", "role": "user", "content": "!"}
        stored = asyncio.ensure_future(
            stored_batch(ledger, upload(synced(1, "A"), note, synced(2, "B")))
        )
        await asyncio.sleep(0.3)
        assert not stored.done(), "the batch did not wait for run C"
        recorded = asyncio.ensure_future(interactions.record(alone, caller, "B", interaction(3)))
        await asyncio.sleep(0.3)
        await holding_c.aclose()  # the batch goes on to run B, which the single holds
        await asyncio.wait_for(recorded, GRANTED_WITHIN_S)
        await single.aclose()
        assert await asyncio.wait_for(stored, GRANTED_WITHIN_S) == ["created"] * 3
    assert await requests_counted(ledger) == 3


async def test_a_batch_rolled_back_to_break_a_deadlock_is_stored_again(
    ledger: Ledger, caplog: pytest.LogCaptureFixture
) -> None:
    """The batch makes runs X and Y; another transaction has made Y and then makes X:
    each waits for the other, and PostgreSQL rolls back the one that waited first, the
    batch. It runs again, into the runs the other made."""
    caller = ledger.caller
    async with contextlib.AsyncExitStack() as other:
        making = await other.enter_async_context(ledger.database.transaction())
        await runs.ensure(making, caller, "Y")
        stored = asyncio.ensure_future(stored_batch(ledger, upload(synced(1, "X"), synced(2, "Y"))))
        await asyncio.sleep(0.3)
        assert not stored.done(), "the batch did not wait for run Y"
        await asyncio.wait_for(runs.ensure(making, caller, "X"), GRANTED_WITHIN_S)
    assert await asyncio.wait_for(stored, GRANTED_WITHIN_S) == ["created"] * 2
    assert "rolled back to break a deadlock" in caplog.text
    async with ledger.database.reading() as session:
        assert (await runs.get(session, caller, "X")).task_count == 1
    assert await requests_counted(ledger) == 2
