"""Task transitions: created before the model is called (run ensured), progress while
live, and exactly one terminal transition that counts usage and cost into the run and
into daily usage — replays are no-ops, contradictions are conflicts, and concurrency
changes neither."""

from __future__ import annotations

import asyncio
from datetime import UTC, date, datetime, timedelta, timezone

import pytest
from sqlalchemy import func, select

from chatledger import Conflict, InvalidInput, Ledger, NotFound
from chatledger.runs import service as runs
from chatledger.runs.models import Run
from chatledger.tasks import service as tasks
from chatledger.tasks.models import Task
from chatledger.tenants import service as tenants
from chatledger.tenants.caller import Caller
from chatledger.tokens import TokenUsage
from chatledger.usage.models import UsageDaily

# A fixed end time, so the price is that day's list price (and the usage day is known).
AT = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)
# gpt-4o list prices per token, in nano-USD: $2.50 / $1.25 cached / $10.00 per million.
GPT4O_INPUT, GPT4O_CACHED, GPT4O_OUTPUT = 2_500, 1_250, 10_000


def gpt4o_cost(input_tokens: int, output_tokens: int, cached_tokens: int = 0) -> int:
    return (
        (input_tokens - cached_tokens) * GPT4O_INPUT
        + cached_tokens * GPT4O_CACHED
        + output_tokens * GPT4O_OUTPUT
    )


async def create(
    ledger: Ledger,
    task_id: str | None,
    run_id: str | None = "r1",
    *,
    caller: Caller | None = None,
    model: str = "gpt-4o",
    provider: str = "openai",
    user_message_id: str | None = None,
) -> tuple[Task, bool]:
    new = tasks.NewTask(
        id=task_id,
        run_id=run_id,
        model=model,
        provider=provider,
        user_message_id=user_message_id,
        service="chat",
        task_name="reply",
        request={"temperature": 0.2},
    )
    async with ledger.database.transaction() as session:
        return await tasks.create(session, caller or ledger.caller, new)


async def progress(
    ledger: Ledger, task_id: str, text: str | None = None, caller: Caller | None = None
) -> Task:
    async with ledger.database.transaction() as session:
        return await tasks.progress(session, caller or ledger.caller, task_id, text)


async def finish(
    ledger: Ledger,
    task_id: str,
    status: str = "completed",
    *,
    caller: Caller | None = None,
    text: str | None = "the reply",
    usage: TokenUsage | None = None,
    at: datetime | None = AT,
    **fields: object,
) -> tuple[Task, bool]:
    outcome = tasks.Outcome(
        status=status,
        response_text=text,
        usage=usage,
        completed_at=at,
        **fields,  # type: ignore[arg-type]
    )
    async with ledger.database.transaction() as session:
        return await tasks.finish(session, caller or ledger.caller, task_id, outcome)


async def task_row(ledger: Ledger, task_id: str, project_id: str = "local") -> Task:
    async with ledger.database.reading() as session:
        task = await session.get(Task, (project_id, task_id))
        assert task is not None
        return task


async def run_row(ledger: Ledger, run_id: str = "r1", project_id: str = "local") -> Run | None:
    async with ledger.database.reading() as session:
        return await session.get(Run, (project_id, run_id))


async def totals(ledger: Ledger, run_id: str = "r1") -> tuple[int, int, int]:
    run = await run_row(ledger, run_id)
    assert run is not None
    return run.task_count, run.total_tokens, run.total_cost_nano


UsageKey = tuple[str, date, str]


async def usage(ledger: Ledger) -> dict[UsageKey, dict[str, int]]:
    async with ledger.database.reading() as session:
        return {
            (row.user_id, row.day, row.model): {
                "requests": row.requests,
                "failed_requests": row.failed_requests,
                "input_tokens": row.input_tokens,
                "output_tokens": row.output_tokens,
                "cached_tokens": row.cached_tokens,
                "reasoning_tokens": row.reasoning_tokens,
                "cost_nano": row.cost_nano,
            }
            for row in await session.scalars(select(UsageDaily))
        }


def usage_of(
    requests: int = 1,
    failed: int = 0,
    input_tokens: int = 0,
    output_tokens: int = 0,
    cost_nano: int = 0,
    cached_tokens: int = 0,
    reasoning_tokens: int = 0,
) -> dict[str, int]:
    return {
        "requests": requests,
        "failed_requests": failed,
        "input_tokens": input_tokens,
        "output_tokens": output_tokens,
        "cached_tokens": cached_tokens,
        "reasoning_tokens": reasoning_tokens,
        "cost_nano": cost_nano,
    }


