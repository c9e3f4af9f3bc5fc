"""Bench 4: reads at scale.

A project with 100,000 runs of 100 users, each run 10 completed tasks and their 20
messages (1,000,000 tasks, 2,000,000 messages) over the last 90 days, with its run
aggregates and daily usage, written straight with the driver (COPY on PostgreSQL) after
chatledger's own migrations. Then, over real HTTP to a real uvicorn, one request at a
time: a page of the run list (a member's runs, and the owner's view of the whole
project), one run with its messages, and 90 days of daily usage. The baseline is the
same query through the plain driver: what the database itself takes.

    python -m bench.reads_at_scale [--quick] [--db sqlite|postgresql|both]
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime, timedelta
from typing import Any

import httpx

from bench.common import (
    ADMIN_KEY,
    BenchDatabase,
    Figure,
    Server,
    arguments,
    dialects,
    fresh_database,
    header,
    note,
    percentile,
    report,
    serving,
)
from bench.ingest import migrated
from bench.rows import USAGE_COUNTERS, USAGE_KEY, DriverWriter

RUNS = 100_000
QUICK_RUNS = 5_000
USERS = 100
TASKS_PER_RUN = 10
DAYS = 90
REQUESTS = 200
QUICK_REQUESTS = 30
TARGET_MS = 20.0
MODELS = (("openai", "gpt-4o-mini", 150, 600), ("openai", "gpt-4o", 2_500, 10_000))
# (provider, model, nano-USD per input token, per output token)

RUN_COLUMNS = [
    "project_id",
    "id",
    "user_id",
    "name",
    "name_source",
    "prompt_id",
    "settings",
    "variable_values",
    "metadata",
    "task_count",
    "message_count",
    "total_tokens",
    "total_cost_nano",
    "last_message_at",
    "last_message_preview",
    "last_model",
    "created_at",
    "updated_at",
]
TASK_COLUMNS = [
    "project_id",
    "id",
    "run_id",
    "user_id",
    "user_message_id",
    "attempt",
    "service",
    "task_name",
    "provider",
    "model",
    "request",
    "status",
    "response_text",
    "error",
    "input_tokens",
    "output_tokens",
    "cached_tokens",
    "reasoning_tokens",
    "cache_write_tokens",
    "usage_estimated",
    "cost_nano",
    "price_source",
    "ttft_ms",
    "total_ms",
    "created_at",
    "updated_at",
    "heartbeat_at",
    "completed_at",
]
MESSAGE_COLUMNS = [
    "project_id",
    "id",
    "run_id",
    "seq",
    "parent_id",
    "role",
    "content",
    "status",
    "error",
    "task_id",
    "metadata",
    "created_at",
    "updated_at",
]


# -- the data ---------------------------------------------------------------------------


class Seed:
    """Generates the project's rows, and sums what the runs and daily usage hold."""

    def __init__(self, project_id: str, runs: int, member: str) -> None:
        self.project_id = project_id
        self.runs = runs
        self.users = [member, *(f"end-user-{n}" for n in range(1, USERS))]
        self.now = datetime.now(UTC).replace(microsecond=0)
        self.start = self.now - timedelta(days=DAYS - 1)
        self.usage: dict[tuple[Any, ...], list[int]] = {}

    def run_start(self, i: int) -> datetime:
        span = (self.now - self.start).total_seconds() - TASKS_PER_RUN * 60
        return self.start + timedelta(seconds=span * i / self.runs)

    def task(self, i: int, j: int) -> dict[str, Any]:
        provider, model, per_input, per_output = MODELS[(i + j) % len(MODELS)]
        asked = self.run_start(i) + timedelta(minutes=j)
        input_tokens, output_tokens = 300 + 40 * j + i % 97, 80 + (i * 7 + j) % 200
        return {
            "provider": provider,
            "model": model,
            "asked": asked,
            "ended": asked + timedelta(seconds=3),
            "input_tokens": input_tokens,
            "output_tokens": output_tokens,
            "cost_nano": input_tokens * per_input + output_tokens * per_output,
            "prompt": f"Question {j} in conversation {i}: what should I pack for the trip?",
            "reply": f"Answer {j} in conversation {i}: light layers, a rain jacket, "
            "comfortable shoes for the hills, and an adapter for the sockets.",
        }

    def run_rows(self) -> Iterator[tuple[Any, ...]]:
        for i in range(self.runs):
            tasks = [self.task(i, j) for j in range(TASKS_PER_RUN)]
            last = tasks[-1]
            yield (
                self.project_id, f"run{i:06d}", self.users[i % USERS], tasks[0]["prompt"][:60],
                "auto", None, {"model": "openai/gpt-4o-mini"}, {}, {},
                TASKS_PER_RUN, 2 * TASKS_PER_RUN,
                sum(t["input_tokens"] + t["output_tokens"] for t in tasks),
                sum(t["cost_nano"] for t in tasks), last["ended"], last["reply"][:200],
                last["model"], tasks[0]["asked"], last["ended"],
            )  # fmt: skip

    def task_rows(self) -> Iterator[tuple[Any, ...]]:
        for i in range(self.runs):
            user = self.users[i % USERS]
            for j in range(TASKS_PER_RUN):
                t = self.task(i, j)
                self._count(user, t)
                yield (
                    self.project_id, f"task{i:06d}-{j}", f"run{i:06d}", user, f"msg{i:06d}-{j}u",
                    1, "chat", "chat", t["provider"], t["model"], {}, "completed", t["reply"],
                    None, t["input_tokens"], t["output_tokens"], 0, 0, 0, False, t["cost_nano"],
                    "client", 400, 3000, t["asked"], t["ended"], t["ended"], t["ended"],
                )  # fmt: skip

    def message_rows(self) -> Iterator[tuple[Any, ...]]:
        for i in range(self.runs):
            for j in range(TASKS_PER_RUN):
                t = self.task(i, j)
                question, answer = f"msg{i:06d}-{j}u", f"msg{i:06d}-{j}a"
                yield (
                    self.project_id, question, f"run{i:06d}", 2 * j + 1, None, "user",
                    t["prompt"], "complete", None, f"task{i:06d}-{j}", {}, t["asked"], t["asked"],
                )  # fmt: skip
                yield (
                    self.project_id, answer, f"run{i:06d}", 2 * j + 2, question, "assistant",
                    t["reply"], "complete", None, f"task{i:06d}-{j}", {"model": t["model"]},
                    t["ended"], t["ended"],
                )  # fmt: skip

    def _count(self, user: str, t: dict[str, Any]) -> None:
        key = (self.project_id, user, t["ended"].date(), t["model"])
        sums = self.usage.setdefault(key, [0] * len(USAGE_COUNTERS))
        for n, value in enumerate(
            (1, 0, t["input_tokens"], t["output_tokens"], 0, 0, t["cost_nano"])
        ):
            sums[n] += value

    def usage_rows(self) -> Iterator[tuple[Any, ...]]:
        for key, sums in self.usage.items():
            yield (*key, *sums)


