"""`verify`: after a few hundred mixed turns (replies, failures, retries, cancellations,
priced tasks written through the services, much of it concurrently) every aggregate equals
the rows it sums; drift written around chatledger is named field by field, and
`fix=True` repairs exactly that."""

from __future__ import annotations

import asyncio
from datetime import date
from typing import Any

from sqlalchemy import func, select, text

from chatledger import Ledger
from chatledger.messages import service as messages
from chatledger.runs.models import Run
from chatledger.tasks import service as tasks
from chatledger.tasks.models import Task
from chatledger.tokens import TokenUsage
from chatledger.usage.models import ProjectUsageDaily, UsageDaily
from chatledger.verify import USAGE_FIELDS, Drift

RUNS = [f"run-{n}" for n in range(6)]
ROUNDS = 40


async def reply(ledger: Ledger, run_id: str, content: str) -> str:
    result = await (await ledger.chat(content, run_id=run_id)).result()
    assert result.status == "completed", result
    return result.status


async def fail_then_retry(ledger: Ledger, run_id: str, content: str) -> str:
    failed = await (await ledger.chat(content, run_id=run_id, settings={"fail_at": 1})).result()
    assert failed.status == "failed", failed
    retried = await (await ledger.retry(failed.user_message_id)).result()
    assert retried.status == "completed", retried
    assert retried.user_message_id == failed.user_message_id
    return "retried"


async def fail_only(ledger: Ledger, run_id: str, content: str) -> str:
    failed = await (await ledger.chat(content, run_id=run_id, settings={"fail_at": 1})).result()
    assert failed.status == "failed", failed
    return "failed"


async def cancel_midway(ledger: Ledger, run_id: str, content: str) -> str:
    turn = await ledger.chat(
        content + " with quite a few more words to stream slowly",
        run_id=run_id,
        settings={"delay_ms": 5},
    )
    async for event in turn.events():
        if event.kind == "delta":
            break
    turn.cancel()
    assert (await turn.result()).status == "cancelled"
    return "cancelled"


async def service_task(ledger: Ledger, run_id: str, index: int, status: str) -> str:
    """What an app that calls its own model does: task, progress, ending, messages."""
    task_id = f"{run_id}-svc-{index}"
    usage = TokenUsage(input_tokens=200 + index, output_tokens=30 + index, cached_tokens=index % 7)
    async with ledger.database.transaction() as session:
        user, _ = await messages.append(
            session,
            ledger.caller,
            run_id,
            messages.NewMessage(role="user", content=f"question {index}"),
        )
        await tasks.create(
            session,
            ledger.caller,
            tasks.NewTask(
                run_id=run_id,
                id=task_id,
                model="gpt-4o",
                provider="openai",
                user_message_id=user.id,
            ),
        )
    async with ledger.database.transaction() as session:
        await tasks.progress(session, ledger.caller, task_id, "partial")
    async with ledger.database.transaction() as session:
        task, created = await tasks.finish(
            session,
            ledger.caller,
            task_id,
            tasks.Outcome(
                status=status,
                response_text=f"answer {index}",
                usage=usage,
                error=None if status == "completed" else {"kind": status},
            ),
        )
        assert created
        if status == "completed":
            await messages.append(
                session,
                ledger.caller,
                run_id,
                messages.NewMessage(role="assistant", content=task.response_text, task_id=task.id),
            )
    # A client retrying its completion call changes nothing.
    async with ledger.database.transaction() as session:
        _, created = await tasks.finish(
            session,
            ledger.caller,
            task_id,
            tasks.Outcome(status=status, response_text=f"answer {index}", usage=usage),
        )
        assert not created
    return status


async def one_turn(ledger: Ledger, run_id: str, index: int) -> str:
    content = f"message {index} in {run_id}"
    match index % 8:
        case 0 | 1 | 4:
            return await reply(ledger, run_id, content)
        case 2:
            return await fail_then_retry(ledger, run_id, content)
        case 3:
            return await service_task(ledger, run_id, index, "completed")
        case 5:
            return await service_task(ledger, run_id, index, "failed")
        case 6:
            return await service_task(ledger, run_id, index, "cancelled")
        case _:
            if index % 16 == 7:
                return await cancel_midway(ledger, run_id, content)
            return await fail_only(ledger, run_id, content)