async def member(ledger: Ledger, user_id: str, project_id: str = "local") -> Caller:
    async with ledger.database.transaction() as session:
        await tenants.ensure_project(session, project_id)
        await tenants.ensure_user(session, user_id)
    return Caller(project_id, user_id)


async def task_count(ledger: Ledger) -> int:
    async with ledger.database.reading() as session:
        return int(await session.scalar(select(func.count()).select_from(Task)) or 0)


# -- create ----------------------------------------------------------------------------


async def test_create_ensures_its_run(ledger: Ledger) -> None:
    assert await run_row(ledger, "fresh") is None

    task, created = await create(ledger, "t1", "fresh")

    assert created
    run = await run_row(ledger, "fresh")
    assert run is not None
    assert (run.user_id, run.name_source) == ("local", "auto")
    stored = await task_row(ledger, "t1")
    assert (stored.run_id, stored.user_id, stored.status) == ("fresh", "local", "pending")
    assert (stored.provider, stored.model, stored.attempt) == ("openai", "gpt-4o", 1)
    assert (stored.service, stored.task_name) == ("chat", "reply")
    assert stored.request == {"temperature": 0.2}
    assert stored.response_text == ""
    assert (stored.input_tokens, stored.output_tokens, stored.cost_nano) == (0, 0, None)
    assert stored.completed_at is None
    assert stored.created_at == stored.heartbeat_at
    assert stored.created_at.tzinfo is not None
    assert task.id == "t1"


async def test_create_reuses_an_existing_run(ledger: Ledger) -> None:
    async with ledger.database.transaction() as session:
        await runs.ensure(session, ledger.caller, "r1", name="kept")

    await create(ledger, "t1", "r1")

    run = await run_row(ledger, "r1")
    assert run is not None
    assert run.name == "kept"
    async with ledger.database.reading() as session:
        assert await session.scalar(select(func.count()).select_from(Run)) == 1


async def test_create_without_run_or_task_id_makes_both(ledger: Ledger) -> None:
    task, created = await create(ledger, None, None)

    assert created
    assert task.id and task.run_id
    assert await run_row(ledger, task.run_id) is not None


async def test_create_is_idempotent_by_id(ledger: Ledger) -> None:
    first, created_first = await create(ledger, "t1", user_message_id="m1")
    again, created_again = await create(ledger, "t1", user_message_id="m1")

    assert (created_first, created_again) == (True, False)
    assert (again.id, again.run_id, again.attempt) == ("t1", "r1", 1)
    assert again.created_at == first.created_at
    assert await task_count(ledger) == 1


async def test_concurrent_creates_of_one_task_create_it_once(ledger: Ledger) -> None:
    results = await asyncio.gather(*(create(ledger, "t1", "r1") for _ in range(12)))

    assert sum(created for _, created in results) == 1
    assert {(task.id, task.run_id, task.attempt) for task, _ in results} == {("t1", "r1", 1)}
    assert await task_count(ledger) == 1


async def test_same_task_id_on_another_run_is_a_conflict(ledger: Ledger) -> None:
    await create(ledger, "t1", "r1")

    with pytest.raises(Conflict) as caught:
        await create(ledger, "t1", "r2")

    assert caught.value.details["id"] == "t1"
    assert (await task_row(ledger, "t1")).run_id == "r1"
    assert await run_row(ledger, "r2") is None  # the refused call left nothing behind
    assert await task_count(ledger) == 1


async def test_attempts_are_numbered_per_user_message(ledger: Ledger) -> None:
    attempts = []
    for task_id, message_id in [
        ("a1", "m1"),
        ("b1", "m2"),
        ("a2", "m1"),
        ("n1", None),
        ("a3", "m1"),
        ("n2", None),
        ("b2", "m2"),
    ]:
        task, _ = await create(ledger, task_id, user_message_id=message_id)
        attempts.append((task_id, task.attempt))

    assert attempts == [("a1", 1), ("b1", 1), ("a2", 2), ("n1", 1), ("a3", 3), ("n2", 1), ("b2", 2)]
    # A replayed create keeps its number and takes no new one.
    again, _ = await create(ledger, "a2", user_message_id="m1")
    assert again.attempt == 2
    fourth, _ = await create(ledger, "a4", user_message_id="m1")
    assert fourth.attempt == 4


