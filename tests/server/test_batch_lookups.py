"""On PostgreSQL a batch asks which of its ids are stored already (interactions/bulk.py,
`Lookup`) by probing the index for each id, never by reading the project's rows; and
the tables it asks are analyzed once they hold rows (interactions/statistics.py), so that the
planner knows a project's size before autovacuum first looks (a new database's first
sync)."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest
from fastapi import FastAPI
from sqlalchemy import make_url
from sqlalchemy.dialects import postgresql

from chatledger.interactions import bulk, bulk_runs, statistics
from chatledger.interactions.bulk_statements import Lookup
from chatledger.server.deps import AppState
from tests.server.conftest import Account

pytestmark = pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)

BATCH = 500


def interaction(n: int) -> dict[str, Any]:
    return {
        "kind": "interaction",
        "id": f"t{n}",
        "run_id": f"r{n}",
        "prompt": f"Question {n}?",
        "response": f"Answer {n}.",
        "model": "openai/gpt-4o",
        "usage": {"input_tokens": 10, "output_tokens": 5},
        "cost_usd": "0.0001",
        "created_at": "2025-06-01T10:00:00Z",
        "user_message_id": f"u{n}",
        "assistant_message_id": f"a{n}",
    }


async def upload(alice: Account, batches: int) -> None:
    items = [interaction(n) for n in range(batches * BATCH)]
    for start in range(0, len(items), BATCH):
        answer = await alice.client.post("/v1/batch", json={"items": items[start : start + BATCH]})
        assert answer.status_code == 200, answer.text
        assert answer.json()["created"] == BATCH


def owner_connection(app: FastAPI) -> psycopg.Connection[Any]:
    state: AppState = app.state.chatledger
    url = make_url(str(state.database.url)).set(drivername="postgresql")
    return psycopg.connect(url.render_as_string(hide_password=False), autocommit=True)


def nodes(plan: dict[str, Any]) -> list[dict[str, Any]]:
    return [plan] + [node for child in plan.get("Plans", []) for node in nodes(child)]


async def test_the_lookups_tables_are_analyzed_once_they_hold_rows(
    app: FastAPI, alice: Account
) -> None:
    measured = "SELECT DISTINCT tablename FROM pg_stats WHERE tablename = ANY(%s)"
    with owner_connection(app) as connection:
        assert connection.execute(measured, (list(statistics.TABLES),)).fetchall() == []
        await upload(alice, 1)
        found = {name for (name,) in connection.execute(measured, (list(statistics.TABLES),))}
    assert found == {"tasks", "messages", "runs"}


async def test_a_batch_is_answered_even_when_analyzing_fails(
    alice: Account, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # A table that is not there: PostgreSQL refuses to analyze it.
    monkeypatch.setattr(statistics, "TABLES", (*statistics.TABLES, "no_such_table"))
    await upload(alice, 1)  # (its answer checked: 200, every item created)
    assert "analyzing tasks, messages, runs, no_such_table failed" in caplog.text


@pytest.mark.parametrize(
    ("lookup", "table", "column"),
    [
        (bulk._TASK_IDS, "tasks", "id"),
        (bulk.MESSAGE_IDS, "messages", "id"),
        (bulk._ANSWERED_IDS, "tasks", "user_message_id"),
        (bulk.RUN_OWNERS, "runs", "id"),
        (bulk_runs._LOCKED_RUNS, "runs", "id"),
    ],
)
async def test_a_lookup_probes_the_index_for_each_id(
    app: FastAPI, alice: Account, lookup: Lookup, table: str, column: str
) -> None:
    await upload(alice, 4)
    ids = [f"{prefix}{n}" for n in range(0, 4 * BATCH, 4) for prefix in "tuar"]
    sql = str(lookup._postgresql.statement.compile(dialect=postgresql.dialect()))
    params = {"ids": ids, "project_id": alice.project_id}
    with owner_connection(app) as connection:
        [[[explained]]] = connection.execute(f"EXPLAIN (FORMAT JSON) {sql}", params).fetchall()
    plan = explained["Plan"]

    scans = [node for node in nodes(plan) if node.get("Relation Name") == table]
    assert scans, plan
    for scan in scans:  # each one id's probe: the project and that id in the index
        assert scan["Node Type"] in ("Index Scan", "Index Only Scan"), scan
        spellings = (f"({column} = (anon_1.value)::text)", f"(({column})::text = (anon_1.value)")
        assert any(spelled in scan["Index Cond"] for spelled in spellings), scan
    assert not [node for node in nodes(plan) if node["Node Type"] == "Hash Join"], plan