async def busy_day(ledger: Ledger) -> list[str]:
    done: list[str] = []
    for run_id in RUNS:  # each run's first turn creates and names it
        done.append(await reply(ledger, run_id, f"Hello from {run_id}"))
    for round_ in range(ROUNDS):
        # One turn in every run at once; a run's own turns stay in order.
        done.extend(
            await asyncio.gather(
                *(one_turn(ledger, run_id, round_ * 3 + k) for k, run_id in enumerate(RUNS))
            )
        )
    return done


async def count(ledger: Ledger, model: type[Any]) -> int:
    async with ledger.database.reading() as session:
        return int(await session.scalar(select(func.count()).select_from(model)) or 0)


async def execute(ledger: Ledger, sql: str, **params: Any) -> None:
    async with ledger.database.transaction() as session:
        await session.execute(text(sql), params)


async def run_values(ledger: Ledger, run_id: str) -> dict[str, int]:
    async with ledger.database.reading() as session:
        run = await session.get(Run, ("local", run_id))
        assert run is not None
        return {
            "task_count": run.task_count,
            "message_count": run.message_count,
            "total_tokens": run.total_tokens,
            "total_cost_nano": run.total_cost_nano,
        }


async def usage_table(ledger: Ledger) -> dict[tuple[str, str, date, str], dict[str, int]]:
    async with ledger.database.reading() as session:
        return {
            (row.project_id, row.user_id, row.day, row.model): {
                name: getattr(row, name) for name in USAGE_FIELDS
            }
            for row in await session.scalars(select(UsageDaily))
        }


async def test_an_empty_ledger_has_no_drift(ledger: Ledger) -> None:
    assert await ledger.verify() == []
    assert await ledger.verify(fix=True) == []