async def test_concurrent_attempts_of_one_message_take_distinct_numbers(ledger: Ledger) -> None:
    await create(ledger, "first", "r1", user_message_id="m1")

    results = await asyncio.gather(
        *(create(ledger, f"retry-{i}", "r1", user_message_id="m1") for i in range(10))
    )

    assert sorted(task.attempt for task, _ in results) == list(range(2, 12))


@pytest.mark.parametrize(
    ("task_id", "run_id", "model", "field"),
    [
        ("bad id", "r1", "gpt-4o", "id"),
        ("x" * 129, "r1", "gpt-4o", "id"),
        ("t1", "bad/run", "gpt-4o", "run_id"),
        ("t1", "r1", "", "model"),
    ],
)
async def test_create_rejects_bad_input(
    ledger: Ledger, task_id: str, run_id: str, model: str, field: str
) -> None:
    with pytest.raises(InvalidInput) as caught:
        await create(ledger, task_id, run_id, model=model)

    assert caught.value.field == field
    assert await task_count(ledger) == 0
    assert await run_row(ledger, "r1") is None


async def test_create_on_another_users_run_is_not_found(ledger: Ledger) -> None:
    bob = await member(ledger, "bob")
    await create(ledger, "bobs-task", "bobs", caller=bob)

    with pytest.raises(NotFound):
        await create(ledger, "t1", "bobs")
    # Bob's task id is not a way into Bob's task either.
    with pytest.raises(NotFound):
        await create(ledger, "bobs-task", "r1")

    assert await task_count(ledger) == 1
    async with ledger.database.reading() as session:
        with pytest.raises(NotFound):
            await tasks.get(session, ledger.caller, "bobs-task")
        assert (await tasks.get(session, bob, "bobs-task")).user_id == "bob"
        admin = Caller("local", "admin", sees_all=True)
        assert (await tasks.get(session, admin, "bobs-task")).id == "bobs-task"
        with pytest.raises(NotFound):
            await tasks.get(session, Caller("other", "bob", sees_all=True), "bobs-task")


async def test_list_for_run_is_in_creation_order(ledger: Ledger) -> None:
    for task_id in ("t3", "t1", "t2"):
        await create(ledger, task_id)

    async with ledger.database.reading() as session:
        listed = await tasks.list_for_run(session, ledger.caller, "r1")

    assert [t.id for t in listed] == ["t3", "t1", "t2"]


# -- progress --------------------------------------------------------------------------


async def test_progress_streams_text_and_moves_the_heartbeat(ledger: Ledger) -> None:
    created, _ = await create(ledger, "t1")

    await asyncio.sleep(0.01)
    first = await progress(ledger, "t1", "Hel")
    await asyncio.sleep(0.01)
    second = await progress(ledger, "t1", "Hello, wor")
    await asyncio.sleep(0.01)
    third = await progress(ledger, "t1")  # a heartbeat alone keeps the text

    assert (first.status, first.response_text) == ("streaming", "Hel")
    assert created.heartbeat_at < first.heartbeat_at < second.heartbeat_at < third.heartbeat_at
    stored = await task_row(ledger, "t1")
    assert (stored.status, stored.response_text) == ("streaming", "Hello, wor")
    assert stored.heartbeat_at == third.heartbeat_at
    assert stored.updated_at == third.heartbeat_at
    assert stored.completed_at is None
    assert await totals(ledger) == (0, 0, 0)  # progress counts nothing


@pytest.mark.parametrize("status", ["completed", "failed", "cancelled", "interrupted"])
async def test_progress_on_an_ended_task_is_a_conflict(ledger: Ledger, status: str) -> None:
    await create(ledger, "t1")
    await progress(ledger, "t1", "partial")
    await finish(ledger, "t1", status, text="final")
    ended = await task_row(ledger, "t1")

    with pytest.raises(Conflict) as caught:
        await progress(ledger, "t1", "more text")

    assert caught.value.details["status"] == status
    stored = await task_row(ledger, "t1")
    assert (stored.status, stored.response_text) == (status, "final")
    assert stored.heartbeat_at == ended.heartbeat_at
    assert stored.updated_at == ended.updated_at


