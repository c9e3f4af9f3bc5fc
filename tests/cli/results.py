"""How a CLI test reads a command's result, and the rows it left in the SQLite file."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

from typer.testing import Result


def ok(result: Result) -> str:
    assert result.exit_code == 0, (result.output, result.exception)
    return result.stdout


def failed(result: Result) -> str:
    """The command exited 1 on purpose (typer.Exit), with no traceback."""
    assert result.exit_code == 1, (result.output, result.exception)
    assert isinstance(result.exception, SystemExit)
    assert "Traceback" not in result.output
    return result.output


def query(db_file: Path, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    with sqlite3.connect(db_file) as connection:
        return connection.execute(sql, params).fetchall()
