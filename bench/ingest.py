"""Bench 1 and 5: bulk ingest, and the server's memory under it.

20,000 finished interactions (10 per run, each with its usage, timing and client ids, as
an offline sync uploads them) go through `POST /v1/batch` in batches of 500, over real
HTTP to a real uvicorn, until all of them are queryable. The baseline writes the same
rows (runs with their aggregates, tasks, messages, daily usage) with the plain driver's
executemany, a transaction per 500 interactions, under the same durability settings, from
rows built before the clock starts: what the database itself can take.

    python -m bench.ingest [--quick] [--db sqlite|postgresql|both] [--workers N]

Without `--workers` each database is measured twice, as bench.live_chat does: with one
server process, then with one per core (`chatledger serve --workers N`, its memory summed
over the supervisor and its workers).
"""

from __future__ import annotations

import asyncio
import json
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from bench.common import (
    BenchDatabase,
    Figure,
    arguments,
    cpu_seconds,
    dialects,
    fresh_database,
    header,
    new_user_key,
    note,
    peak_rss_mb,
    process_counts,
    report,
    serving,
)
from bench.rows import DriverWriter, Row, add_usage
from chatledger import pricing
from chatledger.db.engine import Database
from chatledger.db.migrate import upgrade
from chatledger.runs.service import PREVIEW_LENGTH, name_from_message
from chatledger.tasks.schemas import provider_and_model
from chatledger.tenants.service import personal_project_id
from chatledger.tokens import TokenUsage

INTERACTIONS = 20_000
QUICK_INTERACTIONS = 2_000
BATCH = 500
PER_RUN = 10
# Batches in flight at once per server process: the client keeps each busy while it reads
# a reply.
CONCURRENCY = 2
USER_ID = "bench"  # the user whose key uploads, and whose rows the baseline writes
MODELS = ("openai/gpt-4o-mini", "openai/gpt-4o", "anthropic/claude-3-5-haiku-latest")
PROMPT = "Question {i}: how would you plan a three-day trip to Lisbon on a modest budget?"
RESPONSE = (
    "Answer {i}: spend the first day in Alfama and Baixa on foot, the second in Belem "
    "(the monastery, the tower, the custard tarts), and the third on a day trip to Sintra "
    "by train. Stay in a guesthouse near Rossio, buy a Viva Viagem card for transport, "
    "and eat the prato do dia at lunch, which is the cheapest good meal in the city."
)
MIN_RATE = 7_000
MIN_SHARE_OF_BASELINE = 0.5
MAX_RSS_MB = 250


def workload(count: int, client_cost: bool = False) -> list[dict[str, Any]]:
    """The interactions an app uploads: ids for the task and both messages, its own
    timestamps (a month ago), usage from the provider; the cost left to the server to
    price, or (`client_cost`) computed by the client and sent as `cost_usd`."""
    start = datetime.now(UTC) - timedelta(days=30)
    items = []
    for i in range(count):
        created = start + timedelta(seconds=7 * i)
        items.append(
            {
                "kind": "interaction",
                "id": f"t{i}",
                "run_id": f"r{i // PER_RUN}",
                "prompt": PROMPT.format(i=i),
                "response": RESPONSE.format(i=i),
                "model": MODELS[i % len(MODELS)],
                "usage": {
                    "input_tokens": 200 + i % 50,
                    "output_tokens": 100 + i % 70,
                    "cached_tokens": 64,
                },
                "ttft_ms": 300,
                "total_ms": 1_500,
                "created_at": created.isoformat(),
                "completed_at": (created + timedelta(milliseconds=1_500)).isoformat(),
                "user_message_id": f"u{i}",
                "assistant_message_id": f"a{i}",
            }
        )
        if client_cost:
            items[-1]["cost_usd"] = "0.000125"
    return items