async def test_mixed_turns_leave_no_drift_and_drift_is_named_and_repaired(
    ledger: Ledger,
) -> None:
    done = await busy_day(ledger)

    assert len(done) == len(RUNS) * (ROUNDS + 1)
    assert {"completed", "retried", "failed", "cancelled"} <= set(done)
    # A retried message took two tasks; every other turn one.
    assert await count(ledger, Task) == sum(2 if kind == "retried" else 1 for kind in done) > 250
    assert await ledger.verify() == []

    # Every kind of ending left its mark where it should.
    async with ledger.database.reading() as session:
        by_status = dict(
            (status, n)
            for status, n in await session.execute(
                select(Task.status, func.count()).group_by(Task.status)
            )
        )
        live = await session.scalar(
            select(func.count()).select_from(Task).where(Task.status.in_(["pending", "streaming"]))
        )
    assert live == 0
    assert set(by_status) == {"completed", "failed", "cancelled"}
    usage_before = await usage_table(ledger)
    models = {key[3] for key in usage_before}
    assert {"echo", "gpt-4o"} <= models
    gpt = next(key for key in usage_before if key[3] == "gpt-4o")
    echo = next(key for key in usage_before if key[3] == "echo")
    assert usage_before[gpt]["cost_nano"] > 0
    assert usage_before[echo]["failed_requests"] > 0
    runs_before = {run_id: await run_values(ledger, run_id) for run_id in RUNS}

    # -- drift, written around chatledger -------------------------------------------------
    await execute(
        ledger,
        "UPDATE runs SET total_tokens = total_tokens + 7 WHERE project_id = 'local' AND id = :id",
        id="run-0",
    )
    await execute(
        ledger,
        "UPDATE runs SET message_count = message_count - 2 WHERE project_id = 'local' AND id = :id",
        id="run-1",
    )
    await execute(
        ledger,
        "UPDATE runs SET task_count = 0, total_cost_nano = 1"
        " WHERE project_id = 'local' AND id = :id",
        id="run-2",
    )
    await execute(
        ledger,
        "UPDATE usage_daily SET cost_nano = cost_nano + 1000"
        " WHERE project_id = :p AND user_id = :u AND day = :d AND model = :m",
        p=gpt[0],
        u=gpt[1],
        d=gpt[2],
        m=gpt[3],
    )
    await execute(
        ledger,
        "DELETE FROM usage_daily"
        " WHERE project_id = :p AND user_id = :u AND day = :d AND model = :m",
        p=echo[0],
        u=echo[1],
        d=echo[2],
        m=echo[3],
    )
    bogus = ("local", "ghost", date(2020, 1, 1), "bogus-model")
    await execute(
        ledger,
        "INSERT INTO usage_daily (project_id, user_id, day, model, requests, failed_requests,"
        " input_tokens, output_tokens, cached_tokens, reasoning_tokens, cost_nano)"
        " VALUES (:p, :u, :d, :m, 3, 1, 100, 0, 0, 0, 999)",
        p=bogus[0],
        u=bogus[1],
        d=bogus[2],
        m=bogus[3],
    )

    expected = {
        Drift(
            "runs",
            ("local", "run-0"),
            "total_tokens",
            runs_before["run-0"]["total_tokens"] + 7,
            runs_before["run-0"]["total_tokens"],
        ),
        Drift(
            "runs",
            ("local", "run-1"),
            "message_count",
            runs_before["run-1"]["message_count"] - 2,
            runs_before["run-1"]["message_count"],
        ),
        Drift("runs", ("local", "run-2"), "task_count", 0, runs_before["run-2"]["task_count"]),
        Drift(
            "runs",
            ("local", "run-2"),
            "total_cost_nano",
            1,
            runs_before["run-2"]["total_cost_nano"],
        ),
        Drift(
            "usage_daily",
            gpt,
            "cost_nano",
            usage_before[gpt]["cost_nano"] + 1000,
            usage_before[gpt]["cost_nano"],
        ),
        # The deleted row: every field it had is now missing.
        *(
            Drift("usage_daily", echo, name, 0, value)
            for name, value in usage_before[echo].items()
            if value
        ),
        # The bogus row: every field it claims is backed by no task.
        Drift("usage_daily", bogus, "requests", 3, 0),
        Drift("usage_daily", bogus, "failed_requests", 1, 0),
        Drift("usage_daily", bogus, "input_tokens", 100, 0),
        Drift("usage_daily", bogus, "cost_nano", 999, 0),
    }
    assert runs_before["run-2"]["task_count"] > 0
    assert runs_before["run-2"]["total_cost_nano"] != 1

    found = await ledger.verify()

    assert len(found) == len(set(found))  # each difference named once
    assert set(found) == expected
    named = {str(drift) for drift in found}
    assert (
        f"runs local/run-0: total_tokens is {runs_before['run-0']['total_tokens'] + 7},"
        f" rows say {runs_before['run-0']['total_tokens']}"
    ) in named
    assert "usage_daily local/ghost/2020-01-01/bogus-model: requests is 3, rows say 0" in named

    # -- repair -------------------------------------------------------------------------
    repaired = await ledger.verify(fix=True)

    assert set(repaired) == expected
    assert await ledger.verify() == []
    assert {run_id: await run_values(ledger, run_id) for run_id in RUNS} == runs_before
    after = await usage_table(ledger)
    assert after.get(bogus) is None
    assert after == usage_before


async def test_repair_of_a_run_whose_rows_are_all_gone(ledger: Ledger) -> None:
    result = await (await ledger.chat("hello", run_id="r1")).result()
    await execute(
        ledger, "DELETE FROM tasks WHERE project_id = 'local' AND id = :id", id=result.task_id
    )
    await execute(ledger, "DELETE FROM messages WHERE project_id = 'local' AND run_id = 'r1'")

    found = await ledger.verify()

    fields = {(d.table, d.field): (d.stored, d.expected) for d in found}
    assert fields[("runs", "message_count")] == (2, 0)
    assert fields[("runs", "task_count")] == (1, 0)
    assert fields[("runs", "total_tokens")][1] == 0
    assert fields[("usage_daily", "requests")] == (1, 0)
    await ledger.verify(fix=True)
    assert await ledger.verify() == []
    assert await run_values(ledger, "r1") == {
        "task_count": 0,
        "message_count": 0,
        "total_tokens": 0,
        "total_cost_nano": 0,
    }
    assert await usage_table(ledger) == {}


