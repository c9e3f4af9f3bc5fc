"""`Database.looking_up()`: chatledger's own one-statement lookups (a request's API key).
On PostgreSQL they run without a transaction, saving its BEGIN and COMMIT round trips;
they are never a caller's, whose reads must stay behind the row-level security wall."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import psycopg._connection_base as connection_base
import pytest
from sqlalchemy import text

from chatledger import Ledger
from chatledger.db import walls
from chatledger.tenants.caller import Caller


@pytest.fixture
def commands(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[bytes]]:
    """The transaction commands psycopg sends (BEGIN, COMMIT, …)."""
    sent: list[bytes] = []
    original = connection_base.BaseConnection._exec_command

    def record(self: Any, command: Any, result_format: int = 0) -> Any:
        sent.append(bytes(command) if isinstance(command, bytes | bytearray) else b"")
        return original(self, command, result_format)

    monkeypatch.setattr(connection_base.BaseConnection, "_exec_command", record)
    yield sent


async def test_a_lookup_needs_no_transaction_on_postgresql(
    ledger: Ledger, commands: list[bytes]
) -> None:
    if ledger.database.is_sqlite:
        pytest.skip("PostgreSQL's round trips")
    async with ledger.database.looking_up() as session:
        assert await session.scalar(text("SELECT 41 + 1")) == 42
    assert not [c for c in commands if c.startswith((b"BEGIN", b"COMMIT"))]
    async with ledger.database.reading() as session:  # a read still has its snapshot
        assert await session.scalar(text("SELECT 1")) == 1
    # (BEGIN ISOLATION LEVEL READ COMMITTED once the pool set the connection's level back)
    assert len([c for c in commands if c.startswith(b"BEGIN")]) == 1


async def test_a_lookup_answers_on_sqlite_too(ledger: Ledger) -> None:
    async with ledger.database.looking_up() as session:
        assert await session.scalar(text("SELECT 41 + 1")) == 42


async def test_a_caller_cannot_look_up_past_the_wall(ledger: Ledger) -> None:
    with walls.acting_as(Caller("p", "u")), pytest.raises(RuntimeError, match="reading"):
        async with ledger.database.looking_up():
            pass
