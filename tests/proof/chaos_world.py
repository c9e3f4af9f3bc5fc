"""The chaos test's side of the wire: the app on an event loop of its own (hypothesis
state machines are synchronous, so each step calls into that loop through an anyio
portal), one fresh account per example, and the three ways a request is sent — once,
twice at the same time, or cut off at a random moment and then sent again, as a client
whose connection dropped does.

After every step `check` compares three things that must agree: the model of what was
acknowledged, what the API answers, and what the rows in the database sum to.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import httpx
from anyio.from_thread import BlockingPortal
from fastapi import FastAPI
from sqlalchemy import text
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from chatledger.server.deps import AppState
from chatledger.verify import find_drift
from tests.proof.chaos_model import RUN_IDS, TERMINAL, Ledger
from tests.proof.chaos_ops import Op, Seen
from tests.server.conftest import ADMIN_KEY, BASE_URL

# How long a cut-off request may run before it is cut: from "before it reached the
# database" to "after it committed, before the answer arrived".
FAULT_DELAYS_MS = (0.2, 1, 2, 4, 8, 15, 30)


class OverTheWire:
    """The app as its clients reach it: each message of an exchange (the request's body,
    the response's head and body) crosses at a turn of the event loop, as between a real
    server's socket reads and writes, so a request can be cut off there. In process
    nothing else need wait: on SQLite a whole request runs without once yielding the loop
    (db/sqlite_inline.py), and a cut-off would never land."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def arriving() -> Message:
            await asyncio.sleep(0)
            return await receive()

        async def leaving(message: Message) -> None:
            await asyncio.sleep(0)
            await send(message)

        await self.app(scope, arriving, leaving)


@dataclass
class World:
    portal: BlockingPortal
    app: FastAPI
    counts: Counter[str] = field(default_factory=Counter)

    @property
    def state(self) -> AppState:
        state: AppState = self.app.state.chatledger
        return state

    def client(self, key: str | None = None) -> httpx.AsyncClient:
        headers = {"Authorization": f"Bearer {key or ADMIN_KEY}"}
        transport = httpx.ASGITransport(app=OverTheWire(self.app))
        return httpx.AsyncClient(transport=transport, base_url=BASE_URL, headers=headers)

    async def new_account(self) -> tuple[str, httpx.AsyncClient]:
        """A new user with a project of its own: (project id, client with its key)."""
        user_id = f"chaos-{uuid.uuid4().hex[:12]}"
        async with self.client() as admin:
            made = await admin.post("/v1/admin/users", json={"id": user_id})
        assert made.status_code == 201, made.text
        body = made.json()
        self.counts["examples"] += 1
        return body["project"]["id"], self.client(body["api_key"]["secret"])


@dataclass
class Example:
    """One example: its account, the model of what it was told, and how to send."""

    world: World
    project_id: str
    client: httpx.AsyncClient
    ledger: Ledger = field(default_factory=Ledger)

    async def send(self, op: Op) -> httpx.Response:
        self.world.counts["requests"] += 1
        response = await self.client.request(op.method, op.path, json=op.body())
        assert "database is locked" not in response.text, response.text
        assert response.status_code < 500 or response.status_code == 502, response.text
        if response.status_code == 409:
            self.world.counts["conflicts answered 409"] += 1
        return response

    async def once(self, op: Op) -> None:
        verdict, expected = op.expected(self.ledger)
        response = await self.send(op)
        assert op.seen(response) == expected, _mismatch(op, response, [expected])
        answer = response.json() if response.content else None
        if verdict.changes:
            op.apply(self.ledger, answer)
        if response.is_success and answer is not None:
            op.check(self.ledger, answer)

    async def replayed(self, op: Op) -> None:
        await self.once(op)
        self.world.counts["replays"] += 1
        await self.once(op)

    def _landed(self, op: Op) -> tuple[Seen, Seen, Ledger]:
        """What the first and a second sending of `op` answer, and the model after."""
        verdict, first = op.expected(self.ledger)
        after = self.ledger.copy()
        if verdict.changes:
            op.apply(after, None)
        return first, op.expected(after)[1], after

    async def twice_at_once(self, op: Op) -> None:
        """The same request twice at the same time: one lands, the other is its replay."""
        first, second, after = self._landed(op)
        answers = await asyncio.gather(self.send(op), self.send(op))
        self.world.counts["duplicates sent concurrently"] += 1
        seen = sorted(op.seen(response) for response in answers)
        assert seen == sorted([first, second]), _mismatch(op, answers[0], [first, second])
        self.ledger = after
        for response in answers:
            if response.is_success and response.content:
                op.check(self.ledger, response.json())

    async def cut_off(self, op: Op, delay_ms: float) -> None:
        """Send, cut the request off after `delay_ms` (the handler is cancelled wherever
        it is), then send it again: whether or not the first landed, the second must
        answer as if it was sent once or replayed, never count twice."""
        first, second, after = self._landed(op)
        try:
            async with asyncio.timeout(delay_ms / 1000):
                response = await self.send(op)
        except TimeoutError:
            self.world.counts["faults injected (request cut off)"] += 1
            response = await self.send(op)
            assert op.seen(response) in (first, second), _mismatch(op, response, [first, second])
            if op.seen(response) == second and first != second:
                self.world.counts["cut-off requests that had landed"] += 1
        else:
            assert op.seen(response) == first, _mismatch(op, response, [first])
        self.ledger = after
        if response.is_success and response.content:
            op.check(self.ledger, response.json())

    # -- what the server chose: learned, never predicted ----------------------------------

    async def learn(self) -> None:
        for task_id in self.ledger.unlearned_tasks():
            answer = (await self.client.get(f"/v1/tasks/{task_id}")).json()
            row = self.ledger.tasks[task_id]
            assert answer["status"] == row.status, answer
            row.tokens = (answer["input_tokens"], answer["output_tokens"])
            row.cost_nano, row.cost_known = answer["cost_nano"], True
            row.response_text = answer["response_text"]
        for key in self.ledger.unlearned_messages():
            role, task_id = key[1:].split(":")
            message = self.ledger.messages.pop(key)
            stored = (await self.client.get(f"/v1/runs/{message.run_id}/messages")).json()
            [found] = [m for m in stored if m["task_id"] == task_id and m["role"] == role]
            self.ledger.messages[found["id"]] = message
            for row in self.ledger.tasks.values():
                if row.user_message_id == key:
                    row.user_message_id = found["id"]
                if row.assistant_message_id == key:
                    row.assistant_message_id = found["id"]

    # -- the invariants -------------------------------------------------------------------

    async def check(self) -> None:
        self.world.counts["invariant checks"] += 1
        await self._check_rows()
        for run_id in RUN_IDS:
            await self._check_run(run_id)
        today = datetime.now(UTC).date()
        usage = await self.client.get(
            "/v1/usage/daily", params={"from": str(today - timedelta(days=3)), "to": str(today)}
        )
        totals = usage.json()["totals"]
        assert {k: totals[k] for k in self.ledger.usage_totals()} == self.ledger.usage_totals()

    async def _check_run(self, run_id: str) -> None:
        answer = await self.client.get(f"/v1/runs/{run_id}")
        if run_id not in self.ledger.runs:
            assert answer.status_code == 404, answer.text
            return
        run = answer.json()
        expected = self.ledger.run_totals(run_id)
        assert {k: run[k] for k in expected} == expected, run_id
        stored = [(m["id"], m["role"], m["content"], m["status"]) for m in run["messages"]]
        assert [m["seq"] for m in run["messages"]] == list(range(1, len(stored) + 1))
        held = {
            (key, m.role, m.content, m.status)
            for key, m in self.ledger.messages.items()
            if m.run_id == run_id
        }
        # No message lost, none stored twice.
        assert len(stored) == len(set(stored)) and set(stored) == held, run_id
        tasks = (await self.client.get(f"/v1/runs/{run_id}/tasks")).json()
        self.world.counts["rows compared"] += len(stored) + len(tasks)
        got = {
            t["id"]: (t["status"], t["attempt"], t["input_tokens"], t["output_tokens"])
            for t in tasks
        }
        want = {
            key: (t.status, t.attempt, *(t.tokens or (None, None)))
            for key, t in self.ledger.tasks.items()
            if t.run_id == run_id
        }
        assert got == want, run_id

    async def _check_rows(self) -> None:
        """verify.find_drift, and the same sums in plain SQL, for this example's project
        (examples share the database; one example's failure must not fail the next)."""
        async with self.world.state.database.reading() as session:
            drift = [d for d in await find_drift(session) if d.key[0] == self.project_id]
            assert drift == [], [str(d) for d in drift]
            sums = {}
            for name, sql in _SUMS.items():
                row = (await session.execute(text(sql), {"p": self.project_id})).one()
                sums[name] = tuple(int(value) for value in row)
        ended, completed, tokens, cost = sums["tasks"]
        assert sums["runs"] == (completed, tokens, cost, sums["messages"][0])
        assert sums["usage"] == (ended, tokens, cost)
        assert sums["replies per task"] == (0,), "a task answered by two assistant messages"
        usage = self.ledger.usage_totals()
        assert (ended, tokens, cost) == (
            usage["requests"],
            usage["input_tokens"] + usage["output_tokens"],
            usage["cost_nano"],
        )


_ENDED = ", ".join(f"'{status}'" for status in TERMINAL)
_SUMS = {
    "tasks": "SELECT count(*), coalesce(sum(CASE WHEN status = 'completed' THEN 1 ELSE 0 END), 0),"
    " coalesce(sum(input_tokens + output_tokens), 0), coalesce(sum(cost_nano), 0)"
    f" FROM tasks WHERE project_id = :p AND status IN ({_ENDED})",
    "runs": "SELECT coalesce(sum(task_count), 0), coalesce(sum(total_tokens), 0),"
    " coalesce(sum(total_cost_nano), 0), coalesce(sum(message_count), 0)"
    " FROM runs WHERE project_id = :p",
    "messages": "SELECT count(*) FROM messages WHERE project_id = :p",
    "usage": "SELECT coalesce(sum(requests), 0), coalesce(sum(input_tokens + output_tokens), 0),"
    " coalesce(sum(cost_nano), 0) FROM usage_daily WHERE project_id = :p",
    "replies per task": "SELECT count(*) FROM (SELECT task_id FROM messages"
    " WHERE project_id = :p AND role = 'assistant' AND task_id IS NOT NULL"
    " GROUP BY task_id HAVING count(*) > 1) AS twice",
}


def _mismatch(op: Op, response: httpx.Response, expected: list[Seen]) -> str:
    return (
        f"{op.label} {op.method} {op.path} {op.body()}: expected {expected}, "
        f"got {op.seen(response)}: {response.text[:500]}"
    )
