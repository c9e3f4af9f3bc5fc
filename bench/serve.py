"""The server a bench measures, run as `python -m bench.serve <app> --port N`:

- `chatledger`: the real app (`create_app`, settings from CHATLEDGER_* as `chatledger
  serve` reads them);
- `bare-sse`: the live-chat baseline, an SSE endpoint streaming the same tokens with the
  same timing and recording nothing (bench/bare_sse.py).

Both run under one uvicorn configuration (no access log: a deployment's choice, and it
would cost both sides the same), so the difference between them is chatledger's work.
`--profile FILE` samples the whole process with pyinstrument and writes an HTML report
when the server stops. `--workers N` serves the port from N processes, as `chatledger
serve --workers N` does (chatledger's supervisor, server/supervisor.py, each worker
importing the app afresh; `--worker` is how it starts a bare-sse one).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NoReturn

import uvicorn
from fastapi import FastAPI

# chatledger's workers' log options: those `main` gives uvicorn for one process.
QUIET = ["--log-level", "warning", "--no-access-log"]


def _app(name: str) -> FastAPI:
    if name == "bare-sse":
        from bench.bare_sse import app
        from chatledger.server import heap

        # The same process settings as chatledger's server, whose lifespan does this.
        heap.settle()
        return app
    from chatledger.server.app import create_app

    return create_app(serving=True)


@contextlib.contextmanager
def _profiled(output: str | None) -> Iterator[None]:
    if output is None:
        yield
        return
    from pyinstrument import Profiler

    profiler = Profiler(interval=0.0005, async_mode="disabled")
    profiler.start()
    try:
        yield
    finally:
        profiler.stop()
        Path(output).write_text(profiler.output_html())
        print(profiler.output_text(unicode=True, show_all=False, color=False))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("app", choices=("chatledger", "bare-sse"))
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--profile", help="write a pyinstrument HTML profile here")
    parser.add_argument("--workers", type=int, default=1, help="processes serving the port")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:  # one of bare-sse's --workers, started by the supervisor
        from bench.bare_sse import app
        from chatledger.server import listening

        listening.serve_listening(app, factory=False, log_level="warning", access_log=False)
        return
    options: dict[str, Any] = {
        "host": "127.0.0.1",
        "port": args.port,
        "log_level": "warning",
        "access_log": False,
    }
    if args.workers > 1:
        if args.profile:
            parser.error("--profile samples one process: it cannot follow --workers")
        _supervise(args.app, args.workers, args.port)
    with _profiled(args.profile):
        uvicorn.run(_app(args.app), **options)


def _supervise(name: str, workers: int, port: int) -> NoReturn:
    """What `chatledger serve --workers N` does: migrate once, then become the supervisor
    (same pid) of N workers, none of this process's imports kept."""
    from chatledger.server import supervisor

    if name == "chatledger":
        from chatledger.config import Settings
        from chatledger.db.migrate import upgrade_at

        asyncio.run(upgrade_at(Settings().database_url))  # the database the workers open
        worker = ["-m", "chatledger.server.worker", *QUIET]
    else:
        worker = ["-m", "bench.serve", name, "--port", str(port), "--worker"]
    command = [sys.executable, "-m", supervisor.__name__, "--quiet", "--port", str(port)]
    command += ["--workers", str(workers), "--", sys.executable, *worker]
    os.execv(sys.executable, command)


if __name__ == "__main__":
    main()
