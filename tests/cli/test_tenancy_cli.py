"""`chatledger users create` and `chatledger keys create|list|revoke`, checked against a
real app on the same database: a printed key works, a revoked one stops.
The tests are sync: the CLI runs its own event loop."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import httpx
from typer.testing import CliRunner

from chatledger import Settings
from chatledger.cli.app import app as cli
from chatledger.server.app import create_app


def run(db: str, *args: str) -> str:
    result = CliRunner().invoke(cli, ["--db", db, *args])
    assert result.exit_code == 0, result.output
    return result.output


def status_with(db: str, key: str) -> int:
    return asyncio.run(_status_with(db, key))


async def _status_with(db: str, key: str) -> int:
    app = create_app(Settings(database_url=db))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            response = await client.get("/v1/me", headers={"Authorization": f"Bearer {key}"})
            return response.status_code


def test_users_and_keys_from_the_command_line(tmp_path: Path) -> None:
    db = f"sqlite+aiosqlite:///{tmp_path / 'ledger.db'}"
    made = json.loads(run(db, "users", "create", "--id", "dana", "--email", "d@x.io", "--json"))
    assert made["user_id"] == "dana"
    assert status_with(db, made["key"]) == 200

    service = json.loads(
        run(
            db,
            "keys",
            "create",
            "-p",
            made["project_id"],
            "-u",
            "dana",
            "--kind",
            "service",
            "--name",
            "backend",
            "--json",
        )
    )
    assert status_with(db, service["key"]) == 200

    listed = json.loads(run(db, "keys", "list", "-p", made["project_id"], "--json"))
    assert {k["id"] for k in listed} == {made["key_id"], service["key_id"]}
    assert made["key"] not in json.dumps(listed) and service["key"] not in json.dumps(listed)

    assert "revoked" in run(db, "keys", "revoke", service["key_id"], "-p", made["project_id"])
    assert status_with(db, service["key"]) == 401
    assert status_with(db, made["key"]) == 200


def test_key_for_a_stranger_or_unknown_project_is_refused(tmp_path: Path) -> None:
    db = f"sqlite+aiosqlite:///{tmp_path / 'ledger.db'}"
    made = json.loads(run(db, "users", "create", "--id", "erin", "--json"))
    stranger = CliRunner().invoke(
        cli, ["--db", db, "keys", "create", "-p", made["project_id"], "-u", "mallory"]
    )
    assert stranger.exit_code == 1
    assert "not found" in stranger.output
    unknown = CliRunner().invoke(cli, ["--db", db, "keys", "create", "-p", "nope", "-u", "erin"])
    assert unknown.exit_code == 1
    again = CliRunner().invoke(cli, ["--db", db, "users", "create", "--id", "erin"])
    assert again.exit_code == 1
    assert "exists" in again.output
