"""Crash safety (docs/reliability.md): a real `chatledger serve` process, on a SQLite file
and on a PostgreSQL database, is killed with SIGKILL while dozens of replies stream and
other clients write; restarted on the same database:

- every write it acknowledged (a 2xx, or a stream's `run`/`task` events) is there;
- every reply cut off ends `interrupted` once the lease has passed, keeping its saved
  text: at least what the server showed as saved before the kill, and a prefix of the
  reply it would have had;
- the cut-off messages can be answered again under their own ids;
- `chatledger verify` finds every total equal to its rows.

Under --long the server is killed and restarted several times over a larger load.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import sys
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import httpx
import pytest

from tests.server.live import sse_events

ADMIN_KEY = "crash-admin-key"
USER = "crash"
DEBOUNCE_MS = 100
# A slow model, one word per 100 ms: long replies (Size.reply_words) so that none ends
# before the kill however slowly a loaded machine opens the streams and makes the writes.
DELAY_MS = 100
# What a stream must have received, and shown as saved, before the kill.
DELTAS_BEFORE_KILL = 3
STARTUP_S = 60
DEADLINE_S = 120


@dataclass(frozen=True)
class Size:
    streams: int
    writers: int
    rounds: int  # kill -9 and restart this many times before the final check
    writes: int  # acknowledged writes, at least, in each round before its kill
    # Short, so the test waits seconds for the sweeper, not a minute. Yet longer than a
    # heartbeat can be kept waiting by the load: a live reply's heartbeat (a third of the
    # lease) that cannot commit within the lease is taken for a dead writer's.
    lease_s: float
    reply_words: int

    @property
    def reply_s(self) -> float:
        """How long a whole reply would take."""
        return self.reply_words * DELAY_MS / 1000


SMALL = Size(streams=24, writers=4, rounds=1, writes=150, lease_s=2.0, reply_words=1000)
LONG = Size(streams=96, writers=8, rounds=3, writes=1000, lease_s=10.0, reply_words=3000)
# Cut-off messages answered again after the restart (each a whole reply, streamed).
RETRIED = 8


@dataclass
class Stream:
    """A reply that was streaming when the server was killed."""

    content: str
    run_id: str
    task_id: str
    message_id: str
    seen_text: str  # what the client had received
    saved_text: str  # what GET /v1/tasks showed as saved, before the kill

    @property
    def full_reply(self) -> str:
        return f"Echo: {self.content}"


@dataclass
class Acknowledged:
    """Everything the server answered for before it was killed: it must all be there."""

    runs: set[str] = field(default_factory=set)
    messages: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))
    tasks: dict[str, str] = field(default_factory=dict)  # task id -> run id
    completed_tasks: set[str] = field(default_factory=set)
    trace_entries: dict[str, int] = field(default_factory=dict)  # thread -> entries
    streams: list[Stream] = field(default_factory=list)
    writes: int = 0  # 2xx answers to writes, streams not counted
    goal: int = 0
    goal_reached: asyncio.Event = field(default_factory=asyncio.Event)

    def wrote(self) -> None:
        self.writes += 1
        if self.writes >= self.goal:
            self.goal_reached.set()

    def expect_writes(self, count: int) -> None:
        """`goal_reached` is set once `count` more writes are acknowledged."""
        self.goal = self.writes + count
        self.goal_reached.clear()


class Server:
    """`python -m chatledger serve` on one database, as a child process."""

    def __init__(self, database_url: str, log: Path, lease_s: float) -> None:
        self.database_url = database_url
        self.log = log
        self.lease_s = lease_s
        self.process: asyncio.subprocess.Process | None = None
        self.base_url = ""

    def env(self) -> dict[str, str]:
        inherited = {k: v for k, v in os.environ.items() if not k.startswith("CHATLEDGER_")}
        return inherited | {
            "CHATLEDGER_DATABASE_URL": self.database_url,
            "CHATLEDGER_ADMIN_KEY": ADMIN_KEY,
            "CHATLEDGER_TASK_LEASE_SECONDS": str(self.lease_s),
            "CHATLEDGER_STREAM_DEBOUNCE_MS": str(DEBOUNCE_MS),
        }

    async def start(self) -> None:
        port = _free_port()
        with _append(self.log) as out:
            self.process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "chatledger", "serve", "--port", str(port),
                env=self.env(), stdout=out, stderr=out,
            )  # fmt: skip
        self.base_url = f"http://127.0.0.1:{port}"
        async with asyncio.timeout(STARTUP_S), httpx.AsyncClient(base_url=self.base_url) as probe:
            while True:
                if self.process.returncode is not None:
                    pytest.fail(f"the server exited at start:\n{self.log.read_text()[-3000:]}")
                with contextlib.suppress(httpx.TransportError):
                    if (await probe.get("/readyz")).status_code == 200:
                        return
                await asyncio.sleep(0.1)

    async def kill(self) -> None:
        """SIGKILL: no shutdown handler, no flush, no goodbye."""
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGKILL)
        assert await self.process.wait() == -signal.SIGKILL

    async def stop(self) -> None:
        if self.process is None or self.process.returncode is not None:
            return
        self.process.terminate()
        try:
            async with asyncio.timeout(30):
                await self.process.wait()
        except TimeoutError:
            self.process.kill()
            await self.process.wait()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _append(path: Path) -> IO[bytes]:
    return path.open("ab")


def client_of(server: Server, key: str, connections: int) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        base_url=server.base_url,
        headers={"Authorization": f"Bearer {key}"},
        timeout=DEADLINE_S,
        limits=httpx.Limits(max_connections=connections),
    )


async def create_account(server: Server) -> str:
    async with httpx.AsyncClient(base_url=server.base_url, timeout=DEADLINE_S) as admin:
        made = await admin.post(
            "/v1/admin/users", json={"id": USER}, headers={"Authorization": f"Bearer {ADMIN_KEY}"}
        )
    assert made.status_code == 201, made.text
    secret: str = made.json()["api_key"]["secret"]
    return secret


# -- the load: replies left streaming, and writers that keep writing until the kill -----


async def open_stream(
    client: httpx.AsyncClient,
    content: str,
    ready: asyncio.Future[Stream],
    killed: asyncio.Event,
) -> None:
    """Start a slow reply, wait until part of it is saved, then hold it open until the
    kill cuts it off."""
    body = {"message": {"content": content}, "model": "echo", "settings": {"delay_ms": DELAY_MS}}
    try:
        async with client.stream("POST", "/v1/chat", json=body) as response:
            assert response.status_code == 200, await response.aread()
            events = aiter(sse_events(response))
            run, task = await anext(events), await anext(events)
            assert (run.kind, task.kind) == ("run", "task")
            seen = ""
            for _ in range(DELTAS_BEFORE_KILL):
                delta = await anext(events)
                assert delta.kind == "delta", delta
                seen += delta.data["text"]
            [message] = (await client.get(f"/v1/runs/{run.data['id']}/messages")).json()
            ready.set_result(
                Stream(
                    content=content,
                    run_id=run.data["id"],
                    task_id=task.data["id"],
                    message_id=message["id"],
                    seen_text=seen,
                    saved_text=await saved_text(client, task.data["id"]),
                )
            )
            await killed.wait()
    except httpx.TransportError:
        if not killed.is_set():
            raise
    except Exception as exc:
        if not ready.done():
            ready.set_exception(exc)
        raise


async def saved_text(client: httpx.AsyncClient, task_id: str) -> str:
    """The task's text as the server has saved it, once there is some."""
    while True:
        task = (await client.get(f"/v1/tasks/{task_id}")).json()
        assert task["status"] in ("pending", "streaming"), task
        if task["response_text"]:
            text: str = task["response_text"]
            return text
        await asyncio.sleep(DEBOUNCE_MS / 1000)


