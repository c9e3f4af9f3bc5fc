"""A worker of `chatledger serve --workers N` (server/worker.py) builds its app from the
environment `serve` sets, and loads only what serving needs: on a database already up to
date (which `serve` sees to before it starts its workers) neither alembic nor the HTTP
client nor the command line, ~17 MB of every worker's memory (docs/benchmarks.md). Each
case runs in a subprocess of its own: a module once loaded stays for the process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from chatledger.server import worker

# Loaded by a process that uses them, never by one that only serves.
NOT_FOR_SERVING = ("alembic", "httpx", "chatledger.client", "chatledger.cli", "typer", "rich")

SERVE_ONCE = f"""
import asyncio, json, sys
from chatledger.server import worker

async def main():
    app = worker.app()
    async with app.router.lifespan_context(app):
        loaded = [name for name in {NOT_FOR_SERVING!r} if name in sys.modules]
        import httpx  # only now: the test's own client
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://local") as client:
            me = await client.get("/v1/me")
    print(json.dumps({{"loaded": loaded, "status": me.status_code, "user": me.json()}}))

asyncio.run(main())
"""


def serve_once(database_url: str) -> dict[str, object]:
    environment = {
        **os.environ,
        worker.DATABASE_URL_ENV: database_url,
        worker.NO_AUTH_ENV: "1",
    }
    done = subprocess.run(
        [sys.executable, "-c", SERVE_ONCE],
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    result: dict[str, object] = json.loads(done.stdout.splitlines()[-1])
    return result


def test_a_worker_on_an_up_to_date_database_loads_only_what_serving_needs(
    tmp_path: Path,
) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'ledger.db'}"

    migrating = serve_once(url)  # a new database: this worker migrates it
    assert migrating["loaded"] == ["alembic"]
    up_to_date = serve_once(url)

    assert up_to_date["loaded"] == []
    assert up_to_date["status"] == 200  # and it serves, as the local user (--no-auth)
    assert isinstance(up_to_date["user"], dict)
    assert up_to_date["user"]["user_id"] == "local"
