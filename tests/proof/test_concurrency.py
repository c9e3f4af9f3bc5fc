"""Concurrency (docs/reliability.md): a real uvicorn server takes hundreds of concurrent
requests over a few runs, on SQLite and PostgreSQL — tasks created twice at once, their
completions sent twice or raced by a conflicting ending, interactions and messages
posted twice at once, and an offline history uploaded in overlapping batches, each
batch twice at once.

Every duplicate lands once, every race has exactly one winner, and afterwards the totals
the API reports equal the sum of what the winners said, `verify.find_drift` finds
nothing, no answer was a 5xx and nothing anywhere said "database is locked".
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from chatledger import Settings
from chatledger.server.app import create_app
from chatledger.server.deps import AppState
from chatledger.verify import find_drift
from tests.server.conftest import ADMIN_KEY
from tests.server.live import serving

RUNS = ("load-0", "load-1", "load-2")
MODEL = "openai/gpt-4o"


@dataclass(frozen=True)
class Size:
    tasks: int
    interactions: int
    messages: int
    history: int  # items of the offline history
    uploads: int  # overlapping uploads of it, each sent twice at once
    # Groups of requests in flight at once (a group: one request, a duplicate pair, a
    # race). The rest wait here rather than in httpx's pool, whose queue costs CPU time
    # quadratic in its length, which would measure the client instead of the server.
    groups: int


DEFAULT = Size(tasks=60, interactions=24, messages=24, history=40, uploads=4, groups=40)
LONG = Size(tasks=800, interactions=300, messages=300, history=400, uploads=8, groups=80)
# A group sends at most three requests at once.
CONNECTIONS_PER_GROUP = 3


@dataclass
class Totals:
    """What the runs and daily usage must sum to, from what the winners said."""

    completed: Counter[str] = field(default_factory=Counter)
    tokens: Counter[str] = field(default_factory=Counter)
    cost_nano: Counter[str] = field(default_factory=Counter)
    messages: Counter[str] = field(default_factory=Counter)
    ended: int = 0
    input_tokens: int = 0
    output_tokens: int = 0

    def count(self, run_id: str, status: str, usage: tuple[int, int], cost_nano: int) -> None:
        self.completed[run_id] += status == "completed"
        self.tokens[run_id] += sum(usage)
        self.cost_nano[run_id] += cost_nano
        self.ended += 1
        self.input_tokens += usage[0]
        self.output_tokens += usage[1]


Request = tuple[str, str, dict[str, Any] | None]


@dataclass
class Load:
    http: httpx.AsyncClient
    slots: asyncio.Semaphore
    totals: Totals = field(default_factory=Totals)
    statuses: Counter[int] = field(default_factory=Counter)
    bodies: list[str] = field(default_factory=list)

    async def together(self, *requests: Request) -> list[httpx.Response]:
        """Send these requests at the same time (when a group slot is free)."""
        async with self.slots:
            return list(await asyncio.gather(*(self._send(*r) for r in requests)))

    async def send(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        [response] = await self.together((method, path, body))
        return response

    async def twice(self, method: str, path: str, body: dict[str, Any]) -> list[httpx.Response]:
        return await self.together((method, path, body), (method, path, body))

    async def _send(self, method: str, path: str, body: dict[str, Any] | None) -> Any:
        response = await self.http.request(method, path, json=body)
        self.statuses[response.status_code] += 1
        self.bodies.append(response.text)
        return response


def tokens_of(i: int) -> tuple[int, int]:
    return 10 + i % 7, 3 + i % 5


def usage_of(i: int) -> dict[str, int]:
    input_tokens, output_tokens = tokens_of(i)
    return {"input_tokens": input_tokens, "output_tokens": output_tokens}


def ending(i: int, status: str) -> dict[str, Any]:
    body: dict[str, Any] = {"usage": usage_of(i), "cost_usd": f"0.000{100 + i:04d}"}
    if status == "completed":
        body["response_text"] = f"reply {i}"
    if status == "failed":
        body["error"] = {"kind": "timeout", "message": "the provider timed out"}
    return body


ENDPOINT = {"completed": "complete", "failed": "fail", "cancelled": "cancel"}
# Per task, the endings sent at the same time: once, a duplicate, a race, a three-way race.
RACES: tuple[tuple[str, ...], ...] = (
    ("completed",),
    ("completed", "completed"),
    ("completed", "failed"),
    ("cancelled", "completed", "completed"),
)


async def task_life(load: Load, i: int) -> None:
    """Create (twice at once), report progress, then end it: one ending wins, the same
    ending again is answered 200, a different one 409."""
    run_id = RUNS[i % len(RUNS)]
    created = await load.twice(
        "POST", "/v1/tasks", {"id": f"t{i}", "run_id": run_id, "model": MODEL}
    )
    assert sorted(r.status_code for r in created) == [200, 201], [r.text for r in created]
    progress = await load.send("PATCH", f"/v1/tasks/t{i}", {"response_text": "reply"})
    assert progress.status_code == 200, progress.text
    race = RACES[i % len(RACES)]
    answers = await load.together(
        *(("POST", f"/v1/tasks/t{i}/{ENDPOINT[s]}", ending(i, s)) for s in race)
    )
    winners = {r.json()["status"] for r in answers if r.status_code == 200}
    assert len(winners) == 1, [r.text for r in answers]
    [winner] = winners
    assert sorted(r.status_code for r in answers) == sorted(
        200 if s == winner else 409 for s in race
    ), [r.text for r in answers]
    won = next(r.json() for r in answers if r.status_code == 200)
    usage = (won["input_tokens"], won["output_tokens"])
    assert usage == tokens_of(i)
    load.totals.count(run_id, winner, usage, won["cost_nano"])


async def interaction(load: Load, j: int) -> None:
    run_id = RUNS[j % len(RUNS)]
    body = {
        "id": f"i{j}",
        "prompt": f"Question {j}?",
        "response": f"Answer {j}.",
        "model": MODEL,
        "usage": usage_of(j),
        "cost_usd": "0.00002",
    }
    answers = await load.twice("POST", f"/v1/runs/{run_id}/interactions", body)
    assert sorted(r.status_code for r in answers) == [200, 201], [r.text for r in answers]
    assert answers[0].json()["task"] == answers[1].json()["task"]
    load.totals.count(run_id, "completed", tokens_of(j), 20_000)
    load.totals.messages[run_id] += 2


async def message(load: Load, k: int) -> None:
    run_id = RUNS[k % len(RUNS)]
    body = {"id": f"m{k}", "role": "user", "content": f"Note {k}"}
    answers = await load.twice("POST", f"/v1/runs/{run_id}/messages", body)
    assert sorted(r.status_code for r in answers) == [200, 201], [r.text for r in answers]
    load.totals.messages[run_id] += 1


def offline_history(n: int) -> list[dict[str, Any]]:
    """Ended tasks, interactions and messages (two in a row, stored together) made
    offline yesterday, spread over the runs."""
    ended_at = datetime.now(UTC) - timedelta(days=1)
    items: list[dict[str, Any]] = []
    for h in range(n):
        at = (ended_at - timedelta(seconds=h)).isoformat()
        common = {"run_id": RUNS[h % len(RUNS)], "model": MODEL, "usage": usage_of(h)}
        if h % 4 >= 2:
            items.append(
                {"kind": "message", "id": f"sync-m{h}", "role": "user", "content": "Noted."}
                | {"run_id": common["run_id"], "created_at": at}
            )
        elif h % 2:
            items.append(
                {"kind": "task", "id": f"sync-t{h}", "status": "completed", "response_text": "ok"}
                | common
                | {"cost_usd": "0.00001", "completed_at": at}
            )
        else:
            items.append(
                {
                    "kind": "interaction",
                    "id": f"sync-i{h}",
                    "prompt": "Offline?",
                    "response": "Yes.",
                }
                | common
                | {"cost_usd": "0.00001", "created_at": at}
            )
    return items


async def sync_history(load: Load, size: Size) -> None:
    """The history uploaded as it grew (each upload repeats the ones before), each upload
    sent twice at once: every item is created by exactly one of them."""
    history = offline_history(size.history)
    uploads = [history[: size.history * (u + 1) // size.uploads] for u in range(size.uploads)]
    answers = await asyncio.gather(
        *(load.twice("POST", "/v1/batch", {"items": i}) for i in uploads)
    )
    verdicts: dict[str, Counter[str]] = {item["id"]: Counter() for item in history}
    for response in (response for pair in answers for response in pair):
        assert response.status_code == 200, response.text
        for result in response.json()["results"]:
            verdicts[result["id"]][result["status"]] += 1
    for item_id, seen in verdicts.items():
        assert seen["created"] == 1 and seen["rejected"] == 0, (item_id, seen)
    for h, item in enumerate(history):
        if item["kind"] == "message":
            load.totals.messages[item["run_id"]] += 1
            continue
        load.totals.count(item["run_id"], "completed", tokens_of(h), 10_000)
        load.totals.messages[item["run_id"]] += 2 if item["kind"] == "interaction" else 0


async def check_totals(load: Load, state: AppState) -> None:
    totals = load.totals
    for run_id in RUNS:
        run = (await load.http.get(f"/v1/runs/{run_id}")).json()
        assert (
            run["task_count"],
            run["total_tokens"],
            run["total_cost_nano"],
            run["message_count"],
        ) == (
            totals.completed[run_id],
            totals.tokens[run_id],
            totals.cost_nano[run_id],
            totals.messages[run_id],
        ), run_id
    today = datetime.now(UTC).date()
    usage = await load.http.get(
        "/v1/usage/daily", params={"from": str(today - timedelta(days=2)), "to": str(today)}
    )
    counted = usage.json()["totals"]
    assert (counted["requests"], counted["input_tokens"], counted["output_tokens"]) == (
        totals.ended,
        totals.input_tokens,
        totals.output_tokens,
    )
    assert counted["cost_nano"] == sum(totals.cost_nano.values())
    async with state.database.reading() as session:
        assert await find_drift(session) == []


async def test_hundreds_of_concurrent_requests_keep_exact_totals(
    settings: Settings, long_run: bool, database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    size = LONG if long_run else DEFAULT
    # One key sends the whole load: with `--long` (~5,000 requests in seconds on a fast
    # machine) more than its rate limit's burst, which this proof is not about
    # (tests/walls/test_rate_limits.py is). Its burst covers the load.
    unlimited = {"admin_key": ADMIN_KEY, "rate_limit_burst": 1_000_000}
    app = create_app(settings.model_copy(update=unlimited))
    # No connection is kept once its response is read: an idle one could be closed just
    # as a request goes out on it, by uvicorn's keep-alive timeout or by httpcore's own
    # pool handing it to a queued request while expiring it (encode/httpcore#1110), a
    # ReadError that says nothing of the server. A new one per request costs little here.
    limits = httpx.Limits(
        max_connections=size.groups * CONNECTIONS_PER_GROUP, max_keepalive_connections=0
    )
    caplog.set_level(logging.WARNING)
    async with serving(app) as url, httpx.AsyncClient(base_url=url, timeout=120) as admin:
        made = await admin.post(
            "/v1/admin/users", json={"id": "load"}, headers={"Authorization": f"Bearer {ADMIN_KEY}"}
        )
        assert made.status_code == 201, made.text
        key = made.json()["api_key"]["secret"]
        headers = {"Authorization": f"Bearer {key}"}
        async with httpx.AsyncClient(
            base_url=url, headers=headers, limits=limits, timeout=120
        ) as http:
            load = Load(http, asyncio.Semaphore(size.groups))
            started = asyncio.get_running_loop().time()
            await asyncio.gather(
                *(task_life(load, i) for i in range(size.tasks)),
                *(interaction(load, j) for j in range(size.interactions)),
                *(message(load, k) for k in range(size.messages)),
                sync_history(load, size),
            )
            elapsed = asyncio.get_running_loop().time() - started
            await check_totals(load, app.state.chatledger)

    assert not [s for s in load.statuses if s >= 500], load.statuses
    assert not [b for b in load.bodies if "database is locked" in b]
    assert "database is locked" not in caplog.text
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text
    backend = database_url.split(":", 1)[0]
    sent = sum(load.statuses.values())
    print(
        f"\nconcurrency [{backend}]: {sent} requests in {elapsed:.1f} s over {len(RUNS)} runs, "
        f"answers {dict(sorted(load.statuses.items()))}, {load.totals.ended} tasks counted "
        f"once each, 5xx 0, rows lost 0"
    )
