"""Runs: created if absent (same owner only), named from their first message, renamed by
their user, listed newest first with a cursor and a literal search, deleted with
everything they hold, and invisible across users and projects."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select

from chatledger import InvalidInput, Ledger, NotFound
from chatledger.messages import service as messages
from chatledger.messages.models import Message
from chatledger.runs import service as runs
from chatledger.runs.models import Run
from chatledger.tasks import service as tasks
from chatledger.tasks.models import Task
from chatledger.tenants import service as tenants
from chatledger.tenants.caller import Caller
from chatledger.tokens import TokenUsage
from chatledger.usage.models import UsageDaily

T0 = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)


async def ensure(
    ledger: Ledger, run_id: str | None, caller: Caller | None = None, **fields: object
) -> tuple[Run, bool]:
    async with ledger.database.transaction() as session:
        return await runs.ensure(session, caller or ledger.caller, run_id, **fields)  # type: ignore[arg-type]


async def stored(ledger: Ledger, run_id: str, project_id: str = "local") -> Run | None:
    async with ledger.database.reading() as session:
        return await session.get(Run, (project_id, run_id))


async def list_runs(ledger: Ledger, caller: Caller | None = None, **options: object) -> list[Run]:
    async with ledger.database.reading() as session:
        return await runs.list_runs(session, caller or ledger.caller, **options)  # type: ignore[arg-type]


async def rename(ledger: Ledger, run_id: str, name: str, caller: Caller | None = None) -> Run:
    async with ledger.database.transaction() as session:
        return await runs.rename(session, caller or ledger.caller, run_id, name)


async def delete(ledger: Ledger, run_id: str, caller: Caller | None = None) -> None:
    async with ledger.database.transaction() as session:
        await runs.delete_run(session, caller or ledger.caller, run_id)


async def member(ledger: Ledger, user_id: str, project_id: str = "local") -> Caller:
    async with ledger.database.transaction() as session:
        await tenants.ensure_project(session, project_id)
        await tenants.ensure_user(session, user_id)
    return Caller(project_id, user_id)


async def count(ledger: Ledger, model: type[Message] | type[Task], run_id: str) -> int:
    async with ledger.database.reading() as session:
        n = await session.scalar(
            select(func.count())
            .select_from(model)
            .where(model.project_id == "local", model.run_id == run_id)
        )
        return int(n or 0)


async def ended_task(
    ledger: Ledger,
    run_id: str,
    task_id: str,
    *,
    status: str = "completed",
    usage: TokenUsage | None = None,
    model: str = "gpt-4o",
    at: datetime = T0,
) -> Task:
    async with ledger.database.transaction() as session:
        await tasks.create(
            session,
            ledger.caller,
            tasks.NewTask(run_id=run_id, id=task_id, model=model, provider="openai"),
        )
        task, _ = await tasks.finish(
            session,
            ledger.caller,
            task_id,
            tasks.Outcome(
                status=status,
                response_text="reply",
                usage=usage or TokenUsage(input_tokens=100, output_tokens=50),
                completed_at=at,
            ),
        )
        return task


async def usage_rows(ledger: Ledger) -> dict[tuple[str, str, str], tuple[int, ...]]:
    """Daily usage that says anything, keyed by (user, day, model)."""
    async with ledger.database.reading() as session:
        found: dict[tuple[str, str, str], tuple[int, ...]] = {}
        for row in await session.scalars(select(UsageDaily)):
            values = (
                row.requests,
                row.failed_requests,
                row.input_tokens,
                row.output_tokens,
                row.cost_nano,
            )
            if any(values):
                found[(row.user_id, row.day.isoformat(), row.model)] = values
        return found


# -- ensure ----------------------------------------------------------------------------


async def test_ensure_creates_once_and_returns_the_same_run(ledger: Ledger) -> None:
    first, created_first = await ensure(ledger, "r1", first_message="Plan a trip to Rome")
    again, created_again = await ensure(ledger, "r1", first_message="Something else entirely")

    assert (created_first, created_again) == (True, False)
    assert again.id == first.id == "r1"
    assert again.name == "Plan a trip to Rome"  # the second call changed nothing
    assert again.created_at == first.created_at
    row = await stored(ledger, "r1")
    assert row is not None
    assert row.user_id == "local"
    assert (row.name, row.name_source) == ("Plan a trip to Rome", "auto")
    assert (row.task_count, row.message_count, row.total_tokens, row.total_cost_nano) == (
        0,
        0,
        0,
        0,
    )
    assert row.created_at.tzinfo is not None
    async with ledger.database.reading() as session:
        assert await session.scalar(select(func.count()).select_from(Run)) == 1


async def test_ensure_without_an_id_makes_one(ledger: Ledger) -> None:
    first, created_first = await ensure(ledger, None)
    second, created_second = await ensure(ledger, None)

    assert created_first and created_second
    assert first.id != second.id
    assert len(first.id) == 36  # a UUID
    assert await stored(ledger, first.id) is not None


async def test_ensure_keeps_settings_metadata_and_time(ledger: Ledger) -> None:
    at = datetime(2024, 2, 29, 8, 0, tzinfo=UTC)

    await ensure(
        ledger, "r1", settings={"model": "echo"}, metadata={"source": "sync"}, created_at=at
    )

    row = await stored(ledger, "r1")
    assert row is not None
    assert row.settings == {"model": "echo"}
    assert row.metadata_ == {"source": "sync"}
    assert row.created_at == row.updated_at == at


async def test_ensure_of_another_users_run_is_not_found(ledger: Ledger) -> None:
    bob = await member(ledger, "bob")
    await ensure(ledger, "bobs", caller=bob, name="Bob's")

    with pytest.raises(NotFound) as caught:
        await ensure(ledger, "bobs", first_message="mine now?")

    assert caught.value.details == {"kind": "run", "id": "bobs"}
    row = await stored(ledger, "bobs")
    assert row is not None
    assert (row.user_id, row.name) == ("bob", "Bob's")


async def test_ensure_rejects_a_malformed_id(ledger: Ledger) -> None:
    with pytest.raises(InvalidInput) as caught:
        await ensure(ledger, "not ok")

    assert caught.value.field == "run_id"
    async with ledger.database.reading() as session:
        assert await session.scalar(select(func.count()).select_from(Run)) == 0


@pytest.mark.parametrize("name", ["", "   ", "\n\t"])
async def test_ensure_rejects_a_blank_name(ledger: Ledger, name: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        await ensure(ledger, "r1", name=name)

    assert caught.value.field == "name"
    assert await stored(ledger, "r1") is None


async def test_ensure_with_a_name_is_named_by_the_user(ledger: Ledger) -> None:
    run, _ = await ensure(ledger, "r1", name="My project", first_message="ignored for naming")

    assert (run.name, run.name_source) == ("My project", "user")


async def test_ensure_with_a_very_long_name_is_stored(ledger: Ledger) -> None:
    run, _ = await ensure(ledger, "r1", name="n" * 300)

    row = await stored(ledger, "r1")
    assert row is not None
    assert row.name == run.name == "n" * 200


# -- automatic names -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("message", "name"),
    [
        ("Hello world", "Hello world"),
        ("  \n\n  Summarise   this\tarticle  \nsecond line", "Summarise this article"),
        ("", "New conversation"),
        ("   \n \t ", "New conversation"),
        ("x" * 60, "x" * 60),
    ],
)
async def test_auto_name_from_the_first_message(ledger: Ledger, message: str, name: str) -> None:
    run, _ = await ensure(ledger, "r1", first_message=message)

    assert (run.name, run.name_source) == (name, "auto")


async def test_long_first_message_is_cut_at_a_word(ledger: Ledger) -> None:
    message = "Please write a detailed comparison of every major sorting algorithm, with examples"

    run, _ = await ensure(ledger, "r1", first_message=message)

    assert run.name.endswith("…")
    assert len(run.name) <= runs.NAME_LENGTH + 1
    stem = run.name.removesuffix("…")
    assert message.startswith(stem)
    assert message[len(stem)] in " ,"  # cut between words, not inside one
    assert run.name == "Please write a detailed comparison of every major sorting…"


async def test_a_chat_names_its_run_from_the_message(ledger: Ledger) -> None:
    turn = await ledger.chat("How do tides work?\nExplain simply.")
    result = await turn.result()

    row = await stored(ledger, result.run_id)
    assert row is not None
    assert (row.name, row.name_source) == ("How do tides work?", "auto")
    # A follow-up in the same run does not rename it.
    follow = await ledger.chat("And why twice a day?", run_id=result.run_id)
    await follow.result()
    row = await stored(ledger, result.run_id)
    assert row is not None
    assert row.name == "How do tides work?"


# -- rename ----------------------------------------------------------------------------


async def test_rename_sets_the_user_name(ledger: Ledger) -> None:
    created, _ = await ensure(ledger, "r1", first_message="auto name", created_at=T0)

    renamed = await rename(ledger, "r1", "  Holiday plans  ")

    assert (renamed.name, renamed.name_source) == ("Holiday plans", "user")
    row = await stored(ledger, "r1")
    assert row is not None
    assert (row.name, row.name_source) == ("Holiday plans", "user")
    assert row.updated_at > created.updated_at
    assert row.created_at == T0


async def test_rename_cuts_to_200_characters(ledger: Ledger) -> None:
    await ensure(ledger, "r1")

    await rename(ledger, "r1", "y" * 500)

    row = await stored(ledger, "r1")
    assert row is not None
    assert row.name == "y" * 200


@pytest.mark.parametrize("name", ["", "   ", "\t\n"])
async def test_rename_to_blank_is_invalid(ledger: Ledger, name: str) -> None:
    await ensure(ledger, "r1", first_message="keep me")

    with pytest.raises(InvalidInput) as caught:
        await rename(ledger, "r1", name)

    assert caught.value.field == "name"
    row = await stored(ledger, "r1")
    assert row is not None
    assert (row.name, row.name_source) == ("keep me", "auto")


async def test_rename_of_another_users_run_is_not_found(ledger: Ledger) -> None:
    bob = await member(ledger, "bob")
    await ensure(ledger, "bobs", caller=bob, first_message="bob's run")

    with pytest.raises(NotFound):
        await rename(ledger, "bobs", "taken over")

    row = await stored(ledger, "bobs")
    assert row is not None
    assert row.name == "bob's run"


# -- list ------------------------------------------------------------------------------


async def make_runs(ledger: Ledger, names: list[str]) -> list[str]:
    """Runs whose activity is one minute apart, in the order given (the last is newest)."""
    ids = []
    for index, name in enumerate(names):
        run, _ = await ensure(
            ledger, f"r{index:02d}", name=name, created_at=T0 + timedelta(minutes=index)
        )
        ids.append(run.id)
    return ids


async def test_list_is_newest_activity_first(ledger: Ledger) -> None:
    ids = await make_runs(ledger, ["a", "b", "c", "d"])

    assert [r.id for r in await list_runs(ledger)] == ids[::-1]

    # A message moves its run to the top.
    async with ledger.database.transaction() as session:
        await messages.append(
            session, ledger.caller, ids[1], messages.NewMessage(role="user", content="bump")
        )
    assert [r.id for r in await list_runs(ledger)] == [ids[1], ids[3], ids[2], ids[0]]


async def test_older_activity_does_not_move_a_run_back(ledger: Ledger) -> None:
    """History synced late (an old message, a task that ended earlier) is not new activity."""
    ids = await make_runs(ledger, ["a", "b"])
    newest = T0 + timedelta(minutes=5)
    async with ledger.database.transaction() as session:
        await messages.append(
            session,
            ledger.caller,
            ids[0],
            messages.NewMessage(role="user", content="new", created_at=newest),
        )
    assert [r.id for r in await list_runs(ledger)] == [ids[0], ids[1]]

    async with ledger.database.transaction() as session:
        await messages.append(
            session,
            ledger.caller,
            ids[0],
            messages.NewMessage(role="user", content="old", created_at=T0 - timedelta(days=1)),
        )
    await ended_task(ledger, ids[0], "late", at=T0 - timedelta(days=2))

    assert [r.id for r in await list_runs(ledger)] == [ids[0], ids[1]]
    run = await stored(ledger, ids[0])
    assert run is not None
    assert run.updated_at == newest
    assert run.last_message_at == newest
    assert (run.message_count, run.task_count) == (2, 1)


async def test_list_limit(ledger: Ledger) -> None:
    ids = await make_runs(ledger, ["a", "b", "c", "d", "e"])

    assert [r.id for r in await list_runs(ledger, limit=2)] == [ids[4], ids[3]]
    assert [r.id for r in await list_runs(ledger, limit=1)] == [ids[4]]
    assert len(await list_runs(ledger, limit=0)) == 5  # no limit


async def test_before_cursor_pages_through_every_run_once(ledger: Ledger) -> None:
    ids = await make_runs(ledger, [f"run {n}" for n in range(7)])
    # Three more with the same activity time as run 3: the id breaks the tie.
    for suffix in ("x", "y", "z"):
        await ensure(ledger, f"tie-{suffix}", name="tie", created_at=T0 + timedelta(minutes=3))
    everything = [r.id for r in await list_runs(ledger, limit=0)]
    assert len(everything) == 10
    assert everything[:3] == [ids[6], ids[5], ids[4]]
    # Equal times: descending id ("tie-*" sorts after "r03").
    assert everything[3:7] == ["tie-z", "tie-y", "tie-x", ids[3]]

    seen: list[str] = []
    before = None
    while True:
        page = await list_runs(ledger, limit=3, before=before)
        if not page:
            break
        assert len(page) <= 3
        seen.extend(r.id for r in page)
        before = (page[-1].updated_at, page[-1].id)

    assert seen == everything


async def test_before_a_given_time(ledger: Ledger) -> None:
    ids = await make_runs(ledger, ["a", "b", "c", "d"])

    page = await list_runs(ledger, before=(T0 + timedelta(minutes=2), "zzz"))
    assert [r.id for r in page] == [ids[2], ids[1], ids[0]]
    page = await list_runs(ledger, before=(T0 + timedelta(minutes=2), ids[2]))
    assert [r.id for r in page] == [ids[1], ids[0]]
    assert await list_runs(ledger, before=(T0, ids[0])) == []


async def test_query_is_case_insensitive(ledger: Ledger) -> None:
    ids = await make_runs(ledger, ["Trip to ROME", "rome again", "Paris", "Romeo and Juliet"])

    found = await list_runs(ledger, query="rOmE")

    assert [r.id for r in found] == [ids[3], ids[1], ids[0]]
    assert await list_runs(ledger, query="berlin") == []
    assert len(await list_runs(ledger, query="")) == 4  # empty query: everything


async def test_query_percent_and_underscore_are_literal(ledger: Ledger) -> None:
    ids = await make_runs(
        ledger, ["100% done", "1000 done", "snake_case", "snakeXcase", "back\\slash", "a/b"]
    )

    assert [r.id for r in await list_runs(ledger, query="%")] == [ids[0]]
    assert [r.id for r in await list_runs(ledger, query="0%")] == [ids[0]]
    assert [r.id for r in await list_runs(ledger, query="_")] == [ids[2]]
    assert [r.id for r in await list_runs(ledger, query="e_c")] == [ids[2]]
    assert [r.id for r in await list_runs(ledger, query="\\")] == [ids[4]]
    assert [r.id for r in await list_runs(ledger, query="/")] == [ids[5]]


async def test_query_with_cursor_and_limit(ledger: Ledger) -> None:
    ids = await make_runs(ledger, ["chat 1", "other", "chat 2", "chat 3", "other 2", "chat 4"])

    first = await list_runs(ledger, query="CHAT", limit=2)
    assert [r.id for r in first] == [ids[5], ids[3]]
    rest = await list_runs(
        ledger, query="chat", limit=2, before=(first[-1].updated_at, first[-1].id)
    )
    assert [r.id for r in rest] == [ids[2], ids[0]]


async def test_list_shows_only_the_callers_runs(ledger: Ledger) -> None:
    bob = await member(ledger, "bob")
    elsewhere = await member(ledger, "local", project_id="other")
    await ensure(ledger, "mine", created_at=T0)
    await ensure(ledger, "bobs", caller=bob, created_at=T0 + timedelta(minutes=1))
    await ensure(ledger, "theirs", caller=elsewhere, created_at=T0 + timedelta(minutes=2))

    assert [r.id for r in await list_runs(ledger)] == ["mine"]
    assert [r.id for r in await list_runs(ledger, caller=bob)] == ["bobs"]
    admin = Caller("local", "admin", sees_all=True)
    assert [r.id for r in await list_runs(ledger, caller=admin)] == ["bobs", "mine"]
    assert [r.id for r in await list_runs(ledger, caller=elsewhere)] == ["theirs"]


# -- delete ----------------------------------------------------------------------------


async def add_messages(ledger: Ledger, run_id: str, n: int) -> None:
    async with ledger.database.transaction() as session:
        for index in range(n):
            await messages.append(
                session,
                ledger.caller,
                run_id,
                messages.NewMessage(role="user", content=f"{run_id} {index}"),
            )


async def test_delete_cascades_and_takes_usage_back(ledger: Ledger) -> None:
    await ensure(ledger, "doomed")
    await ensure(ledger, "kept")
    await add_messages(ledger, "doomed", 3)
    await add_messages(ledger, "kept", 2)
    await ended_task(ledger, "doomed", "t1", usage=TokenUsage(input_tokens=1000, output_tokens=10))
    await ended_task(ledger, "doomed", "t2", status="failed")
    await ended_task(ledger, "doomed", "t3", model="other-model", at=T0 + timedelta(days=1))
    kept = await ended_task(ledger, "kept", "t4", usage=TokenUsage(input_tokens=7, output_tokens=3))
    async with ledger.database.transaction() as session:  # a live task goes too
        await tasks.create(
            session,
            ledger.caller,
            tasks.NewTask(run_id="doomed", id="t5", model="gpt-4o", provider="openai"),
        )
    assert await ledger.verify() == []
    assert kept.cost_nano is not None

    await delete(ledger, "doomed")

    assert await stored(ledger, "doomed") is None
    assert await count(ledger, Message, "doomed") == 0
    assert await count(ledger, Task, "doomed") == 0
    assert await count(ledger, Message, "kept") == 2
    assert await count(ledger, Task, "kept") == 1
    # Daily usage now says exactly what the remaining task says.
    assert await usage_rows(ledger) == {
        ("local", "2025-06-01", "gpt-4o"): (1, 0, 7, 3, kept.cost_nano),
    }
    assert await ledger.verify() == []
    with pytest.raises(NotFound):
        await delete(ledger, "doomed")


async def test_delete_of_another_users_run_is_not_found(ledger: Ledger) -> None:
    bob = await member(ledger, "bob")
    await ensure(ledger, "bobs", caller=bob)

    with pytest.raises(NotFound):
        await delete(ledger, "bobs")

    assert await stored(ledger, "bobs") is not None
    await delete(ledger, "bobs", caller=bob)
    assert await stored(ledger, "bobs") is None


# -- isolation -------------------------------------------------------------------------


async def test_another_projects_run_id_is_not_found(ledger: Ledger) -> None:
    elsewhere = await member(ledger, "local", project_id="other")
    await ensure(ledger, "shared", caller=elsewhere, name="theirs")

    async with ledger.database.reading() as session:
        with pytest.raises(NotFound):
            await runs.get(session, ledger.caller, "shared")
        # Even a caller who sees all of *its* project sees nothing of another.
        with pytest.raises(NotFound):
            await runs.get(session, Caller("local", "admin", sees_all=True), "shared")
    with pytest.raises(NotFound):
        await rename(ledger, "shared", "mine")
    with pytest.raises(NotFound):
        await delete(ledger, "shared")

    # Ids are per project: the same id here is a different run.
    mine, created = await ensure(ledger, "shared", name="mine")
    assert created
    theirs = await stored(ledger, "shared", project_id="other")
    assert theirs is not None
    assert (mine.project_id, mine.name) == ("local", "mine")
    assert (theirs.project_id, theirs.name) == ("other", "theirs")


# -- concurrency -----------------------------------------------------------------------


async def test_concurrent_ensures_create_the_run_once(ledger: Ledger) -> None:
    results = await asyncio.gather(
        *(ensure(ledger, "same", first_message=f"message {n}") for n in range(12))
    )

    assert sum(created for _, created in results) == 1
    names = {run.name for run, _ in results}
    assert len(names) == 1  # everyone got the one stored run
    row = await stored(ledger, "same")
    assert row is not None
    assert row.name in names
    async with ledger.database.reading() as session:
        assert await session.scalar(select(func.count()).select_from(Run)) == 1


@pytest.mark.parametrize("position", [0, 7, 20])
async def test_delete_racing_completions(ledger: Ledger, position: int) -> None:
    """Completions of the run's tasks and its delete at once: no deadlock, no error other
    than "not found" for a completion that comes after the delete, and no usage left
    behind for tasks that are gone."""
    await ensure(ledger, "doomed")
    await ensure(ledger, "kept")
    for index in range(20):
        async with ledger.database.transaction() as session:
            await tasks.create(
                session,
                ledger.caller,
                tasks.NewTask(
                    run_id="doomed" if index % 2 else "kept",
                    id=f"t{index}",
                    model="gpt-4o",
                    provider="openai",
                ),
            )

    async def complete(index: int) -> str:
        outcome = tasks.Outcome(
            status="completed",
            usage=TokenUsage(input_tokens=10, output_tokens=index),
            completed_at=T0,
        )
        try:
            async with ledger.database.transaction() as session:
                await tasks.finish(session, ledger.caller, f"t{index}", outcome)
        except NotFound:
            return "gone"
        return "completed"

    async def remove() -> str:
        await delete(ledger, "doomed")
        return "deleted"

    calls = [complete(index) for index in range(20)]
    calls.insert(position, remove())
    outcomes = await asyncio.gather(*calls)

    assert outcomes[position] == "deleted"
    ends = outcomes[:position] + outcomes[position + 1 :]
    assert all(ends[index] == "completed" for index in range(0, 20, 2))  # the kept run's
    assert set(ends) <= {"completed", "gone"}
    assert await stored(ledger, "doomed") is None
    assert await count(ledger, Task, "doomed") == 0
    assert await usage_rows(ledger) == {
        ("local", "2025-06-01", "gpt-4o"): (
            10,
            0,
            100,
            sum(range(0, 20, 2)),
            sum(10 * 2_500 + index * 10_000 for index in range(0, 20, 2)),
        )
    }
    assert await ledger.verify() == []