async def write_until_killed(
    client: httpx.AsyncClient, prefix: str, acked: Acknowledged, killed: asyncio.Event
) -> None:
    """Cycles of ordinary writes; each one answered 2xx is recorded as acknowledged. The
    one in flight at the kill has no answer: it may or may not be there."""
    cycle = 0
    with contextlib.suppress(httpx.TransportError):
        while not killed.is_set():
            await write_cycle(client, f"{prefix}-{cycle}", acked)
            cycle += 1


async def write_cycle(client: httpx.AsyncClient, run_id: str, acked: Acknowledged) -> None:
    usage = {"input_tokens": 12, "output_tokens": 5}
    answer = await client.put(f"/v1/runs/{run_id}", json={"name": f"cycle {run_id}"})
    assert answer.status_code == 201, answer.text
    acked.runs.add(run_id)
    acked.wrote()

    note = {"id": f"{run_id}-note", "role": "user", "content": f"note of {run_id}"}
    answer = await client.post(f"/v1/runs/{run_id}/messages", json=note)
    assert answer.status_code == 201, answer.text
    acked.messages[run_id].add(note["id"])
    acked.wrote()

    task_id = f"{run_id}-task"
    task = {"id": task_id, "run_id": run_id, "model": "openai/gpt-4o"}
    answer = await client.post("/v1/tasks", json=task)
    assert answer.status_code == 201, answer.text
    acked.tasks[task_id] = run_id
    acked.wrote()
    ending = {"response_text": "done", "usage": usage}
    answer = await client.post(f"/v1/tasks/{task_id}/complete", json=ending)
    assert answer.status_code == 200, answer.text
    acked.completed_tasks.add(task_id)
    acked.wrote()

    asked, question, answered = f"{run_id}-ask", f"{run_id}-ask-q", f"{run_id}-ask-a"
    interaction = {
        "id": asked,
        "prompt": "What is 2+2?",
        "response": "4",
        "model": "openai/gpt-4o",
        "usage": usage,
        "user_message_id": question,
        "assistant_message_id": answered,
    }
    answer = await client.post(f"/v1/runs/{run_id}/interactions", json=interaction)
    assert answer.status_code == 201, answer.text
    acked.tasks[asked] = run_id
    acked.completed_tasks.add(asked)
    acked.messages[run_id] |= {question, answered}
    acked.wrote()

    entries = [
        {"node": "plan", "status": "completed", "data": {"step": 1}},
        {"node": "act", "status": "running"},
    ]
    answer = await client.put(f"/v1/automation/traces/thread/{run_id}", json={"entries": entries})
    assert answer.status_code in (200, 201), answer.text
    acked.trace_entries[run_id] = len(entries)
    acked.wrote()