async def totals_table(ledger: Ledger) -> dict[tuple[str, date, str], dict[str, int]]:
    async with ledger.database.reading() as session:
        return {
            (row.project_id, row.day, row.model): {
                name: getattr(row, name) for name in USAGE_FIELDS
            }
            for row in await session.scalars(select(ProjectUsageDaily))
        }


def summed_over_users(
    usage: dict[tuple[str, str, date, str], dict[str, int]],
) -> dict[tuple[str, date, str], dict[str, int]]:
    totals: dict[tuple[str, date, str], dict[str, int]] = {}
    for (project_id, _user, day, model), counters in usage.items():
        row = totals.setdefault((project_id, day, model), dict.fromkeys(USAGE_FIELDS, 0))
        for name, n in counters.items():
            row[name] += n
    return totals


async def test_the_projects_totals_follow_every_write_of_usage_rows(ledger: Ledger) -> None:
    """Migration 0010's triggers: whoever writes usage_daily (the save flow, a hand-written
    fix, a row moved to another day, a deleted row), the project's totals move with it in
    the same statement; verify then names drift of the totals themselves, and repairs it."""
    await reply(ledger, "r1", "hello")
    await fail_only(ledger, "r1", "and again")
    await service_task(ledger, "r1", 1, "completed")
    usage = await usage_table(ledger)
    assert len(usage) == 2  # echo and gpt-4o, today
    assert await totals_table(ledger) == summed_over_users(usage)

    (project_id, user_id, day, model) = next(key for key in usage if key[3] == "echo")
    by_key = {"p": project_id, "u": user_id, "d": day, "m": model}
    where = "project_id = :p AND user_id = :u AND day = :d AND model = :m"
    # Another user's row on the same key, a change in place, a row moved to another day.
    await execute(
        ledger,
        "INSERT INTO usage_daily (project_id, user_id, day, model, requests, failed_requests,"
        " input_tokens, output_tokens, cached_tokens, reasoning_tokens, cost_nano)"
        " VALUES (:p, 'someone-else', :d, :m, 2, 1, 30, 20, 0, 0, 5)",
        **by_key,
    )
    await execute(ledger, f"UPDATE usage_daily SET input_tokens = 1 WHERE {where}", **by_key)
    await execute(
        ledger,
        f"UPDATE usage_daily SET day = :other WHERE {where}",
        other=date(2020, 1, 1),
        **by_key,
    )
    usage = await usage_table(ledger)
    totals = await totals_table(ledger)
    assert totals == summed_over_users(usage)
    assert (project_id, date(2020, 1, 1), model) in totals
    assert totals[(project_id, day, model)]["requests"] == 2  # someone else's alone now
    # Deleting the last row of a key takes its totals row away too.
    await execute(ledger, "DELETE FROM usage_daily WHERE day = :d", d=date(2020, 1, 1))
    assert (project_id, date(2020, 1, 1), model) not in await totals_table(ledger)
    assert await totals_table(ledger) == summed_over_users(await usage_table(ledger))
    # Only the usage rows drifted (from their tasks), not the totals (from the usage rows).
    assert {drift.table for drift in await ledger.verify()} == {"usage_daily"}

    # Drift of the totals themselves: written past the triggers.
    await execute(
        ledger,
        "UPDATE project_usage_daily SET cost_nano = cost_nano + 9"
        " WHERE project_id = :p AND day = :d AND model = :m",
        p=project_id,
        d=day,
        m=model,
    )
    await execute(
        ledger,
        "INSERT INTO project_usage_daily (project_id, day, model, requests, failed_requests,"
        " input_tokens, output_tokens, cached_tokens, reasoning_tokens, cost_nano)"
        " VALUES ('local', :d, 'ghost', 1, 0, 0, 0, 0, 0, 0)",
        d=date(2021, 1, 1),
    )
    found = {(d.table, d.key, d.field) for d in await ledger.verify()}
    assert ("project_usage_daily", (project_id, day, model), "cost_nano") in found
    assert ("project_usage_daily", ("local", date(2021, 1, 1), "ghost"), "requests") in found

    await ledger.verify(fix=True)

    assert await ledger.verify() == []
    usage = await usage_table(ledger)
    assert await totals_table(ledger) == summed_over_users(usage)
    assert {key[3] for key in usage} == {"echo", "gpt-4o"}
