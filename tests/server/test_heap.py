"""A serving app settles its process's heap once it has started (server/heap.py), and
only then: an app built without `serving` (every test's) leaves the collector alone.
Each case runs in a subprocess of its own, since a frozen heap lasts as long as the
process."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from chatledger.server.heap import YOUNG_THRESHOLD

SERVE_ONCE = """
import asyncio, gc, json, sys
import httpx
from genai_prices import data_snapshot
from chatledger.config import Settings
from chatledger.server.app import create_app

async def main(url, serving):
    before = {"frozen": gc.get_freeze_count(), "threshold": gc.get_threshold()}
    app = create_app(Settings(database_url=url), no_auth=True, serving=serving)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://local") as client:
            answer = await client.get("/v1/me")
        after = {"frozen": gc.get_freeze_count(), "threshold": gc.get_threshold()}
    # Read at startup and frozen with it, the price catalogue is in no generation; read
    # only now (this call), it would be among the young.
    catalogue = data_snapshot.get_snapshot()
    collected = any(o is catalogue for o in gc.get_objects())
    print(json.dumps({"before": before, "after": after, "status": answer.status_code,
                      "catalogue_collected": collected}))

asyncio.run(main(sys.argv[1], sys.argv[2] == "serving"))
"""


def serve_once(tmp_path: Path, mode: str) -> dict[str, Any]:
    url = f"sqlite+aiosqlite:///{tmp_path / 'ledger.db'}"
    done = subprocess.run(
        [sys.executable, "-c", SERVE_ONCE, url, mode],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout.splitlines()[-1])
    return result


def test_a_serving_app_freezes_what_startup_left_and_collects_the_young_less_often(
    tmp_path: Path,
) -> None:
    seen = serve_once(tmp_path, "serving")
    assert seen["before"]["frozen"] == 0
    frozen = seen["after"]["frozen"]
    assert isinstance(frozen, int) and frozen > 10_000  # modules, routes, mappers…
    assert seen["after"]["threshold"][0] == YOUNG_THRESHOLD  # type: ignore[index]
    assert seen["status"] == 200  # and it serves
    assert seen["catalogue_collected"] is False  # read before the heap was frozen


def test_an_app_built_without_serving_leaves_the_collector_alone(tmp_path: Path) -> None:
    seen = serve_once(tmp_path, "not-serving")
    assert seen["after"] == seen["before"]
    assert seen["after"]["frozen"] == 0
    assert seen["status"] == 200
    assert seen["catalogue_collected"] is True