async def test_progress_of_an_unknown_or_foreign_task_is_not_found(ledger: Ledger) -> None:
    bob = await member(ledger, "bob")
    await create(ledger, "bobs-task", "bobs", caller=bob)

    with pytest.raises(NotFound):
        await progress(ledger, "nope", "x")
    with pytest.raises(NotFound):
        await progress(ledger, "bobs-task", "x")

    stored = await task_row(ledger, "bobs-task")
    assert (stored.status, stored.response_text) == ("pending", "")


# -- finish: prices --------------------------------------------------------------------


async def test_completion_is_priced_from_genai_prices(ledger: Ledger) -> None:
    await create(ledger, "t1")
    await progress(ledger, "t1", "The capital")

    task, created = await finish(
        ledger,
        "t1",
        text="The capital of France is Paris.",
        usage=TokenUsage(input_tokens=1_234, output_tokens=567, reasoning_tokens=100),
        ttft_ms=321,
        total_ms=4_567,
    )

    assert created
    cost = 1_234 * GPT4O_INPUT + 567 * GPT4O_OUTPUT
    assert cost == 8_755_000
    stored = await task_row(ledger, "t1")
    for row in (task, stored):
        assert row.status == "completed"
        assert row.response_text == "The capital of France is Paris."
        assert (row.input_tokens, row.output_tokens, row.reasoning_tokens) == (1_234, 567, 100)
        assert row.cost_nano == cost
        assert row.price_source is not None
        assert row.price_source.startswith("genai-prices")
        assert (row.ttft_ms, row.total_ms) == (321, 4_567)
        assert row.completed_at == AT
        assert row.error is None
    assert await totals(ledger) == (1, 1_801, cost)
    run = await run_row(ledger)
    assert run is not None
    assert run.last_model == "gpt-4o"
    assert await usage(ledger) == {
        ("local", AT.date(), "gpt-4o"): usage_of(
            input_tokens=1_234, output_tokens=567, reasoning_tokens=100, cost_nano=cost
        )
    }


async def test_cached_tokens_are_priced_at_the_cache_rate(ledger: Ledger) -> None:
    await create(ledger, "t1")

    task, _ = await finish(
        ledger, "t1", usage=TokenUsage(input_tokens=1_000, output_tokens=500, cached_tokens=200)
    )

    assert task.cost_nano == gpt4o_cost(1_000, 500, cached_tokens=200) == 7_250_000
    assert (await usage(ledger))[("local", AT.date(), "gpt-4o")]["cached_tokens"] == 200


async def test_unknown_model_has_no_cost_and_adds_none(ledger: Ledger) -> None:
    await create(ledger, "known")
    await finish(ledger, "known", usage=TokenUsage(input_tokens=10, output_tokens=10))
    before = await totals(ledger)
    await create(ledger, "t1", model="no-such-model-xyz")

    task, _ = await finish(ledger, "t1", usage=TokenUsage(input_tokens=300, output_tokens=200))

    stored = await task_row(ledger, "t1")
    assert (task.cost_nano, task.price_source) == (None, "unknown")
    assert (stored.cost_nano, stored.price_source) == (None, "unknown")
    # Its tokens count; its unknown price is not made into a zero or anything else.
    assert await totals(ledger) == (2, before[1] + 500, before[2])
    assert (await usage(ledger))[("local", AT.date(), "no-such-model-xyz")] == usage_of(
        input_tokens=300, output_tokens=200, cost_nano=0
    )
    assert await ledger.verify() == []


async def test_client_supplied_cost_is_kept(ledger: Ledger) -> None:
    await create(ledger, "t1")

    task, _ = await finish(
        ledger, "t1", usage=TokenUsage(input_tokens=10, output_tokens=5), cost_nano=123_456
    )

    assert (task.cost_nano, task.price_source) == (123_456, "client")
    stored = await task_row(ledger, "t1")
    assert (stored.cost_nano, stored.price_source) == (123_456, "client")
    assert await totals(ledger) == (1, 15, 123_456)


async def test_free_provider_costs_zero(ledger: Ledger) -> None:
    await create(ledger, "t1", model="echo", provider="echo")

    task, _ = await finish(ledger, "t1", usage=TokenUsage(input_tokens=10, output_tokens=5))

    assert (task.cost_nano, task.price_source) == (0, "free")


