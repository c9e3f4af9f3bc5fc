"""Row locks on runs (PostgreSQL; SQLite's one write lock is the database's): a writer
that locks a run to move its counts takes the lock that the change needs, FOR NO KEY
UPDATE, never FOR UPDATE, which also waits for every transaction that merely stored a
row naming the run (a foreign key's check holds FOR KEY SHARE on it until commit).

With FOR UPDATE, a batch that had written a run, then locked it again for a group of
interactions, waited for a single interaction that had inserted its task into the run,
which waited to count its message into the run the batch held: a deadlock, answered
503 to one of them (seen in tests/proof/test_concurrency.py)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

import pytest
from sqlalchemy.ext.asyncio import AsyncSession

from chatledger import Ledger
from chatledger.interactions import bulk, bulk_runs
from chatledger.interactions import service as interactions
from chatledger.messages import service as messages
from chatledger.prompts import chat as prompt_chat
from chatledger.prompts import service as prompts
from chatledger.prompts.schemas import PromptCreate
from chatledger.runs import service as runs
from chatledger.tasks import service as tasks
from chatledger.tokens import TokenUsage

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