def batches(items: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    return [items[i : i + BATCH] for i in range(0, len(items), BATCH)]


# -- the baseline: the same rows with the plain driver ---------------------------------


def rows_of(batch: list[dict[str, Any]], project_id: str, user_id: str) -> dict[str, list[Row]]:
    """The rows chatledger stores for `batch` (whose runs start and end in it)."""
    now = datetime.now(UTC)
    runs: dict[str, Row] = {}
    tasks: list[Row] = []
    messages: list[Row] = []
    usage: dict[tuple[Any, ...], Row] = {}
    for item in batch:
        created = datetime.fromisoformat(item["created_at"])
        ended = datetime.fromisoformat(item["completed_at"])
        provider, model = provider_and_model(item["model"], None)
        counts = item["usage"]
        tokens = TokenUsage(**counts)
        price = pricing.price_usage(provider, model, tokens, ended)
        run = runs.get(item["run_id"])
        if run is None:
            run = runs[item["run_id"]] = {
                "project_id": project_id,
                "id": item["run_id"],
                "user_id": user_id,
                "name": name_from_message(item["prompt"]),
                "name_source": "auto",
                "prompt_id": None,
                "settings": {},
                "variable_values": {},
                "metadata": {},
                "task_count": 0,
                "message_count": 0,
                "total_tokens": 0,
                "total_cost_nano": 0,
                "last_message_at": None,
                "last_message_preview": None,
                "last_model": None,
                "created_at": created,
                "updated_at": created,
            }
        task = {
            "project_id": project_id,
            "id": item["id"],
            "run_id": run["id"],
            "user_id": user_id,
            "user_message_id": item["user_message_id"],
            "attempt": 1,
            "service": "interaction",
            "task_name": None,
            "provider": provider,
            "model": model,
            "request": {"metadata": {}},
            "status": "completed",
            "response_text": item["response"],
            "error": None,
            "input_tokens": tokens.input_tokens,
            "output_tokens": tokens.output_tokens,
            "cached_tokens": tokens.cached_tokens,
            "reasoning_tokens": 0,
            "cache_write_tokens": 0,
            "usage_estimated": False,
            "cost_nano": price.cost_nano,
            "price_source": price.source,
            "ttft_ms": item["ttft_ms"],
            "total_ms": item["total_ms"],
            "created_at": created,
            "updated_at": ended,
            "heartbeat_at": now,
            "completed_at": ended,
        }
        tasks.append(task)
        add_usage(usage, task)
        for role, content, at in (
            ("user", item["prompt"], created),
            ("assistant", item["response"], ended),
        ):
            run["message_count"] += 1
            messages.append(
                {
                    "project_id": project_id,
                    "id": item[f"{role}_message_id"],
                    "run_id": run["id"],
                    "seq": run["message_count"],
                    "parent_id": None if role == "user" else item["user_message_id"],
                    "role": role,
                    "content": content,
                    "status": "complete",
                    "error": None,
                    "task_id": task["id"],
                    "metadata": {} if role == "user" else {"model": model},
                    "created_at": at,
                    "updated_at": at,
                }
            )
        run["task_count"] += 1
        run["total_tokens"] += tokens.total
        run["total_cost_nano"] += price.cost_nano or 0
        run["last_model"] = model
        run["last_message_at"] = run["updated_at"] = ended
        run["last_message_preview"] = item["response"][:PREVIEW_LENGTH]
    return {
        "runs": list(runs.values()),
        "tasks": tasks,
        "messages": messages,
        "usage": list(usage.values()),
    }


async def migrated(database: BenchDatabase) -> None:
    handle = Database(database.url)
    try:
        await upgrade(handle)
    finally:
        await handle.dispose()


def baseline_rate(database: BenchDatabase, items: list[dict[str, Any]]) -> float:
    """Interactions per second the plain driver stores, as the same rows."""
    asyncio.run(migrated(database))
    writer = DriverWriter(database)
    # The rows of the user the upload is made as, in that user's project: the same keys
    # (every row and index entry holds the project's id), not a shorter id's.
    user_id, project_id = USER_ID, personal_project_id(USER_ID)
    now = datetime.now(UTC)
    with writer.transaction():
        writer.insert(
            "projects", [{"id": project_id, "org_id": None, "name": "bench", "created_at": now}]
        )
        writer.insert("users", [{"id": user_id, "email": None, "name": None, "created_at": now}])
    prepared = []
    for batch in batches(items):
        rows = rows_of(batch, project_id, user_id)
        prepared.append(
            [
                writer.prepared("runs", rows["runs"]),
                writer.prepared("tasks", rows["tasks"]),
                writer.prepared("messages", rows["messages"]),
                writer.prepared_usage(rows["usage"]),
            ]
        )
    started = time.perf_counter()
    for statements in prepared:
        with writer.transaction():
            for sql, params in statements:
                writer.execute_prepared(sql, params)
    elapsed = time.perf_counter() - started
    writer.close()
    return len(items) / elapsed


# -- chatledger: POST /v1/batch over HTTP ------------------------------------------------


async def upload(url: str, key: str, items: list[dict[str, Any]], workers: int = 1) -> float:
    """Seconds from the first batch sent to every interaction queryable."""
    bodies = [json.dumps({"items": batch}).encode() for batch in batches(items)]
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    gate = asyncio.Semaphore(CONCURRENCY * workers)
    retries: list[int] = []
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=300) as client:

        async def send(body: bytes) -> int:
            async with gate:
                response = await client.post("/v1/batch", content=body)
                # Busy (a deadlock broken by PostgreSQL): retry, as chatledger's client does.
                while response.status_code == 503:
                    retries.append(1)
                    await asyncio.sleep(float(response.headers.get("retry-after", "0.1")))
                    response = await client.post("/v1/batch", content=body)
            response.raise_for_status()
            created: int = response.json()["created"]
            return created

        started = time.perf_counter()
        created = sum(await asyncio.gather(*(send(body) for body in bodies)))
        first = items[0]["created_at"][:10]
        usage = await client.get(
            "/v1/usage/daily",
            params={"from": first, "to": datetime.now(UTC).date().isoformat(), "group_by": "model"},
        )
        elapsed = time.perf_counter() - started
    stored = usage.json()["totals"]["requests"]
    if created != len(items) or stored != len(items):
        raise RuntimeError(f"{len(items)} sent, {created} created, {stored} queryable")
    if retries:
        note(f"{len(retries)} batches answered 503 (busy) and were sent again")
    return elapsed


