"""A batch cut off as PostgreSQL's COPY of its rows starts (db/interrupted.py).

psycopg, cancelled while a COPY … FROM STDIN starts, asks the server to cancel and waits
for the statement's first answer. When the cancel arrives after the server has answered
"send the rows", the connection is left in the middle of the COPY: the session's
rollback failed "another command is already in progress", in place of the cancellation,
and the connection never went back to the pool. The race is seen only now and then under
load (the chaos test's batches cut off at any moment); here it is made to happen every
time: the request is cancelled as its COPY starts, and the cancel the driver sends the
server is held back, as one that arrives too late.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from fastapi import FastAPI
from psycopg import AsyncConnection, AsyncCursor

from chatledger.server.deps import AppState
from tests.server.conftest import Account
from tests.server.test_batch_bulk import interaction
from tests.server.test_tasks_api import assert_no_drift


@pytest.fixture
def copy_cut_off_too_late(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Cancels the task that starts the first COPY, as it starts; the driver's cancel of
    the server's statement does nothing. Yields the COPY statements cut off."""
    cut_off: list[str] = []
    starting = AsyncCursor._start_copy_gen

    def start_copy(cursor: AsyncCursor[Any], statement: Any, params: Any = None) -> Any:
        if not cut_off:
            cut_off.append(str(statement))
            task = asyncio.current_task()
            assert task is not None
            task.cancel()  # lands at the driver's first wait for the server's answer
        return starting(cursor, statement, params)

    async def too_late(_connection: AsyncConnection[Any], **_: Any) -> None:
        return None

    monkeypatch.setattr(AsyncCursor, "_start_copy_gen", start_copy)
    monkeypatch.setattr(AsyncConnection, "_try_cancel", too_late)
    return cut_off


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
async def test_a_batch_cut_off_as_its_copy_starts_is_cancelled_and_lands_once_sent_again(
    app: FastAPI, alice: Account, copy_cut_off_too_late: list[str]
) -> None:
    items = [interaction(n) for n in range(20)]
    request = asyncio.create_task(alice.client.post("/v1/batch", json={"items": items}))
    # The cancellation, not a driver error from the rollback after it.
    with pytest.raises(asyncio.CancelledError):
        await request
    assert copy_cut_off_too_late and "COPY" in copy_cut_off_too_late[0]

    # The connection left mid-COPY went out of the pool, not back into it.
    state: AppState = app.state.chatledger
    assert state.database.write_engine.sync_engine.pool.checkedout() == 0

    again = await alice.client.post("/v1/batch", json={"items": items})
    assert again.status_code == 200, again.text
    assert again.json()["created"] == len(items)
    run = (await alice.client.get("/v1/runs/trip")).json()
    assert (run["task_count"], run["message_count"]) == (len(items), 2 * len(items))
    await assert_no_drift(app)
