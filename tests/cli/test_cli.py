"""The `chatledger` command, run through typer's CliRunner against a SQLite file: chat and
its summary, continuing a run, failures and their exit codes, listing and showing runs
(also as JSON), verify / repair, the database path and the demo. Errors are one line and
exit 1, never a traceback."""

from __future__ import annotations

import json
import re
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from tests.cli.results import failed, ok, query


def test_chat_prints_the_reply_and_what_was_recorded(cli: Any, db_file: Path) -> None:
    out = ok(cli("chat", "hello there"))

    [(run_id, name, task_count, message_count, total_tokens)] = query(
        db_file, "SELECT id, name, task_count, message_count, total_tokens FROM runs"
    )
    [(task_id, status, input_tokens, output_tokens, ttft_ms)] = query(
        db_file, "SELECT id, status, input_tokens, output_tokens, ttft_ms FROM tasks"
    )
    assert out.splitlines()[0] == "Echo: hello there"
    assert (name, task_count, message_count, status) == ("hello there", 1, 2, "completed")
    assert total_tokens == input_tokens + output_tokens
    assert run_id in out
    assert task_id in out
    assert f"{input_tokens} in, {output_tokens} out" in out
    assert re.search(rf"time to first token\W+{ttft_ms} ms", out)
    assert "free" in out


def test_chat_with_run_continues_the_conversation(cli: Any, db_file: Path) -> None:
    ok(cli("chat", "first"))
    [(run_id,)] = query(db_file, "SELECT id FROM runs")

    out = ok(cli("chat", "--run", run_id, "second"))

    assert out.splitlines()[0] == "Echo: second"
    assert query(db_file, "SELECT id, name, task_count, message_count FROM runs") == [
        (run_id, "first", 2, 4)
    ]
    contents = query(db_file, "SELECT role, content FROM messages ORDER BY seq")
    assert contents == [
        ("user", "first"),
        ("assistant", "Echo: first"),
        ("user", "second"),
        ("assistant", "Echo: second"),
    ]


def test_a_failed_reply_exits_1_and_can_be_retried(cli: Any, db_file: Path) -> None:
    out = failed(cli("chat", "--set", "fail_at=0", "will fail"))

    assert "reply failed" in out
    assert "injected failure at token 0" in out
    [(message_id, status)] = query(db_file, "SELECT id, status FROM messages")
    assert status == "error"
    assert query(db_file, "SELECT status FROM tasks") == [("failed",)]

    out = ok(cli("retry", message_id))

    assert out.splitlines()[0] == "Echo: will fail"
    assert query(db_file, "SELECT attempt, status FROM tasks ORDER BY attempt") == [
        (1, "failed"),
        (2, "completed"),
    ]
    assert query(db_file, "SELECT role, status FROM messages ORDER BY seq") == [
        ("user", "complete"),
        ("assistant", "complete"),
    ]
    # Answered now: retrying again is refused with a message, not a traceback.
    assert "already answered" in failed(cli("retry", message_id))


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["chat", "--set", "delay_ms=abc", "hi"], "delay_ms"),
        (["chat", "--set", "oops", "hi"], "expected KEY=VALUE"),
        (["chat", "--model", "nope/x", "hi"], "unknown provider 'nope'"),
        (["chat", "--run", "no-such-run", "hi"], None),
    ],
)
def test_bad_chat_input_exits_1_with_a_message(
    cli: Any, db_file: Path, args: list[str], expected: str | None
) -> None:
    if expected is None:
        # Continuing a run that does not exist yet is allowed: the run is ensured.
        ok(cli(*args))
        assert query(db_file, "SELECT id, message_count FROM runs") == [("no-such-run", 2)]
        return
    out = failed(cli(*args))

    assert out.startswith("error: ")
    assert expected in out
    assert query(db_file, "SELECT count(*) FROM runs") == [(0,)]
    assert query(db_file, "SELECT count(*) FROM tasks") == [(0,)]