async def crash_round(
    server: Server, key: str, size: Size, round_no: int, acked: Acknowledged
) -> None:
    """Load the running server, and kill -9 it once every stream is mid-reply."""
    killed = asyncio.Event()
    words = " ".join(f"w{i}" for i in range(size.reply_words))
    acked.expect_writes(size.writes)
    loop = asyncio.get_running_loop()
    started = loop.time()
    ready: list[asyncio.Future[Stream]] = [loop.create_future() for _ in range(size.streams)]
    connections = size.streams + size.writers + 8
    # On leaving, the group waits for (or, after a failure, cancels) every client.
    async with client_of(server, key, connections) as client, asyncio.TaskGroup() as group:
        for w in range(size.writers):
            group.create_task(write_until_killed(client, f"r{round_no}w{w}", acked, killed))
        for i, future in enumerate(ready):
            group.create_task(open_stream(client, f"r{round_no}s{i} {words}", future, killed))
        async with asyncio.timeout(DEADLINE_S):
            acked.streams += await asyncio.gather(*ready)
            await acked.goal_reached.wait()
        # Else some replies might have ended, and the test would prove less than it says.
        elapsed = loop.time() - started
        assert elapsed < size.reply_s / 2, "too slow to kill the replies mid-stream"
        await server.kill()
        killed.set()


# -- after the restart -------------------------------------------------------------------


