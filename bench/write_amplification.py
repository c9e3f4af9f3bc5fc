"""Bench 3: write amplification, the database statements one streamed reply costs.

The app runs in this process (a real uvicorn on a free port) so that SQLAlchemy's engine
events can count every statement sent on its connections while one reply streams, from
the request to its `done` event: everything the database sees, the API-key lookup
included. The budget (the "baseline" column) is the issue's: 3 statements, plus one per
debounce interval of the reply's measured duration (a progress write).

    python -m bench.write_amplification [--quick] [--db sqlite|postgresql|both]
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import httpx
import uvicorn
from sqlalchemy import event

from bench.common import (
    ADMIN_KEY,
    Figure,
    arguments,
    dialects,
    fresh_database,
    header,
    note,
    report,
)
from chatledger.config import Settings
from chatledger.db import deferred_begin
from chatledger.db.engine import Database
from chatledger.server.app import create_app

REPLIES = 10
QUICK_REPLIES = 3
DELAY_MS = 50
WORDS = 20
TRANSACTION_CONTROL = ("BEGIN", "COMMIT", "ROLLBACK", "SAVEPOINT", "RELEASE")
COUNTS = ("(commit)", "(write commit)", "(writing)")  # tallies, not statements


class StatementCounter:
    """Statements sent on a database's connections, by kind, and its commits: all of
    them, and those of transactions that wrote something."""

    def __init__(self, database: Database) -> None:
        self.kinds: Counter[str] = Counter()
        self._wrote: set[int] = set()  # connections whose open transaction wrote
        engines = {database.write_engine.sync_engine, database.read_engine.sync_engine}
        for engine in engines:
            event.listen(engine, "before_cursor_execute", self._statement)
            event.listen(engine, "commit", self._commit)

    def _statement(self, conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        kind = statement.lstrip().split(None, 1)[0].upper()
        self.kinds[kind] += 1
        if _writes(kind, statement):
            self.kinds["(writing)"] += 1
            self._wrote.add(id(conn))

    def _commit(self, conn: Any) -> None:
        committed = deferred_begin.committed_with_last(conn.connection)
        if not (committed or _driver_in_transaction(conn)):
            # SQLAlchemy's commit of a PostgreSQL key lookup, which ran without a
            # transaction (`Database.looking_up()`): the driver sends nothing. One
            # committed with its last statement (db/deferred_begin.py) sent its COMMIT.
            return
        self.kinds["(commit)"] += 1
        if id(conn) in self._wrote:
            self._wrote.discard(id(conn))
            self.kinds["(write commit)"] += 1

    def snapshot(self) -> Counter[str]:
        return Counter(self.kinds)


@contextlib.asynccontextmanager
async def serving_here(settings: Settings, database: Database) -> AsyncIterator[str]:
    app = create_app(settings, database=database)
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", access_log=False)
    )
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{server.servers[0].sockets[0].getsockname()[1]}"
    finally:
        server.should_exit = True
        await task


async def stream_reply(client: httpx.AsyncClient, run_id: str | None, turn: int) -> str:
    body: dict[str, Any] = {
        "message": {"content": " ".join(["Tell", *(f"word{turn}-{n}" for n in range(WORDS - 1))])},
        "model": "echo",
        "settings": {"delay_ms": DELAY_MS},
        "stream": True,
    }
    if run_id is not None:
        body["run_id"] = run_id
    async with client.stream("POST", "/v1/chat", json=body) as response:
        response.raise_for_status()
        async for line in response.aiter_lines():
            if line == "event: done":
                break
        return response.headers["x-run-id"]


async def count(url: str, replies: int) -> tuple[list[Counter[str]], list[float]]:
    settings = Settings(database_url=url, admin_key=ADMIN_KEY)
    database = Database(url)
    counter = StatementCounter(database)
    async with serving_here(settings, database) as base:
        async with httpx.AsyncClient(base_url=base) as admin:
            created = await admin.post(
                "/v1/admin/users",
                json={"id": "bench"},
                headers={"Authorization": f"Bearer {ADMIN_KEY}"},
            )
        key = created.json()["api_key"]["secret"]
        async with httpx.AsyncClient(
            base_url=base, headers={"Authorization": f"Bearer {key}"}, timeout=60
        ) as client:
            run_id = await stream_reply(client, None, 0)  # warm up (and the key's first use)
            per_reply, durations = [], []
            for turn in range(1, replies + 1):
                before = counter.snapshot()
                started = time.perf_counter()
                run_id = await stream_reply(client, run_id, turn)
                durations.append(time.perf_counter() - started)
                per_reply.append(counter.snapshot() - before)
    return per_reply, durations


def measure(dialect: str, replies: int, debounce_ms: int) -> None:
    header(f"write amplification: {replies} streamed replies, {dialect}")
    with fresh_database(dialect) as database:
        per_reply, durations = asyncio.run(count(database.url, replies))
    mean_s = sum(durations) / len(durations)
    budget = 3 + mean_s * 1000 / debounce_ms
    totals: Counter[str] = sum(per_reply, Counter())

    def mean(kinds: tuple[str, ...] | None, exclude: tuple[str, ...] = ()) -> float:
        chosen = sum(
            n for k, n in totals.items() if (kinds is None or k in kinds) and k not in exclude
        )
        return chosen / len(per_reply)

    target = "<= 3 + duration / debounce"
    statements = mean(None, (*TRANSACTION_CONTROL, *COUNTS))
    report(Figure("statements per reply", statements, "", budget, target, statements <= budget))
    writes = mean(("(writing)",))
    report(Figure("writing statements per reply", writes, "", budget, target, writes <= budget))
    commits = mean(("(commit)",))
    report(
        Figure("transactions committed per reply", commits, "", budget, target, commits <= budget)
    )
    wrote = mean(("(write commit)",))
    report(Figure("write transactions per reply", wrote, "", budget, target, wrote <= budget))
    by_kind = ", ".join(f"{k} {n / len(per_reply):.1f}" for k, n in totals.most_common())
    note(f"reply {mean_s * 1000:,.0f} ms, debounce {debounce_ms} ms; per reply: {by_kind}")


def _driver_in_transaction(conn: Any) -> bool:
    """Whether the driver under a connection has a transaction open (one to commit)."""
    driver = conn.connection.driver_connection
    if hasattr(driver, "info"):  # psycopg
        return bool(driver.info.transaction_status != driver.info.transaction_status.IDLE)
    return bool(driver.driver.in_transaction)  # chatledger's inline SQLite connection


def _writes(kind: str, statement: str) -> bool:
    if kind in ("INSERT", "UPDATE", "DELETE"):
        return True
    # A CTE feeding a write (the progress writer's `WITH progress … UPDATE tasks …`), or
    # writing itself (`WITH task AS (INSERT INTO tasks …`: a word, whatever is around it).
    return kind == "WITH" and _WRITE.search(statement.upper()) is not None


_WRITE = re.compile(r"\b(INSERT|UPDATE|DELETE)\b")


def main() -> None:
    args = arguments(__doc__ or "")
    debounce_ms = Settings().stream_debounce_ms
    for dialect in dialects(args.db):
        measure(dialect, QUICK_REPLIES if args.quick else REPLIES, debounce_ms)


if __name__ == "__main__":
    main()