def seed(database: BenchDatabase, project_id: str, runs: int, member: str) -> float:
    """Write the rows; seconds it took."""
    started = time.perf_counter()
    data = Seed(project_id, runs, member)
    writer = DriverWriter(database)
    with writer.transaction():
        writer.load("runs", RUN_COLUMNS, data.run_rows())
        writer.load("tasks", TASK_COLUMNS, data.task_rows())
        writer.load("messages", MESSAGE_COLUMNS, data.message_rows())
        writer.load("usage_daily", [*USAGE_KEY, *USAGE_COUNTERS], data.usage_rows())
    if database.dialect == "postgresql":
        writer.analyze()  # what autovacuum does to a table this size soon enough
    writer.close()
    return time.perf_counter() - started


# -- the accounts -----------------------------------------------------------------------


def accounts(server: Server) -> tuple[str, str, str]:
    """(project id, owner's key, a member's key in that project)."""
    admin = {"Authorization": f"Bearer {ADMIN_KEY}"}
    with httpx.Client(base_url=server.url, timeout=30) as client:
        owner = client.post("/v1/admin/users", json={"id": "owner"}, headers=admin).json()
        member = client.post("/v1/admin/users", json={"id": "member"}, headers=admin).json()
        project_id = owner["project"]["id"]
        owner_key = owner["api_key"]["secret"]
        client.post(
            f"/v1/projects/{project_id}/members",
            json={"user_id": "member", "role": "member"},
            headers={"Authorization": f"Bearer {owner_key}"},
        ).raise_for_status()
        key = client.post(
            "/v1/keys",
            json={"project_id": project_id},
            headers={"Authorization": f"Bearer {member['api_key']['secret']}"},
        )
        key.raise_for_status()
        return project_id, owner_key, key.json()["secret"]


# -- measuring --------------------------------------------------------------------------


def timed(call: Callable[[], Any], times: int) -> list[float]:
    for _ in range(min(10, times)):  # warm up: caches, pools, prepared statements
        call()
    spent = []
    for _ in range(times):
        started = time.perf_counter()
        call()
        spent.append((time.perf_counter() - started) * 1000)
    return spent


def http_get(client: httpx.Client, path: Callable[[], str], key: str) -> Callable[[], Any]:
    headers = {"Authorization": f"Bearer {key}"}

    def get() -> None:
        client.get(path(), headers=headers).raise_for_status()

    return get


