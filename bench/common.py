"""What every bench script shares: its command line, the databases it runs on (a fresh
SQLite file, a fresh PostgreSQL database dropped afterwards), the server it measures (a
real uvicorn in a subprocess), percentiles, and one report line per figure:

    figure | value | baseline | ratio | target | PASS/FAIL

A bench is a report, not a test: a missed target prints FAIL and the script still exits 0.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx
import psycopg
from sqlalchemy.engine import make_url

POSTGRES_ADMIN_URL = os.environ.get(
    "CHATLEDGER_BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
ADMIN_KEY = "bench-admin-key"
STARTUP_TIMEOUT_S = 60.0
REPO = Path(__file__).resolve().parent.parent
PROFILES = REPO / "bench" / "profiles"


# -- the command line -------------------------------------------------------------------


def arguments(
    description: str, *, workers: bool = False, default_workers: int | None = 1
) -> argparse.Namespace:
    """The options every script takes; `workers`: also `--workers N`, for a script whose
    load can keep several server processes busy (`default_workers` when not given)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument(
        "--quick", action="store_true", help="small sizes: a smoke run that every part works"
    )
    parser.add_argument(
        "--db",
        choices=("sqlite", "postgresql", "both"),
        default="both",
        help="which database to measure (default both)",
    )
    if workers:
        parser.add_argument(
            "--workers",
            type=int,
            default=default_workers,
            help="processes serving each server, chatledger's and a baseline's",
        )
    return parser.parse_args()


def process_counts(asked: int | None) -> list[int]:
    """The server process counts to measure: as asked, else one and then one per core."""
    if asked is not None:
        return [asked]
    cores = os.cpu_count() or 1
    return [1, cores] if cores > 1 else [1]


def dialects(choice: str) -> list[str]:
    """The databases to measure; PostgreSQL only if its server answers."""
    chosen = ["sqlite", "postgresql"] if choice == "both" else [choice]
    if "postgresql" in chosen and not _postgres_answers():
        print(
            f"PostgreSQL is not reachable at {POSTGRES_ADMIN_URL} (set "
            "CHATLEDGER_BENCH_POSTGRES_URL): measuring without it",
            flush=True,
        )
        chosen.remove("postgresql")
    return chosen


def _postgres_answers() -> bool:
    dsn = make_url(POSTGRES_ADMIN_URL).set(drivername="postgresql")
    try:
        with psycopg.connect(dsn.render_as_string(hide_password=False), connect_timeout=3):
            return True
    except psycopg.Error:
        return False


# -- databases --------------------------------------------------------------------------


@dataclass(frozen=True)
class BenchDatabase:
    dialect: str
    # SQLAlchemy URL (what chatledger takes) and the plain driver's form of it.
    url: str
    driver_target: str


@contextlib.contextmanager
def fresh_database(dialect: str) -> Iterator[BenchDatabase]:
    """An empty database of `dialect`, deleted afterwards."""
    if dialect == "sqlite":
        with tempfile.TemporaryDirectory(prefix="chatledger-bench-") as directory:
            path = Path(directory) / "bench.db"
            yield BenchDatabase("sqlite", f"sqlite+aiosqlite:///{path}", str(path))
        return
    admin = make_url(POSTGRES_ADMIN_URL).set(drivername="postgresql")
    name = f"chatledger_bench_{uuid.uuid4().hex[:12]}"
    admin_dsn = admin.render_as_string(hide_password=False)
    with psycopg.connect(admin_dsn, autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{name}"')
    target = admin.set(database=name)
    try:
        yield BenchDatabase(
            "postgresql",
            target.set(drivername="postgresql+psycopg").render_as_string(hide_password=False),
            target.render_as_string(hide_password=False),
        )
    finally:
        with psycopg.connect(admin_dsn, autocommit=True) as connection:
            connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


# -- the server under test --------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@dataclass(frozen=True)
class Server:
    url: str
    pid: int


@contextlib.contextmanager
def serving(
    app: str,
    name: str,
    env: dict[str, str] | None = None,
    database_url: str | None = None,
    workers: int = 1,
) -> Iterator[Server]:
    """`bench.serve <app>` under uvicorn in a subprocess, until the block ends. With
    PROFILE=1 in the environment the server profiles itself into bench/profiles/<name>
    (one worker only)."""
    port = free_port()
    environment = {**os.environ, "CHATLEDGER_ADMIN_KEY": ADMIN_KEY, **(env or {})}
    if database_url is not None:
        environment["CHATLEDGER_DATABASE_URL"] = database_url
    command = [sys.executable, "-m", "bench.serve", app, "--port", str(port)]
    command += ["--workers", str(workers)]
    if os.environ.get("PROFILE") and workers == 1:
        PROFILES.mkdir(exist_ok=True)
        command += ["--profile", str(PROFILES / f"{name}.html")]
    process = subprocess.Popen(command, cwd=REPO, env=environment)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_until_up(process, url)
        yield Server(url, process.pid)
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _wait_until_up(process: subprocess.Popen[bytes], url: str) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the bench server exited with status {process.returncode}")
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"the bench server did not answer within {STARTUP_TIMEOUT_S} s")