def test_runs_list_and_show(cli: Any, db_file: Path) -> None:
    ok(cli("chat", "the older one"))
    ok(cli("chat", "the newer one"))
    [(older,)] = query(db_file, "SELECT id FROM runs WHERE name = 'the older one'")
    [(newer,)] = query(db_file, "SELECT id FROM runs WHERE name = 'the newer one'")

    table = ok(cli("runs"))
    assert "the older one" in table and "the newer one" in table
    assert older in table and newer in table
    assert ok(cli("runs", "list")) == table

    listed = json.loads(ok(cli("runs", "list", "-n", "1", "--json")))
    assert [run["id"] for run in listed] == [newer]
    assert listed[0]["name"] == "the newer one"
    assert (listed[0]["task_count"], listed[0]["message_count"]) == (1, 2)
    everything = json.loads(ok(cli("runs", "list", "--json")))
    assert [run["id"] for run in everything] == [newer, older]

    shown = json.loads(ok(cli("runs", "show", older, "--json")))
    [(total_tokens,)] = query(db_file, "SELECT total_tokens FROM runs WHERE id = ?", older)
    assert (shown["id"], shown["name"], shown["total_tokens"]) == (
        older,
        "the older one",
        total_tokens,
    )
    assert [(m["seq"], m["role"], m["status"], m["content"]) for m in shown["messages"]] == [
        (1, "user", "complete", "the older one"),
        (2, "assistant", "complete", "Echo: the older one"),
    ]
    [task] = shown["tasks"]
    assert (task["attempt"], task["status"], task["model"], task["price_source"]) == (
        1,
        "completed",
        "echo",
        "free",
    )
    assert task["input_tokens"] + task["output_tokens"] == total_tokens
    assert task["ttft_ms"] is not None and task["error"] is None

    shown_table = ok(cli("runs", "show", older))
    assert "Echo: the older one" in shown_table
    assert f"run {older}" in shown_table


def test_runs_show_of_an_unknown_run_is_a_clear_error(cli: Any) -> None:
    ok(cli("chat", "something"))

    out = failed(cli("runs", "show", "no-such-run"))

    assert out.strip() == "error: run 'no-such-run' not found"


def test_verify_finds_drift_and_repair_fixes_it(cli: Any, db_file: Path) -> None:
    ok(cli("chat", "count me"))
    failed(cli("chat", "--set", "fail_at=2", "count me too, partly"))
    assert "every total equals its rows" in ok(cli("verify"))
    [(run_id, tokens)] = query(db_file, "SELECT id, total_tokens FROM runs WHERE name = 'count me'")

    with sqlite3.connect(db_file) as connection:
        connection.execute(
            "UPDATE runs SET total_tokens = total_tokens + 5 WHERE id = ?", (run_id,)
        )

    result = cli("verify")
    out = failed(result)
    assert f"drift: runs local/{run_id}: total_tokens is {tokens + 5}, rows say {tokens}" in out
    assert run_id in result.stderr

    repaired = ok(cli("verify", "--repair"))
    assert f"repaired: runs local/{run_id}: total_tokens" in repaired
    assert query(db_file, "SELECT total_tokens FROM runs WHERE id = ?", run_id) == [(tokens,)]
    assert "every total equals its rows" in ok(cli("verify"))


def test_db_path_prints_the_file(cli: Any, db_file: Path) -> None:
    out = ok(cli("db", "path"))

    assert out.strip() == str(db_file)


def test_demo_runs_a_conversation_and_verifies_it(cli: Any, db_file: Path) -> None:
    out = ok(cli("demo"))

    assert "verify: clean" in out
    assert "Echo: I want to become an NBA basketball player. Where do I start?" in out
    assert "Echo: And what should I eat on game days?" in out
    assert query(db_file, "SELECT task_count, message_count FROM runs") == [(2, 4)]
    assert query(db_file, "SELECT count(*) FROM tasks WHERE status = 'completed'") == [(2,)]
