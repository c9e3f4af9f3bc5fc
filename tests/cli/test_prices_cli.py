"""`chatledger prices` through typer's CliRunner on a SQLite file: an override added,
listed, quoted, applied to a chat's recorded cost, and removed; bad options are one line
naming the option, exit 1."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.cli.results import ok


def test_an_override_is_added_listed_quoted_and_removed(cli: Any) -> None:
    added = ok(
        cli("prices", "add", "gpt-4o*", "--input", "2", "--output", "8", "--provider", "openai")
    )
    override_id = added.split()[1].rstrip(":")

    [listed] = json.loads(ok(cli("prices", "list", "--json")))
    assert (listed["id"], listed["provider"], listed["model_pattern"]) == (
        override_id,
        "openai",
        "gpt-4o*",
    )
    assert (listed["input_per_mtok"], listed["cache_read_per_mtok"]) == ("2.000000000", None)
    assert override_id[:8] in ok(cli("prices"))

    quoted = ok(cli("prices", "quote", "openai/gpt-4o", "--input-tokens", "1000000"))
    assert quoted.strip() == f"$2 (override {override_id})"

    assert f"removed {override_id}" in ok(cli("prices", "rm", override_id))
    after = json.loads(
        ok(cli("prices", "quote", "openai/gpt-4o", "--input-tokens", "1000000", "--json"))
    )
    assert after["cost_usd"] == "2.500000000"  # gpt-4o's list price again
    assert after["price_source"].startswith("genai-prices ")


def test_an_override_prices_the_echo_models_chats(cli: Any) -> None:
    ok(cli("prices", "add", "*", "--provider", "echo", "--input", "1000", "--output", "1000"))

    ok(cli("chat", "hello there"))

    [run] = json.loads(ok(cli("runs", "list", "--json")))
    assert float(run["total_cost_usd"]) > 0


@pytest.mark.parametrize(
    ("args", "option"),
    [
        (("--input", "-1", "--output", "1"), "--input"),
        (("--input", "1", "--output", "2", "--cache-write", "-3"), "--cache-write"),
        (("--input", "1", "--output", "2", "--provider", "Not A Provider"), "--provider"),
    ],
)
def test_a_bad_option_is_one_line_naming_it(cli: Any, args: tuple[str, ...], option: str) -> None:
    result = cli("prices", "add", "gpt-4o*", *args)

    assert result.exit_code == 1
    assert result.output.startswith(f"error: {option}:")
    assert json.loads(ok(cli("prices", "list", "--json"))) == []
