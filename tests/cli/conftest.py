"""The CLI tests' shared fixtures: a SQLite file per test and `cli(...)`, which runs
`chatledger --db <that file> ...` through typer's CliRunner at a wide terminal."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from chatledger.cli.app import app

Invoke = Callable[..., Result]


@pytest.fixture
def db_file(tmp_path: Path) -> Path:
    return tmp_path / "cli" / "ledger.db"


@pytest.fixture
def cli(db_file: Path) -> Invoke:
    runner = CliRunner()
    url = f"sqlite+aiosqlite:///{db_file}"

    def invoke(*args: str) -> Result:
        return runner.invoke(app, ["--db", url, *args], env={"COLUMNS": "200"})

    return invoke