def new_user_key(server: Server, user_id: str = "bench") -> str:
    """A user with their own project (owner), made through the admin route: its API key."""
    response = httpx.post(
        f"{server.url}/v1/admin/users",
        json={"id": user_id},
        headers={"Authorization": f"Bearer {ADMIN_KEY}"},
    )
    response.raise_for_status()
    secret: str = response.json()["api_key"]["secret"]
    return secret


def process_tree(pid: int) -> list[int]:
    """The process and its descendants (a server's workers), as they are now."""
    found = [pid]
    for process in found:
        for thread in Path(f"/proc/{process}/task").iterdir():
            found += [int(child) for child in (thread / "children").read_text().split()]
    return found


def peak_rss_mb(pid: int) -> float:
    """The peak resident memory so far (VmHWM) of the process and its workers, summed
    (each one's own peak: an upper bound of what they held at one moment), in MB."""
    return sum(_own_peak_rss_mb(process) for process in process_tree(pid))


def _own_peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmHWM for process {pid}")


def cpu_seconds(pid: int) -> float:
    """CPU time the process and its workers have used so far (user + system), in
    seconds."""
    ticks = 0
    for process in process_tree(pid):
        fields = Path(f"/proc/{process}/stat").read_text().rsplit(")", 1)[1].split()
        ticks += int(fields[11]) + int(fields[12])  # utime, stime (fields 14, 15 of stat)
    return ticks / os.sysconf("SC_CLK_TCK")


# -- figures ----------------------------------------------------------------------------


def percentile(values: Sequence[float], p: float) -> float:
    """The p-th percentile (0-100), interpolated between the closest ranks."""
    ordered = sorted(values)
    if not ordered:
        return math.nan
    rank = (len(ordered) - 1) * p / 100
    low, high = math.floor(rank), math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


@dataclass(frozen=True)
class Figure:
    name: str
    value: float
    unit: str
    baseline: float | None = None
    # Target as printed ("<= 5 ms") and whether the value meets it; None: no target.
    target: str = ""
    passed: bool | None = None

    def line(self) -> str:
        ratio = "-"
        if self.baseline:
            ratio = f"{self.value / self.baseline:.2f}x"
        baseline = "-" if self.baseline is None else _number(self.baseline, self.unit)
        verdict = "" if self.passed is None else ("PASS" if self.passed else "FAIL")
        cells = [self.name, _number(self.value, self.unit), baseline, ratio, self.target]
        return " | ".join([*cells, verdict])


def _number(value: float, unit: str) -> str:
    if math.isnan(value):
        return f"n/a {unit}"
    digits = 0 if abs(value) >= 100 else 1 if abs(value) >= 10 else 2
    return f"{value:,.{digits}f} {unit}".strip()


def header(title: str) -> None:
    print(f"\n== {title}", flush=True)
    print("figure | value | baseline | ratio | target | verdict", flush=True)


def report(figure: Figure) -> None:
    print(figure.line(), flush=True)


def note(text: str) -> None:
    print(f"   {text}", flush=True)
