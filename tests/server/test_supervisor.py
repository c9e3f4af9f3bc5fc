"""The supervisor of `serve --workers N` (server/supervisor.py): a worker that cannot start
stops it (exit 3, nothing left running) rather than being restarted forever; the socket a
worker is handed keeps its family, so that its connections get TCP_NODELAY. What serving
through it looks like from outside (one port, dead workers replaced, SIGTERM) is in
tests/cli/test_serve.py."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from chatledger.server import listening, supervisor, worker

DEADLINE_S = 60


# The supervisor on a free port with two workers; the worker command follows "--".
SUPERVISOR = [sys.executable, "-m", supervisor.__name__, "--port", "0", "--workers", "2"]


def supervise(
    *worker_command: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """The supervisor with two workers of `worker_command`, run to its end."""
    return subprocess.run(
        [*SUPERVISOR, "--", *worker_command],
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=DEADLINE_S,
        check=False,
    )


@contextlib.contextmanager
def supervising(
    *worker_command: str, env: dict[str, str] | None = None
) -> Iterator[subprocess.Popen[str]]:
    """The supervisor with two workers of `worker_command`, running until the block ends
    (then killed, if the block has not stopped it)."""
    process = subprocess.Popen(
        [*SUPERVISOR, "--", *worker_command],
        env={**os.environ, **(env or {})},
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        yield process
    finally:
        process.kill()
        process.wait(timeout=DEADLINE_S)


def stopped(process: subprocess.Popen[str]) -> str:
    """SIGTERM to the supervisor: what it logged from then on, once it has ended."""
    process.terminate()
    _, rest = process.communicate(timeout=DEADLINE_S)
    return rest


def logged_until(process: subprocess.Popen[str], text: str) -> str:
    """The supervisor's log up to the first line holding `text`."""
    assert process.stderr is not None
    lines = []
    for line in process.stderr:
        lines.append(line)
        if text in line:
            break
    return "".join(lines)


def test_the_supervisor_loads_only_the_standard_library() -> None:
    # Its whole memory is what it imports (docs/benchmarks.md, "A twenty-fourth session").
    loaded = subprocess.run(
        [sys.executable, "-c", LOADED_BY_THE_SUPERVISOR],
        capture_output=True,
        text=True,
        timeout=DEADLINE_S,
        check=True,
    )
    assert loaded.stdout.split() == ["chatledger", "chatledger.server", supervisor.__name__]


# What importing it adds to a bare interpreter, outside the standard library (and
# dataclasses, which is in it).
LOADED_BY_THE_SUPERVISOR = f"""
import sys
before = set(sys.modules)
import {supervisor.__name__}
for name in sorted(set(sys.modules) - before):
    if name.partition(".")[0] not in sys.stdlib_module_names or name == "dataclasses":
        print(name)
"""


@pytest.mark.parametrize(
    "ending",
    ["raise SystemExit(1)", "import os; os.abort()"],
    ids=["exit-status", "crash"],
)
def test_a_worker_that_ends_before_serving_stops_the_supervisor(ending: str) -> None:
    done = supervise(sys.executable, "-c", ending)
    assert done.returncode == supervisor.STARTUP_FAILURE, done.stderr
    assert "before serving; stopping" in done.stderr


def test_a_worker_started_by_hand_says_what_starts_it() -> None:
    done = subprocess.run(
        [sys.executable, "-m", worker.__name__],
        env={k: v for k, v in os.environ.items() if k != supervisor.LISTEN_FD_ENV},
        capture_output=True,
        text=True,
        timeout=DEADLINE_S,
        check=False,
    )
    assert done.returncode == 1
    assert "chatledger serve --workers N" in done.stderr and "Traceback" not in done.stderr