def measure(dialect: str, count: int, workers: int) -> None:
    processes = f", {workers} server processes" if workers > 1 else ""
    header(f"ingest: {count:,} interactions in batches of {BATCH}, {dialect}{processes}")
    with fresh_database(dialect) as database:
        baseline = baseline_rate(database, workload(count))
    wanted = max(MIN_RATE, MIN_SHARE_OF_BASELINE * baseline)
    target = f">= {MIN_SHARE_OF_BASELINE:.0%} of baseline and >= {MIN_RATE:,}/s"
    peak_rss = 0.0
    cpu_per_item: list[str] = []
    for client_cost, label in ((False, "server prices each call"), (True, "client sends cost_usd")):
        items = workload(count, client_cost)
        with (
            fresh_database(dialect) as database,
            serving(
                "chatledger", f"ingest-{dialect}", database_url=database.url, workers=workers
            ) as server,
        ):
            key = new_user_key(server, USER_ID)
            cpu_before = cpu_seconds(server.pid)
            elapsed = asyncio.run(upload(server.url, key, items, workers))
            cpu_per_item.append(f"{(cpu_seconds(server.pid) - cpu_before) / count * 1e6:.0f} µs")
            peak_rss = max(peak_rss, peak_rss_mb(server.pid))
        rate = count / elapsed
        report(
            Figure(
                f"ingest rate ({label})", rate, "interactions/s", baseline, target, rate >= wanted
            )
        )
    report(
        Figure(
            "server peak RSS under ingest (VmHWM)",
            peak_rss,
            "MB",
            None,
            f"<= {MAX_RSS_MB} MB",
            peak_rss <= MAX_RSS_MB,
        )
    )
    # The rate swings with the machine's load; the server's own CPU per item much less.
    note(f"server CPU per interaction: {' / '.join(cpu_per_item)} (server-priced / client-priced)")
    note("baseline: the same rows with the plain driver's executemany, built before timing")


def main() -> None:
    args = arguments(__doc__ or "", workers=True, default_workers=None)
    for dialect in dialects(args.db):
        for workers in process_counts(args.workers):
            measure(dialect, QUICK_INTERACTIONS if args.quick else INTERACTIONS, workers)


if __name__ == "__main__":
    main()