async def test_completion_without_usage_counts_zero_tokens(ledger: Ledger) -> None:
    await create(ledger, "t1")
    await progress(ledger, "t1", "streamed so far")

    task, _ = await finish(ledger, "t1", text=None, usage=None)

    assert task.response_text == "streamed so far"  # not reported: kept
    assert (task.input_tokens, task.output_tokens, task.cost_nano) == (0, 0, 0)
    assert await totals(ledger) == (1, 0, 0)


# -- finish: exactly once --------------------------------------------------------------


async def test_replaying_a_completion_changes_nothing(ledger: Ledger) -> None:
    await create(ledger, "t1")
    tokens = TokenUsage(input_tokens=40, output_tokens=60)
    first, created_first = await finish(ledger, "t1", text="done", usage=tokens)
    counted = (await totals(ledger), await usage(ledger))

    again, created_again = await finish(ledger, "t1", text="done", usage=tokens)
    # A replay that reports less (only the status) says nothing different either.
    bare, created_bare = await finish(ledger, "t1", text=None, usage=None)
    # Nor does a replay carrying a later end time.
    later, created_later = await finish(
        ledger, "t1", text="done", usage=tokens, at=AT + timedelta(hours=1)
    )

    assert created_first
    assert not (created_again or created_bare or created_later)
    for replay in (again, bare, later):
        assert replay.id == first.id
        assert replay.cost_nano == first.cost_nano
        assert replay.completed_at == first.completed_at == AT
        assert replay.response_text == "done"
    assert (await totals(ledger), await usage(ledger)) == counted
    assert counted[0] == (1, 100, gpt4o_cost(40, 60))


@pytest.mark.parametrize(
    ("status", "text", "tokens"),
    [
        ("completed", "other text", TokenUsage(input_tokens=40, output_tokens=60)),
        ("completed", "done", TokenUsage(input_tokens=41, output_tokens=60)),
        ("completed", "done", TokenUsage(input_tokens=40, output_tokens=61)),
        ("completed", "done", TokenUsage(input_tokens=40, output_tokens=60, cached_tokens=5)),
        ("failed", "done", TokenUsage(input_tokens=40, output_tokens=60)),
        ("cancelled", None, None),
        ("interrupted", None, None),
    ],
)
async def test_a_conflicting_ending_is_refused(
    ledger: Ledger, status: str, text: str | None, tokens: TokenUsage | None
) -> None:
    await create(ledger, "t1")
    await finish(ledger, "t1", text="done", usage=TokenUsage(input_tokens=40, output_tokens=60))
    counted = (await totals(ledger), await usage(ledger))

    with pytest.raises(Conflict) as caught:
        await finish(ledger, "t1", status, text=text, usage=tokens)

    assert caught.value.details == {"id": "t1", "status": "completed"}
    stored = await task_row(ledger, "t1")
    assert (stored.status, stored.response_text) == ("completed", "done")
    assert (stored.input_tokens, stored.output_tokens) == (40, 60)
    assert (await totals(ledger), await usage(ledger)) == counted


async def test_completing_a_failed_task_is_refused(ledger: Ledger) -> None:
    await create(ledger, "t1")
    await finish(ledger, "t1", "failed", text="", error={"kind": "timeout"})

    with pytest.raises(Conflict):
        await finish(ledger, "t1", "completed", text="late answer")

    stored = await task_row(ledger, "t1")
    assert (stored.status, stored.error) == ("failed", {"kind": "timeout"})
    assert await totals(ledger) == (0, 0, 0)


@pytest.mark.parametrize("status", ["pending", "streaming", "done", ""])
async def test_finish_needs_a_terminal_status(ledger: Ledger, status: str) -> None:
    await create(ledger, "t1")

    with pytest.raises(InvalidInput) as caught:
        await finish(ledger, "t1", status)

    assert caught.value.field == "status"
    assert (await task_row(ledger, "t1")).status == "pending"


async def test_finish_of_an_unknown_or_foreign_task_is_not_found(ledger: Ledger) -> None:
    bob = await member(ledger, "bob")
    await create(ledger, "bobs-task", "bobs", caller=bob)

    with pytest.raises(NotFound):
        await finish(ledger, "nope")
    with pytest.raises(NotFound):
        await finish(ledger, "bobs-task", usage=TokenUsage(input_tokens=5))

    assert (await task_row(ledger, "bobs-task")).status == "pending"
    assert await usage(ledger) == {}