def test_a_worker_killed_before_serving_is_replaced_after_a_growing_pause() -> None:
    # Workers that never say they serve: one killed by another's hand (the OOM killer,
    # an operator) is started again rather than taken for a broken app, after a pause
    # that doubles each time its replacement is killed too before any worker serves.
    with supervising(sys.executable, "-c", "import time; time.sleep(120)") as process:
        killed, kept = _children(process, 2)
        seen = [killed, kept]
        for pause in (supervisor.FIRST_PAUSE_S, 2 * supervisor.FIRST_PAUSE_S):
            at = time.monotonic()
            killed = _killed_and_replaced(process, killed, pause, seen)
            assert time.monotonic() - at >= pause
        assert set(_children(process, 2)) == {killed, kept}
        stderr = stopped(process)
    assert process.returncode == 0, stderr
    assert not [pid for pid in seen if _running(pid)]


def test_a_worker_serving_ends_the_growing_pause(tmp_path: Path) -> None:
    # Workers that serve once a file exists. Before it does, a worker killed is replaced
    # after the first pause, the next after twice as long; once they serve, the first
    # pause again.
    flag = tmp_path / "serve"
    wait = f"import os, time\nwhile not os.path.exists({str(flag)!r}): time.sleep(0.02)\n"
    with supervising(sys.executable, "-c", wait + FAKE_WORKER) as process:
        killed, kept = _children(process, 2)
        seen = [killed, kept]
        killed = _killed_and_replaced(process, killed, supervisor.FIRST_PAUSE_S, seen)
        flag.touch()
        logged_until(process, "2 workers serving")
        flag.unlink()
        os.kill(kept, signal.SIGKILL)  # it served: replaced at once, and never serves
        logged_until(process, f"Worker [{kept}] ended (signal 9); starting another.")
        _killed_and_replaced(process, _new_child(process, seen), supervisor.FIRST_PAUSE_S, seen)
        stderr = stopped(process)
    assert process.returncode == 0, stderr


def _killed_and_replaced(
    process: subprocess.Popen[str], worker: int, pause: float, seen: list[int]
) -> int:
    """SIGKILL to a worker that has not served: its replacement's pid, once the
    supervisor has said it pauses `pause` seconds first and started it (added to
    `seen`, every pid the test has met)."""
    os.kill(worker, signal.SIGKILL)
    logged = logged_until(process, f"Worker [{worker}] ended")
    assert f"ended (signal 9) before serving; another in {pause:g} s." in logged, logged
    return _new_child(process, seen)


def _new_child(process: subprocess.Popen[str], seen: list[int]) -> int:
    """The supervisor's one child not in `seen`, once it has one; added to `seen`."""
    children = _children_once(process, lambda pids: len(set(pids) - set(seen)) == 1)
    [new] = set(children) - set(seen)
    seen.append(new)
    return new


# A worker as the supervisor sees one: it says it serves, then waits to be stopped; with
# FAIL_IF set to a path that exists, it ends before serving instead.
FAKE_WORKER = """
import os, sys, time
if os.path.exists(os.environ.get("FAIL_IF", "/nonexistent")):
    sys.exit(1)
os.write(int(os.environ["CHATLEDGER_READY_FD"]), b"1")
time.sleep(120)
"""


def test_sighup_replaces_each_worker_once_its_replacement_serves(tmp_path: Path) -> None:
    flag = tmp_path / "fail"
    with supervising(sys.executable, "-c", FAKE_WORKER, env={"FAIL_IF": str(flag)}) as process:
        first = _children(process, 2)
        os.kill(process.pid, signal.SIGHUP)
        replaced = _children(process, 2, other_than=first)
        assert not [pid for pid in first if _running(pid)]
        # A new worker that cannot start ends the restart there; the workers stay.
        flag.touch()
        os.kill(process.pid, signal.SIGHUP)
        logged = logged_until(process, "before serving; restart abandoned")
        assert set(_children(process, 2)) == set(replaced)
        rest = stopped(process)
    assert process.returncode == 0, rest
    assert logged.count("Received SIGHUP") == 2


