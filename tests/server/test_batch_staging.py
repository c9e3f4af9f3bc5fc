"""On PostgreSQL a caller's batch goes through temporary tables: row-level security
refuses COPY into the tables themselves (interactions/bulk_statements.py). A pooled
connection keeps its staging tables, made by whichever caller role stages first and
granted to the other, rather than making and dropping them for every batch."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Any

import httpx
import psycopg
import pytest
from fastapi import FastAPI
from sqlalchemy import Table, make_url

from chatledger import Settings
from chatledger.db import walls
from chatledger.interactions import bulk_statements
from tests.server.conftest import Account
from tests.server.test_batch_bulk import DAY, interaction
from tests.server.test_tasks_api import assert_no_drift

pytestmark = pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """The app's pool holds a single connection: every batch stages through it."""
    return settings.model_copy(update={"db_pool_size": 1, "db_max_overflow": 0})


@pytest.fixture
def catalogue(settings: Settings) -> Iterator[psycopg.Connection[Any]]:
    """A connection of the database's owner, outside the app's pool."""
    url = make_url(settings.database_url).set(drivername="postgresql")
    with psycopg.connect(url.render_as_string(hide_password=False), autocommit=True) as c:
        yield c


def staging_tables(catalogue: psycopg.Connection[Any]) -> dict[str, int]:
    """Every session's staging tables, by name: their oids."""
    rows = catalogue.execute(
        "SELECT relname, oid FROM pg_class WHERE relpersistence = 't' AND relname LIKE 'staged\\_%'"
    ).fetchall()
    return {name: oid for name, oid in rows}


async def upload(client: httpx.AsyncClient, items: list[dict[str, Any]]) -> None:
    answer = await client.post("/v1/batch", json={"items": items})
    assert answer.status_code == 200, answer.text
    assert answer.json()["created"] == len(items)


async def test_a_connection_keeps_its_staging_tables_for_both_caller_roles(
    app: FastAPI,
    alice: Account,
    bob_in_alices_project: httpx.AsyncClient,
    catalogue: psycopg.Connection[Any],
) -> None:
    await upload(alice.client, [interaction(n) for n in range(5)])  # the owner's role
    made = staging_tables(catalogue)
    assert sorted(name.rsplit("_", 1)[0] for name in made) == ["staged_messages", "staged_tasks"]
    for oid in made.values():
        for role in walls.CALLER_ROLES:
            granted = catalogue.execute(
                "SELECT has_table_privilege(%s, %s::oid, 'SELECT, INSERT, DELETE')", (role, oid)
            ).fetchone()
            assert granted == (True,), role

    # Bob, a member, writes as the other caller role: through the same tables.
    await upload(bob_in_alices_project, [interaction(n, run_id="bobs") for n in range(5, 10)])
    await upload(alice.client, [interaction(n) for n in range(10, 15)])

    assert staging_tables(catalogue) == made  # the same tables: none made, none dropped
    runs = {
        run_id: (await alice.client.get(f"/v1/runs/{run_id}")).json() for run_id in ("trip", "bobs")
    }
    assert {run_id: run["task_count"] for run_id, run in runs.items()} == {"trip": 10, "bobs": 5}
    await assert_no_drift(app)


async def test_a_batch_of_several_groups_moves_each_groups_rows_once(
    app: FastAPI, alice: Account, monkeypatch: pytest.MonkeyPatch
) -> None:
    taken: list[str] = []

    class Recorded(bulk_statements.IdTaken):
        def __init__(self, reason: str) -> None:
            taken.append(reason)
            super().__init__(reason)

    monkeypatch.setattr(bulk_statements, "IdTaken", Recorded)
    # A run item between interactions ends a group: two groups in one transaction, each
    # staged through the same tables, which give up each group's rows as they move on.
    items = [
        *(interaction(n) for n in range(3)),
        {"kind": "run", "id": "other", "name": "Other", "created_at": f"{DAY}T09:00:00Z"},
        *(interaction(n, run_id="other") for n in range(3, 6)),
    ]
    answer = await alice.client.post("/v1/batch", json={"items": items})
    assert answer.status_code == 200, answer.text
    assert [r["status"] for r in answer.json()["results"]] == ["created"] * len(items)

    # Stored in bulk, both groups: the second did not meet the first's rows again (a
    # taken id would have sent it the slow way, one item at a time).
    assert taken == []
    for run_id, count in (("trip", 3), ("other", 3)):
        run = (await alice.client.get(f"/v1/runs/{run_id}")).json()
        assert (run["task_count"], run["message_count"]) == (count, 2 * count)
    await assert_no_drift(app)


async def test_staging_tables_taken_back_with_a_savepoint_are_made_again(
    alice: Account, monkeypatch: pytest.MonkeyPatch, catalogue: psycopg.Connection[Any]
) -> None:
    kept = bulk_statements._stage
    staged: list[str] = []

    def failing_first(table: Table, names: tuple[str, ...]) -> Any:
        """The first move inserts its rows twice: a taken id, as a concurrent writer's."""
        stage = kept(table, names)
        staged.append(table.name)
        if len(staged) > 1:
            return stage
        twice = f"{stage.move} UNION ALL {stage.move[stage.move.rindex('SELECT ') :]}"
        return dataclasses.replace(stage, move=twice)

    monkeypatch.setattr(bulk_statements, "_stage", failing_first)
    # The group is rolled back to its savepoint, the tables made in it with it, and its
    # items stored one at a time.
    await upload(alice.client, [interaction(n) for n in range(3)])
    assert staged == ["tasks"]
    assert staging_tables(catalogue) == {}

    await upload(alice.client, [interaction(n) for n in range(3, 6)])  # made again
    assert staged == ["tasks", "tasks", "messages"]
    assert len(staging_tables(catalogue)) == 2
    run = (await alice.client.get("/v1/runs/trip")).json()
    assert (run["task_count"], run["message_count"]) == (6, 12)