# -- what counts where -----------------------------------------------------------------


async def test_failed_and_cancelled_spend_counts_but_not_as_tasks(ledger: Ledger) -> None:
    plan = [
        ("ok", "completed", 100, 50),
        ("boom", "failed", 80, 20),
        ("stop", "cancelled", 60, 10),
        ("lost", "interrupted", 30, 5),
        ("ok2", "completed", 10, 10),
    ]
    for task_id, status, input_tokens, output_tokens in plan:
        await create(ledger, task_id)
        await progress(ledger, task_id, "partial")
        await finish(
            ledger,
            task_id,
            status,
            text="partial" if status != "completed" else "full reply",
            usage=TokenUsage(input_tokens=input_tokens, output_tokens=output_tokens),
            error=None if status == "completed" else {"kind": status},
        )

    tokens = sum(i + o for _, _, i, o in plan)
    cost = sum(gpt4o_cost(i, o) for _, _, i, o in plan)
    assert await totals(ledger) == (2, tokens, cost)
    assert await usage(ledger) == {
        ("local", AT.date(), "gpt-4o"): usage_of(
            requests=5,
            failed=2,  # failed and interrupted; a cancellation is the user's choice
            input_tokens=sum(i for _, _, i, _ in plan),
            output_tokens=sum(o for _, _, _, o in plan),
            cost_nano=cost,
        )
    }
    for task_id, status, *_ in plan:
        stored = await task_row(ledger, task_id)
        assert stored.status == status
        assert stored.completed_at == AT
    assert await ledger.verify() == []


async def test_usage_daily_is_per_user_utc_day_and_model(ledger: Ledger) -> None:
    bob = await member(ledger, "bob")
    late_evening_in_new_york = datetime(2025, 6, 1, 23, 30, tzinfo=timezone(timedelta(hours=-5)))
    just_before_midnight = datetime(2025, 6, 1, 23, 59, 59, 999_999, tzinfo=UTC)
    endings = [
        # task, caller, run, model, status, end, input, output
        ("a", None, "r1", "gpt-4o", "completed", AT, 100, 10),
        ("b", None, "r2", "gpt-4o", "failed", just_before_midnight, 50, 5),
        ("c", None, "r1", "gpt-4o", "completed", late_evening_in_new_york, 7, 3),
        ("d", None, "r1", "gpt-4o-mini", "completed", AT, 1, 1),
        ("e", bob, "rb", "gpt-4o", "completed", AT, 20, 2),
        ("f", bob, "rb", "gpt-4o", "interrupted", AT + timedelta(days=1), 9, 0),
    ]
    for task_id, caller, run_id, model, status, end, input_tokens, output_tokens in endings:
        await create(ledger, task_id, run_id, caller=caller, model=model)
        await finish(
            ledger,
            task_id,
            status,
            caller=caller,
            usage=TokenUsage(input_tokens=input_tokens, output_tokens=output_tokens),
            at=end,
        )
    mini = (await task_row(ledger, "d")).cost_nano
    assert mini is not None and mini > 0

    june_1, june_2 = date(2025, 6, 1), date(2025, 6, 2)
    assert await usage(ledger) == {
        ("local", june_1, "gpt-4o"): usage_of(
            requests=2,
            failed=1,
            input_tokens=150,
            output_tokens=15,
            cost_nano=gpt4o_cost(100, 10) + gpt4o_cost(50, 5),
        ),
        # 23:30 in New York is 04:30 the next day in UTC.
        ("local", june_2, "gpt-4o"): usage_of(
            input_tokens=7, output_tokens=3, cost_nano=gpt4o_cost(7, 3)
        ),
        ("local", june_1, "gpt-4o-mini"): usage_of(input_tokens=1, output_tokens=1, cost_nano=mini),
        ("bob", june_1, "gpt-4o"): usage_of(
            input_tokens=20, output_tokens=2, cost_nano=gpt4o_cost(20, 2)
        ),
        ("bob", june_2, "gpt-4o"): usage_of(
            failed=1, input_tokens=9, output_tokens=0, cost_nano=gpt4o_cost(9, 0)
        ),
    }
    stored = await task_row(ledger, "c")
    assert stored.completed_at == late_evening_in_new_york
    assert stored.completed_at is not None and stored.completed_at.utcoffset() == timedelta(0)
    assert await ledger.verify() == []


