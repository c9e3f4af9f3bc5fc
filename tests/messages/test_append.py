"""Appending messages: rows (never a rewritten array), idempotent by id, gapless positions,
counted into their run exactly once, and visible only to the run's owner."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta, timezone

import pytest
from sqlalchemy import func, select

from chatledger import Conflict, InvalidInput, Ledger, NotFound
from chatledger.messages import service as messages
from chatledger.messages.models import Message
from chatledger.runs import service as runs
from chatledger.runs.models import Run
from chatledger.tenants import service as tenants
from chatledger.tenants.caller import Caller


async def make_run(ledger: Ledger, run_id: str, caller: Caller | None = None) -> str:
    async with ledger.database.transaction() as session:
        run, _ = await runs.ensure(session, caller or ledger.caller, run_id, name="a run")
        return run.id


async def append(
    ledger: Ledger,
    run_id: str,
    role: str = "user",
    content: str = "hello",
    *,
    caller: Caller | None = None,
    **fields: object,
) -> tuple[Message, bool]:
    new = messages.NewMessage(role=role, content=content, **fields)  # type: ignore[arg-type]
    async with ledger.database.transaction() as session:
        return await messages.append(session, caller or ledger.caller, run_id, new)


async def rows(ledger: Ledger, run_id: str, project_id: str = "local") -> list[Message]:
    async with ledger.database.reading() as session:
        stmt = (
            select(Message)
            .where(Message.project_id == project_id, Message.run_id == run_id)
            .order_by(Message.seq)
        )
        return list(await session.scalars(stmt))


async def stored_run(ledger: Ledger, run_id: str, project_id: str = "local") -> Run:
    async with ledger.database.reading() as session:
        run = await session.get(Run, (project_id, run_id))
        assert run is not None
        return run


async def other_user(ledger: Ledger, user_id: str = "bob", project_id: str = "local") -> Caller:
    async with ledger.database.transaction() as session:
        await tenants.ensure_project(session, project_id)
        await tenants.ensure_user(session, user_id)
    return Caller(project_id, user_id)


# -- one append ------------------------------------------------------------------------


async def test_append_stores_a_row_and_counts_it(ledger: Ledger) -> None:
    await make_run(ledger, "r1")
    at = datetime(2025, 3, 4, 5, 6, 7, 890123, tzinfo=UTC)

    message, created = await append(
        ledger,
        "r1",
        "user",
        "What is the capital of France?",
        id="m-1",
        metadata={"client": "web"},
        created_at=at,
    )

    assert created is True
    assert (message.id, message.seq, message.role) == ("m-1", 1, "user")
    [row] = await rows(ledger, "r1")
    assert row.id == "m-1"
    assert row.run_id == "r1"
    assert row.seq == 1
    assert row.role == "user"
    assert row.content == "What is the capital of France?"
    assert row.status == "complete"
    assert row.error is None
    assert row.metadata_ == {"client": "web"}
    assert row.created_at == at
    assert row.created_at.tzinfo is not None
    assert row.created_at.utcoffset() == timedelta(0)
    run = await stored_run(ledger, "r1")
    assert run.message_count == 1
    assert run.last_message_at == at
    assert run.last_message_preview == "What is the capital of France?"


async def test_server_generates_an_id_when_none_is_given(ledger: Ledger) -> None:
    await make_run(ledger, "r1")

    first, _ = await append(ledger, "r1", content="one")
    second, _ = await append(ledger, "r1", content="two")

    assert first.id != second.id
    assert [r.id for r in await rows(ledger, "r1")] == [first.id, second.id]


async def test_preview_is_cut_to_200_characters(ledger: Ledger) -> None:
    await make_run(ledger, "r1")
    long = "x" * 150 + " " + "y" * 300

    message, _ = await append(ledger, "r1", content=long)

    assert message.content == long  # the message itself is never cut
    run = await stored_run(ledger, "r1")
    assert run.last_message_preview == long[:200]


async def test_created_at_in_another_zone_is_stored_as_utc(ledger: Ledger) -> None:
    await make_run(ledger, "r1")
    local = datetime(2025, 1, 1, 23, 30, tzinfo=timezone(timedelta(hours=-5)))

    await append(ledger, "r1", id="m1", created_at=local)

    [row] = await rows(ledger, "r1")
    assert row.created_at == local
    assert row.created_at.utcoffset() == timedelta(0)
    assert (row.created_at.day, row.created_at.hour) == (2, 4)


# -- idempotency -----------------------------------------------------------------------


async def test_same_message_twice_is_one_row(ledger: Ledger) -> None:
    await make_run(ledger, "r1")

    first, created_first = await append(ledger, "r1", "user", "hi", id="m1")
    again, created_again = await append(ledger, "r1", "user", "hi", id="m1")

    assert (created_first, created_again) == (True, False)
    assert (again.id, again.seq, again.content) == ("m1", 1, "hi")
    assert again.created_at == first.created_at
    assert len(await rows(ledger, "r1")) == 1
    assert (await stored_run(ledger, "r1")).message_count == 1


async def test_resending_after_later_messages_keeps_position_and_count(ledger: Ledger) -> None:
    await make_run(ledger, "r1")
    await append(ledger, "r1", "user", "one", id="m1")
    await append(ledger, "r1", "assistant", "two", id="m2")

    again, created = await append(ledger, "r1", "user", "one", id="m1")

    assert created is False
    assert again.seq == 1
    assert [(r.id, r.seq) for r in await rows(ledger, "r1")] == [("m1", 1), ("m2", 2)]
    assert (await stored_run(ledger, "r1")).message_count == 2


@pytest.mark.parametrize(("role", "content"), [("user", "other text"), ("assistant", "hi")])
async def test_same_id_with_other_content_is_a_conflict(
    ledger: Ledger, role: str, content: str
) -> None:
    await make_run(ledger, "r1")
    await append(ledger, "r1", "user", "hi", id="m1")

    with pytest.raises(Conflict) as caught:
        await append(ledger, "r1", role, content, id="m1")

    assert caught.value.details["id"] == "m1"
    [row] = await rows(ledger, "r1")
    assert (row.role, row.content) == ("user", "hi")  # not overwritten
    assert (await stored_run(ledger, "r1")).message_count == 1


async def test_same_id_in_another_run_is_a_conflict(ledger: Ledger) -> None:
    await make_run(ledger, "r1")
    await make_run(ledger, "r2")
    await append(ledger, "r1", "user", "hi", id="m1")

    with pytest.raises(Conflict):
        await append(ledger, "r2", "user", "hi", id="m1")

    assert await rows(ledger, "r2") == []
    assert (await stored_run(ledger, "r2")).message_count == 0
    assert (await stored_run(ledger, "r1")).message_count == 1


async def test_ids_are_per_project(ledger: Ledger) -> None:
    elsewhere = await other_user(ledger, "local", project_id="other")
    await make_run(ledger, "r1")
    await make_run(ledger, "r1", caller=elsewhere)

    _, here = await append(ledger, "r1", "user", "hi", id="m1")
    _, there = await append(ledger, "r1", "user", "something else", id="m1", caller=elsewhere)

    assert (here, there) == (True, True)
    assert [r.content for r in await rows(ledger, "r1")] == ["hi"]
    assert [r.content for r in await rows(ledger, "r1", "other")] == ["something else"]


# -- positions -------------------------------------------------------------------------


async def test_seq_is_gapless_from_one(ledger: Ledger) -> None:
    await make_run(ledger, "r1")
    for index in range(7):
        role = "user" if index % 2 == 0 else "assistant"
        message, created = await append(ledger, "r1", role, f"turn {index}", id=f"m{index}")
        assert created
        assert message.seq == index + 1

    stored = await rows(ledger, "r1")
    assert [r.seq for r in stored] == list(range(1, 8))
    assert [r.id for r in stored] == [f"m{i}" for i in range(7)]
    assert (await stored_run(ledger, "r1")).message_count == 7


async def test_runs_number_their_messages_independently(ledger: Ledger) -> None:
    await make_run(ledger, "r1")
    await make_run(ledger, "r2")

    for index in range(3):
        await append(ledger, "r1", content=f"a{index}")
        await append(ledger, "r2", content=f"b{index}")

    assert [r.seq for r in await rows(ledger, "r1")] == [1, 2, 3]
    assert [r.seq for r in await rows(ledger, "r2")] == [1, 2, 3]


async def test_list_messages_is_in_order(ledger: Ledger) -> None:
    await make_run(ledger, "r1")
    for index in range(4):
        await append(ledger, "r1", content=f"c{index}", id=f"m{index}")

    async with ledger.database.reading() as session:
        listed = await messages.list_messages(session, ledger.caller, "r1")

    assert [m.id for m in listed] == ["m0", "m1", "m2", "m3"]


# -- validation ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"role": "robot"}, "role"),
        ({"role": ""}, "role"),
        ({"role": "USER"}, "role"),
        ({"status": "done"}, "status"),
        ({"status": ""}, "status"),
        ({"id": "has space"}, "id"),
        ({"id": ""}, "id"),
        ({"id": "x" * 129}, "id"),
        ({"id": "slash/y"}, "id"),
        ({"id": "ünïcode"}, "id"),
    ],
)
async def test_invalid_input_names_the_field(
    ledger: Ledger, fields: dict[str, str], field: str
) -> None:
    await make_run(ledger, "r1")
    values: dict[str, object] = {"role": "user", "content": "hi", **fields}

    with pytest.raises(InvalidInput) as caught:
        new = messages.NewMessage(**values)  # type: ignore[arg-type]
        async with ledger.database.transaction() as session:
            await messages.append(session, ledger.caller, "r1", new)

    assert caught.value.field == field
    assert caught.value.details == {"field": field}
    assert await rows(ledger, "r1") == []
    assert (await stored_run(ledger, "r1")).message_count == 0


async def test_longest_and_odd_but_valid_ids_are_accepted(ledger: Ledger) -> None:
    await make_run(ledger, "r1")
    ids = ["x" * 128, "a", "A.b_c:d-9"]
    for message_id in ids:
        _, created = await append(ledger, "r1", id=message_id, content=message_id)
        assert created

    assert [r.id for r in await rows(ledger, "r1")] == ids


# -- visibility ------------------------------------------------------------------------


async def test_missing_run_is_not_found(ledger: Ledger) -> None:
    with pytest.raises(NotFound) as caught:
        await append(ledger, "no-such-run")

    assert caught.value.details == {"kind": "run", "id": "no-such-run"}


async def test_another_users_run_is_not_found(ledger: Ledger) -> None:
    bob = await other_user(ledger, "bob")
    await make_run(ledger, "bobs", caller=bob)

    with pytest.raises(NotFound) as caught:
        await append(ledger, "bobs", content="sneaky", id="m1")

    assert caught.value.details["kind"] == "run"
    assert await rows(ledger, "bobs") == []
    assert (await stored_run(ledger, "bobs")).message_count == 0
    # The owner can still use that id: the refused append left nothing behind.
    _, created = await append(ledger, "bobs", content="mine", id="m1", caller=bob)
    assert created


async def test_another_projects_run_is_not_found(ledger: Ledger) -> None:
    elsewhere = await other_user(ledger, "local", project_id="other")
    await make_run(ledger, "theirs", caller=elsewhere)

    with pytest.raises(NotFound):
        await append(ledger, "theirs", content="sneaky")

    assert await rows(ledger, "theirs", "other") == []


async def test_a_caller_who_sees_all_may_append_to_a_users_run(ledger: Ledger) -> None:
    bob = await other_user(ledger, "bob")
    await make_run(ledger, "bobs", caller=bob)
    admin = Caller("local", "admin", sees_all=True)

    _, created = await append(ledger, "bobs", "system", "be brief", caller=admin)

    assert created
    assert [r.role for r in await rows(ledger, "bobs")] == ["system"]


async def test_get_of_another_users_message_is_not_found(ledger: Ledger) -> None:
    bob = await other_user(ledger, "bob")
    await make_run(ledger, "bobs", caller=bob)
    await append(ledger, "bobs", content="private", id="m1", caller=bob)

    async with ledger.database.reading() as session:
        assert (await messages.get(session, bob, "m1")).content == "private"
        with pytest.raises(NotFound):
            await messages.get(session, ledger.caller, "m1")
        with pytest.raises(NotFound):
            await messages.list_messages(session, ledger.caller, "bobs")


# -- concurrency -----------------------------------------------------------------------


async def test_concurrent_appends_are_gapless_and_counted_once(ledger: Ledger) -> None:
    await make_run(ledger, "busy")
    # 30 appends at once: 20 distinct messages, 10 of them sent twice (a client retrying).
    unique = [(f"m{index:02d}", f"message {index}") for index in range(20)]
    sends = unique + unique[:10]

    results = await asyncio.gather(
        *(append(ledger, "busy", "user", content, id=mid) for mid, content in sends)
    )

    created = [message.id for message, was_created in results if was_created]
    assert sorted(created) == [mid for mid, _ in unique]  # each stored by exactly one call
    for (message, _), (mid, content) in zip(results, sends, strict=True):
        assert (message.id, message.content) == (mid, content)
    stored = await rows(ledger, "busy")
    assert len(stored) == 20
    assert [r.seq for r in stored] == list(range(1, 21))
    assert sorted(r.id for r in stored) == [mid for mid, _ in unique]
    run = await stored_run(ledger, "busy")
    assert run.message_count == len(stored)
    # A duplicate answers with the stored row, position included.
    by_id = {r.id: r.seq for r in stored}
    assert all(message.seq == by_id[message.id] for message, _ in results)
    assert await ledger.verify() == []


async def test_concurrent_appends_to_many_runs(ledger: Ledger) -> None:
    run_ids = [f"run-{n}" for n in range(3)]
    for run_id in run_ids:
        await make_run(ledger, run_id)

    await asyncio.gather(
        *(
            append(ledger, run_id, content=f"{run_id} {index}", id=f"{run_id}-m{index}")
            for index in range(8)
            for run_id in run_ids
        )
    )

    async with ledger.database.reading() as session:
        result = await session.execute(
            select(Message.run_id, func.count())
            .where(Message.project_id == "local")
            .group_by(Message.run_id)
        )
        counts = {run_id: count for run_id, count in result}
    assert counts == dict.fromkeys(run_ids, 8)
    for run_id in run_ids:
        assert [r.seq for r in await rows(ledger, run_id)] == list(range(1, 9))
        assert (await stored_run(ledger, run_id)).message_count == 8
    assert await ledger.verify() == []


async def test_concurrent_appends_of_one_id_with_other_content(ledger: Ledger) -> None:
    await make_run(ledger, "r1")

    async def attempt(content: str) -> str:
        try:
            _, created = await append(ledger, "r1", "user", content, id="m1")
        except Conflict:
            return "conflict"
        return "created" if created else "duplicate"

    outcomes = await asyncio.gather(*(attempt(f"version {n % 2}") for n in range(10)))

    [row] = await rows(ledger, "r1")
    assert outcomes.count("created") == 1
    # Those who sent what was stored got it back; the others were refused.
    same = sum(1 for n in range(10) if f"version {n % 2}" == row.content)
    assert outcomes.count("duplicate") == same - 1
    assert outcomes.count("conflict") == 10 - same
    assert row.seq == 1
    assert (await stored_run(ledger, "r1")).message_count == 1