def measure(dialect: str, runs: int, requests: int) -> None:
    header(f"reads at scale: {runs:,} runs, {runs * TASKS_PER_RUN:,} tasks, {dialect}")
    with fresh_database(dialect) as database:
        asyncio.run(migrated(database))
        with serving("chatledger", f"reads-{dialect}", database_url=database.url) as server:
            project_id, owner_key, member_key = accounts(server)
            seconds = seed(database, project_id, runs, "member")
            note(f"seeded in {seconds:.0f} s")
            driver = DriverWriter(database)
            today = datetime.now(UTC).date()
            first_day = today - timedelta(days=DAYS - 1)
            member_runs = [f"run{i:06d}" for i in range(0, runs, USERS)]
            pick = random.Random(6).choice
            with httpx.Client(base_url=server.url, timeout=60) as client:
                cases = _cases(project_id, member_runs, first_day, today, pick)
                for name, path, key_of, sql, params in cases:
                    key = owner_key if key_of == "owner" else member_key
                    ours = timed(http_get(client, path, key), requests)
                    base = timed(
                        lambda sql=sql, params=params: driver.query(sql, params()), requests
                    )
                    value, baseline = percentile(ours, 50), percentile(base, 50)
                    report(
                        Figure(
                            f"{name} p50",
                            value,
                            "ms",
                            baseline,
                            f"<= {TARGET_MS:g} ms",
                            value <= TARGET_MS,
                        )
                    )
                    p95, base_p95 = percentile(ours, 95), percentile(base, 95)
                    note(f"p95 {p95:.1f} ms, baseline p95 {base_p95:.1f} ms")
                sql, params = summed_by_hand(project_id, first_day, today)
                by_hand = percentile(timed(lambda: driver.query(sql, params), requests), 50)
                note(
                    f"the owner's usage summed from usage_daily by the driver: {by_hand:.1f} ms p50"
                )
            driver.close()


Case = tuple[str, Callable[[], str], str, str, Callable[[], tuple[Any, ...]]]


def _cases(
    project_id: str,
    member_runs: list[str],
    first: date,
    last: date,
    pick: Callable[[list[str]], str],
) -> list[Case]:
    chosen = {"run": member_runs[0]}

    def next_run() -> str:
        chosen["run"] = pick(member_runs)
        return f"/v1/runs/{chosen['run']}"

    sums = ", ".join(f"sum({name})" for name in USAGE_COUNTERS)
    span = (first.isoformat(), last.isoformat())
    usage_path = f"/v1/usage/daily?from={span[0]}&to={span[1]}"
    return [
        (
            "GET /v1/runs (a member's page of 50)",
            lambda: "/v1/runs?limit=50",
            "member",
            "SELECT * FROM runs WHERE project_id = ? AND user_id = ? "
            "ORDER BY updated_at DESC, id DESC LIMIT 51",
            lambda: (project_id, "member"),
        ),
        (
            "GET /v1/runs (owner: whole project, page of 50)",
            lambda: "/v1/runs?limit=50",
            "owner",
            "SELECT * FROM runs WHERE project_id = ? ORDER BY updated_at DESC, id DESC LIMIT 51",
            lambda: (project_id,),
        ),
        (
            "GET /v1/runs/{id} (20 messages)",
            next_run,
            "member",
            "SELECT r.*, m.* FROM runs r JOIN messages m ON m.project_id = r.project_id "
            "AND m.run_id = r.id WHERE r.project_id = ? AND r.id = ? AND r.user_id = ? "
            "ORDER BY m.seq",
            lambda: (project_id, pick(member_runs), "member"),
        ),
        (
            "GET /v1/usage/daily (member, 90 days)",
            lambda: usage_path,
            "member",
            f"SELECT day, user_id, model, {sums} FROM usage_daily WHERE project_id = ? "
            "AND day BETWEEN ? AND ? AND user_id = ? GROUP BY day, user_id, model "
            "ORDER BY day, user_id, model",
            lambda: (project_id, *span, "member"),
        ),
        (
            "GET /v1/usage/daily (owner, 90 days, by model)",
            lambda: f"{usage_path}&group_by=model",
            "owner",
            # The project's totals, kept by migration 0010's triggers (summed_by_hand below
            # is the query they replaced).
            f"SELECT day, model, {', '.join(USAGE_COUNTERS)} FROM project_usage_daily"
            " WHERE project_id = ? AND day BETWEEN ? AND ? ORDER BY day, model",
            lambda: (project_id, *span),
        ),
    ]


def summed_by_hand(project_id: str, first: date, last: date) -> tuple[str, tuple[Any, ...]]:
    """The owner's usage by model summed from every user's rows: what the API read before
    the project's totals were kept."""
    sums = ", ".join(f"sum({name})" for name in USAGE_COUNTERS)
    sql = (
        f"SELECT day, model, {sums} FROM usage_daily WHERE project_id = ? "
        "AND day BETWEEN ? AND ? GROUP BY day, model ORDER BY day, model"
    )
    return sql, (project_id, first.isoformat(), last.isoformat())


def main() -> None:
    args = arguments(__doc__ or "")
    for dialect in dialects(args.db):
        measure(
            dialect, QUICK_RUNS if args.quick else RUNS, QUICK_REQUESTS if args.quick else REQUESTS
        )


if __name__ == "__main__":
    main()