async def test_default_end_time_is_now(ledger: Ledger) -> None:
    await create(ledger, "t1")
    before = datetime.now(UTC)

    task, _ = await finish(ledger, "t1", usage=TokenUsage(input_tokens=1), at=None)

    assert task.completed_at is not None
    assert before <= task.completed_at <= datetime.now(UTC)
    [key] = await usage(ledger)
    assert key == ("local", task.completed_at.date(), "gpt-4o")


# -- concurrency -----------------------------------------------------------------------


async def test_concurrent_completions_count_each_task_once(ledger: Ledger) -> None:
    n = 50
    ids = [f"task-{index:02d}" for index in range(n)]
    for task_id in ids:
        await create(ledger, task_id)

    def tokens_of(index: int) -> TokenUsage:
        return TokenUsage(input_tokens=100 + index, output_tokens=10 + 3 * index)

    replayed = list(range(0, n, 4))  # 13 tasks completed twice at once
    calls = [(index, "first") for index in range(n)] + [(index, "replay") for index in replayed]
    results = await asyncio.gather(
        *(
            finish(ledger, ids[index], text=f"reply {index}", usage=tokens_of(index))
            for index, _ in calls
        )
    )

    created_by_id: dict[str, int] = {}
    for task, created in results:
        created_by_id[task.id] = created_by_id.get(task.id, 0) + int(created)
        assert task.status == "completed"
    assert created_by_id == dict.fromkeys(ids, 1)  # exactly one call moved each task
    tokens = sum(tokens_of(i).input_tokens + tokens_of(i).output_tokens for i in range(n))
    cost = sum(gpt4o_cost(tokens_of(i).input_tokens, tokens_of(i).output_tokens) for i in range(n))
    assert await totals(ledger) == (n, tokens, cost)
    assert await usage(ledger) == {
        ("local", AT.date(), "gpt-4o"): usage_of(
            requests=n,
            input_tokens=sum(tokens_of(i).input_tokens for i in range(n)),
            output_tokens=sum(tokens_of(i).output_tokens for i in range(n)),
            cost_nano=cost,
        )
    }
    for index, task_id in enumerate(ids):
        stored = await task_row(ledger, task_id)
        assert (stored.status, stored.response_text) == ("completed", f"reply {index}")
        assert stored.cost_nano == gpt4o_cost(tokens_of(index).input_tokens, 10 + 3 * index)
    assert await ledger.verify() == []


async def test_concurrent_mixed_endings_and_conflicts(ledger: Ledger) -> None:
    n = 30
    statuses = ["completed", "failed", "cancelled"]
    for index in range(n):
        await create(ledger, f"t{index}", run_id=f"run-{index % 3}")

    async def end(index: int, status: str) -> str:
        try:
            _, created = await finish(
                ledger,
                f"t{index}",
                status,
                text=f"text {index}",
                usage=TokenUsage(input_tokens=index, output_tokens=index),
            )
        except Conflict:
            return "conflict"
        return "moved" if created else "replayed"

    # Each task is ended twice at once: with its own status, and with the next one's.
    outcomes = await asyncio.gather(
        *(end(index, statuses[(index + k) % 3]) for index in range(n) for k in (0, 1))
    )

    # Per task, exactly one ending moved it and the other was refused.
    pairs = [sorted(outcomes[2 * index : 2 * index + 2]) for index in range(n)]
    assert pairs == [["conflict", "moved"]] * n
    async with ledger.database.reading() as session:
        result = await session.execute(
            select(Task.status, func.count(), func.sum(Task.input_tokens)).group_by(Task.status)
        )
        by_status = {status: (count, total) for status, count, total in result}
    assert sum(count for count, _ in by_status.values()) == n
    assert sum(int(total) for _, total in by_status.values()) == sum(range(n))
    completed = by_status.get("completed", (0, 0))[0]
    run_totals = [await totals(ledger, f"run-{k}") for k in range(3)]
    assert sum(t[0] for t in run_totals) == completed
    assert sum(t[1] for t in run_totals) == 2 * sum(range(n))
    assert sum(t[2] for t in run_totals) == sum(gpt4o_cost(i, i) for i in range(n))
    [day] = (await usage(ledger)).values()
    assert day["requests"] == n
    assert day["failed_requests"] == by_status.get("failed", (0, 0))[0]
    assert await ledger.verify() == []
