"""`chatledger serve`: `--no-auth` is refused (exit 2, one clear line) unless bound to a
loopback address; on loopback, a real server in a subprocess answers as the local user;
`--workers N` serves one port and one ledger from N processes."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from chatledger.cli.app import app
from chatledger.cli.serve import is_loopback

DEADLINE_S = 30
ADMIN_KEY = "admin-key-for-the-serve-tests"


@pytest.mark.parametrize(
    "host", ["0.0.0.0", "::", "192.168.1.10", "example.com", "127.0.0.1.nip.io"]
)
def test_no_auth_is_refused_off_loopback(host: str, tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'ledger.db'}"
    result = CliRunner().invoke(app, ["--db", url, "serve", "--no-auth", "--host", host])
    assert result.exit_code == 2, result.output
    assert "--no-auth" in result.output and "loopback" in result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / "ledger.db").exists()  # refused before anything was opened


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.8.9.10", True),
        ("::1", True),
        ("[::1]", True),
        ("localhost", True),
        ("LOCALHOST", True),
        ("0.0.0.0", False),
        ("::", False),
        ("10.0.0.1", False),
        ("localhost.example.com", False),
        ("", False),
    ],
)
def test_what_counts_as_loopback(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


@contextlib.contextmanager
def serving(database_url: str, *options: str, admin_key: str = "") -> Iterator[Server]:
    """`chatledger serve <options>` on a free loopback port, in a subprocess, until the
    block ends."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    command = [sys.executable, "-m", "chatledger", "--db", database_url, "serve", *options]
    process = subprocess.Popen(
        [*command, "--port", str(port)],
        env={**os.environ, "CHATLEDGER_ADMIN_KEY": admin_key},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    base_url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + DEADLINE_S
        while True:
            assert process.poll() is None, process.stderr.read() if process.stderr else ""
            try:
                if httpx.get(f"{base_url}/healthz").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "the server did not start"
            time.sleep(0.05)
        yield Server(base_url, process)
    finally:
        process.terminate()
        process.wait(timeout=DEADLINE_S)
        if process.stderr is not None:
            process.stderr.close()


@dataclass(frozen=True)
class Server:
    url: str
    process: subprocess.Popen[bytes]

    @property
    def pid(self) -> int:
        return self.process.pid

    def wait(self) -> int:
        """The server's exit status, once it has ended."""
        return self.process.wait(timeout=DEADLINE_S)

    def children(self) -> list[int]:
        """Every process the server started (under `--workers N`, its supervisor's)."""
        children = Path(f"/proc/{self.pid}/task/{self.pid}/children").read_text().split()
        return [int(child) for child in children]

    def workers(self) -> list[int]:
        """The processes the supervisor started to serve the port."""
        return [
            child
            for child in self.children()
            if b"chatledger.server.worker" in Path(f"/proc/{child}/cmdline").read_bytes()
        ]

    def wait_for_workers(self, count: int, other_than: frozenset[int] = frozenset()) -> list[int]:
        """The workers, once there are `count` of them and none of `other_than`."""
        deadline = time.monotonic() + DEADLINE_S
        while True:
            workers = self.workers()
            if len(workers) == count and not other_than & set(workers):
                return workers
            assert time.monotonic() < deadline, f"workers {workers}, not {count} new ones"
            time.sleep(0.05)


@pytest.fixture
def local_server(tmp_path: Path) -> Iterator[str]:
    """`chatledger serve --no-auth` on a free loopback port, in a subprocess."""
    with serving(f"sqlite+aiosqlite:///{tmp_path / 'ledger.db'}", "--no-auth") as server:
        yield server.url


def test_no_auth_on_loopback_serves_the_local_user(local_server: str) -> None:
    with httpx.Client(base_url=local_server, timeout=DEADLINE_S) as client:
        me = client.get("/v1/me")
        assert me.status_code == 200, me.text
        assert (me.json()["user_id"], me.json()["project_id"]) == ("local", "local")
        reply = client.post("/v1/chat", json={"message": {"content": "hi"}, "stream": False})
        assert reply.status_code == 200, reply.text
        assert reply.json()["text"] == "Echo: hi"


def test_workers_share_the_port_and_the_ledger(empty_database_url: str) -> None:
    # A database never migrated (`serve` migrates it before starting the two workers,
    # tests/server/test_worker.py), then requests from many connections: every write
    # lands once, in one ledger.
    interactions, connections = 40, 8
    with serving(empty_database_url, "--workers", "2", admin_key=ADMIN_KEY) as server:
        assert len(server.workers()) == 2
        assert server.children() == server.workers()  # nothing else: no resource tracker
        admin = {"Authorization": f"Bearer {ADMIN_KEY}"}
        made = httpx.post(f"{server.url}/v1/admin/users", json={"id": "ana"}, headers=admin)
        assert made.status_code == 201, made.text
        headers = {"Authorization": f"Bearer {made.json()['api_key']['secret']}"}

        def send(n: int) -> int:
            # A connection of its own each time, so that both workers accept some.
            item = {
                "kind": "interaction",
                "id": f"task-{n}",
                "run_id": f"run-{n % 4}",
                "model": "echo",
                "prompt": f"question {n}",
                "response": f"answer {n}",
                "usage": {"input_tokens": 3, "output_tokens": 5},
            }
            body = {"items": [item]}
            with httpx.Client(base_url=server.url, headers=headers, timeout=DEADLINE_S) as client:
                return client.post("/v1/batch", json=body).json()["created"]

        with ThreadPoolExecutor(connections) as pool:
            created = sum(pool.map(send, [n % interactions for n in range(2 * interactions)]))
        usage = httpx.get(f"{server.url}/v1/usage/daily", headers=headers).json()
        runs = httpx.get(f"{server.url}/v1/runs", headers=headers).json()
        assert len(server.workers()) == 2  # neither died under the load
        # One client's batches: each answer closes its connection, so that the next
        # batch goes to a worker that is free (server/limits.py); other answers keep it.
        with httpx.Client(base_url=server.url, headers=headers, timeout=DEADLINE_S) as client:
            again = [client.post("/v1/batch", json={"items": []}) for _ in range(2)]
            me = client.get("/v1/me")
        assert [(a.status_code, a.headers.get("connection")) for a in again] == [(200, "close")] * 2
        assert me.status_code == 200 and me.headers.get("connection") != "close"
    assert created == interactions  # each sent twice, created once
    assert usage["totals"]["requests"] == interactions
    assert usage["totals"]["input_tokens"] == 3 * interactions
    assert sum(run["message_count"] for run in runs["items"]) == 2 * interactions


def test_a_worker_that_dies_is_replaced(tmp_path: Path) -> None:
    # Both workers killed, one after the other: whatever answers afterwards is a
    # replacement, on the same port, and the supervisor kept going.
    with serving(
        f"sqlite+aiosqlite:///{tmp_path / 'ledger.db'}", "--no-auth", "--workers", "2"
    ) as server:
        first = server.wait_for_workers(2)
        for killed in first:
            os.kill(killed, signal.SIGKILL)
        server.wait_for_workers(2, other_than=frozenset(first))
        with httpx.Client(base_url=server.url, timeout=DEADLINE_S) as client:
            # The replacements may still be starting: the port answers once one serves.
            deadline = time.monotonic() + DEADLINE_S
            while True:
                with contextlib.suppress(httpx.TransportError):
                    me = client.get("/v1/me", headers={"Connection": "close"})
                    break
                assert time.monotonic() < deadline, "no replacement served"
                time.sleep(0.05)
        assert me.status_code == 200 and me.json()["user_id"] == "local", me.text


def test_sighup_replaces_the_workers_without_a_refused_request(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'ledger.db'}"
    with serving(url, "--no-auth", "--workers", "2") as server:
        first = server.wait_for_workers(2)
        os.kill(server.pid, signal.SIGHUP)
        statuses = []
        deadline = time.monotonic() + DEADLINE_S
        # Requests on new connections all through the restart: the port stays open and
        # each is answered, by an old worker or a new one.
        while set(server.workers()) & set(first):
            with httpx.Client(base_url=server.url, timeout=DEADLINE_S) as client:
                statuses.append(client.get("/v1/me").status_code)
            assert time.monotonic() < deadline, "the old workers are still there"
        replaced = server.wait_for_workers(2, other_than=frozenset(first))
        with httpx.Client(base_url=server.url, timeout=DEADLINE_S) as client:
            statuses.append(client.get("/v1/me").status_code)
    assert len(replaced) == 2
    assert statuses and set(statuses) == {200}


def test_sigterm_stops_the_workers_and_then_serve(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'ledger.db'}"
    with serving(url, "--no-auth", "--workers", "2") as server:
        workers = server.wait_for_workers(2)
        os.kill(server.pid, signal.SIGTERM)
        assert server.wait() == 0
        assert not [pid for pid in workers if Path(f"/proc/{pid}").exists()]


def test_a_port_in_use_fails_serve_with_workers(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'ledger.db'}"
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        command = [sys.executable, "-m", "chatledger", "--db", url, "serve", "--no-auth"]
        done = subprocess.run(
            [*command, "--workers", "2", "--port", str(port)],
            capture_output=True,
            text=True,
            timeout=DEADLINE_S,
            check=False,
        )
    assert done.returncode == 3, done.stderr
    assert f"cannot listen on 127.0.0.1:{port}" in done.stderr
    assert "Traceback" not in done.stderr