def _children(
    process: subprocess.Popen[str], count: int, other_than: list[int] | None = None
) -> list[int]:
    """The supervisor's children once there are `count`, none of them `other_than`."""
    return _children_once(
        process, lambda pids: len(pids) == count and not set(pids) & set(other_than or [])
    )


def _children_once(
    process: subprocess.Popen[str], wanted: Callable[[list[int]], bool]
) -> list[int]:
    """The supervisor's children once they are as `wanted`."""
    path = Path(f"/proc/{process.pid}/task/{process.pid}/children")
    deadline = time.monotonic() + DEADLINE_S
    while True:
        children = [int(child) for child in path.read_text().split()]
        if wanted(children):
            return children
        assert process.poll() is None, "the supervisor ended"
        assert time.monotonic() < deadline, f"children {children}"
        time.sleep(0.05)


def test_an_app_that_cannot_start_stops_the_supervisor_and_its_other_worker() -> None:
    # chatledger's own worker on a database it cannot reach: its lifespan fails, uvicorn
    # ends it before it serves, and the supervisor ends the other one too.
    unreachable = "postgresql+psycopg://postgres@127.0.0.1:1/nothing-listens-here"
    environment = {worker.DATABASE_URL_ENV: unreachable, worker.NO_AUTH_ENV: "1"}
    done = supervise(sys.executable, "-m", worker.__name__, env=environment)
    assert done.returncode == supervisor.STARTUP_FAILURE, done.stderr
    assert "Application startup failed" in done.stderr
    assert "before serving; stopping" in done.stderr
    assert "workers serving" not in done.stderr


def test_workers_end_when_their_supervisor_is_killed(tmp_path: Path) -> None:
    environment = {
        worker.DATABASE_URL_ENV: f"sqlite+aiosqlite:///{tmp_path / 'ledger.db'}",
        worker.NO_AUTH_ENV: "1",
    }
    worker_command = [sys.executable, "-m", worker.__name__, "--no-access-log"]
    with supervising(*worker_command, env=environment) as process:
        logged_until(process, "workers serving")
        workers = _children(process, 2)
    # The block's end killed the supervisor: no chance to stop anything itself.
    deadline = time.monotonic() + DEADLINE_S
    while running := [pid for pid in workers if _running(pid)]:
        assert time.monotonic() < deadline, f"workers {running} outlived their supervisor"
        time.sleep(0.05)


def _running(pid: int) -> bool:
    """Whether the process is there and not a zombie (an orphan's end is reaped by
    whichever process adopts it, which in a container may never do it)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    return "State:\tZ" not in status


def uvicorns_fd(listen_fd: int) -> socket.socket:
    """How `uvicorn --fd` adopts a socket (uvicorn/server.py)."""
    return socket.fromfd(listen_fd, socket.AF_UNIX, socket.SOCK_STREAM)


@pytest.mark.parametrize(
    ("adopt", "nodelay"), [(listening.adopt, True), (uvicorns_fd, False)], ids=["ours", "uvicorn"]
)
def test_connections_on_the_handed_socket_get_tcp_nodelay(
    adopt: Callable[[int], socket.socket], nodelay: bool
) -> None:
    listening = supervisor.bind("127.0.0.1", 0)
    handed = adopt(os.dup(listening.fileno()))
    port = listening.getsockname()[1]

    async def accept_one() -> int:
        accepted: asyncio.Future[int] = asyncio.get_running_loop().create_future()

        async def on_connection(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            option = writer.get_extra_info("socket").getsockopt(
                socket.IPPROTO_TCP, socket.TCP_NODELAY
            )
            accepted.set_result(option)
            writer.close()

        server = await asyncio.start_server(on_connection, sock=handed)
        async with server:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            option = await asyncio.wait_for(accepted, DEADLINE_S)
            writer.close()
            return option

    try:
        assert bool(asyncio.run(accept_one())) is nodelay
    finally:
        listening.close()