async def assert_acknowledged_writes_kept(client: httpx.AsyncClient, acked: Acknowledged) -> int:
    """Every acknowledged row is there; returns how many were checked."""
    checked = 0
    tasks_by_run: dict[str, set[str]] = defaultdict(set)
    for task_id, run_id in acked.tasks.items():
        tasks_by_run[run_id].add(task_id)
    for run_id in acked.runs | set(acked.messages) | set(tasks_by_run):
        run = await client.get(f"/v1/runs/{run_id}")
        assert run.status_code == 200, f"acknowledged run {run_id} lost: {run.text}"
        stored_messages = {m["id"] for m in run.json()["messages"]}
        assert acked.messages[run_id] <= stored_messages, f"messages lost in {run_id}"
        stored_tasks = {t["id"]: t for t in (await client.get(f"/v1/runs/{run_id}/tasks")).json()}
        assert tasks_by_run[run_id] <= set(stored_tasks), f"tasks lost in {run_id}"
        for task_id in tasks_by_run[run_id] & acked.completed_tasks:
            assert stored_tasks[task_id]["status"] == "completed", stored_tasks[task_id]
        checked += 1 + len(acked.messages[run_id]) + len(tasks_by_run[run_id])
    for thread_id, count in acked.trace_entries.items():
        trace = await client.get(f"/v1/automation/traces/thread/{thread_id}")
        assert trace.status_code == 200, f"acknowledged trace {thread_id} lost"
        assert len(trace.json()["entries"]) >= count
        checked += count
    for stream in acked.streams:
        stored = (await client.get(f"/v1/runs/{stream.run_id}/messages")).json()
        [user_message] = stored
        assert (user_message["id"], user_message["content"]) == (stream.message_id, stream.content)
        checked += 3  # its run, task and user message
    return checked


async def interrupted(client: httpx.AsyncClient, stream: Stream) -> dict[str, Any]:
    """The stream's task once the sweeper has ended it."""
    while True:
        task: dict[str, Any] = (await client.get(f"/v1/tasks/{stream.task_id}")).json()
        if task["status"] not in ("pending", "streaming"):
            return task
        await asyncio.sleep(0.25)


async def assert_cut_off_replies_interrupted(client: httpx.AsyncClient, acked: Acknowledged) -> int:
    """Each reply the kill cut off ends `interrupted`, its saved text kept; returns the
    characters of partial text kept."""
    kept = 0
    async with asyncio.timeout(DEADLINE_S):
        ended = await asyncio.gather(*(interrupted(client, s) for s in acked.streams))
    for stream, task in zip(acked.streams, ended, strict=True):
        assert task["status"] == "interrupted", task
        assert task["error"]["kind"] == "lease_expired"
        text = task["response_text"]
        assert stream.full_reply.startswith(stream.seen_text)  # the client got the reply
        # Nothing shown as saved is lost, and nothing was made up or reordered.
        assert text.startswith(stream.saved_text)
        assert stream.full_reply.startswith(text)
        assert task["output_tokens"] > 0  # the streamed part was paid for: it is counted
        kept += len(text)
    return kept


async def assert_cut_off_messages_answered_again(
    client: httpx.AsyncClient, acked: Acknowledged
) -> None:
    for stream in acked.streams[:: max(1, len(acked.streams) // RETRIED)]:
        retry = f"/v1/messages/{stream.message_id}/retry"
        answer = await client.post(retry, json={"stream": False})
        assert answer.status_code == 200, answer.text
        result = answer.json()
        assert (result["status"], result["text"]) == ("completed", stream.full_reply)
        assert result["user_message_id"] == stream.message_id


async def run_verify(database_url: str) -> tuple[int, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHATLEDGER_")}
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "chatledger", "--db", database_url, "verify",
        env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    output, _ = await process.communicate()
    return await process.wait(), output.decode()


@pytest.fixture
def size(long_run: bool) -> Size:
    return LONG if long_run else SMALL


async def test_kill_9_mid_stream_loses_nothing_acknowledged(
    database_url: str, tmp_path: Path, size: Size
) -> None:
    server = Server(database_url, tmp_path / "server.log", size.lease_s)
    acked = Acknowledged()
    try:
        await server.start()
        key = await create_account(server)
        acked.wrote()
        for round_no in range(size.rounds):
            if round_no:
                await server.start()
            await crash_round(server, key, size, round_no, acked)
        await server.start()
        async with client_of(server, key, connections=16) as client:
            checked = await assert_acknowledged_writes_kept(client, acked)
            kept = await assert_cut_off_replies_interrupted(client, acked)
            await assert_cut_off_messages_answered_again(client, acked)
    finally:
        await server.stop()
    code, output = await run_verify(database_url)
    assert code == 0, output
    # The figures docs/reliability.md quotes (shown with `pytest -s`).
    print(
        f"\ncrash: {size.rounds} kill -9, {acked.writes} writes acknowledged, "
        f"{checked} acknowledged rows checked, 0 lost; {len(acked.streams)} replies cut off, "
        f"all interrupted, {kept} characters of partial text kept"
    )
