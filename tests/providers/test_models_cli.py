"""`chatledger models`: what the settings configure, as a table and as JSON; keys never
shown; a broken provider setting is one line and exit 1."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from chatledger.cli.app import app
from tests.providers.conftest import OPENAI_KEY

ENV = {"COLUMNS": "200", "CHATLEDGER_OPENAI_API_KEY": None, "CHATLEDGER_ANTHROPIC_API_KEY": None}


def run(*args: str, **env: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["models", *args], env={**ENV, **env})
    assert "Traceback" not in result.output
    return result.exit_code, result.output


def test_with_nothing_configured_echo_is_listed_and_the_rest_says_what_to_set() -> None:
    code, out = run("--json")

    assert code == 0, out
    body = json.loads(out)
    assert body["default_model"] == "echo"
    by_name = {p["name"]: p for p in body["providers"]}
    assert by_name["echo"]["configured"] is True
    assert by_name["openai"]["configured"] is False
    assert "CHATLEDGER_OPENAI_API_KEY" in by_name["openai"]["hint"]
    assert by_name["anthropic"]["configured"] is False


def test_configured_providers_show_base_urls_but_never_keys() -> None:
    env = {
        "CHATLEDGER_OPENAI_API_KEY": OPENAI_KEY,
        "CHATLEDGER_PROVIDERS__OLLAMA__BASE_URL": "http://localhost:11434/v1",
    }

    code, out = run("--json", **env)
    assert code == 0, out
    by_name = {p["name"]: p for p in json.loads(out)["providers"]}
    assert by_name["openai"] == {
        "name": "openai",
        "kind": "openai",
        "base_url": "https://api.openai.com/v1",
        "configured": True,
        "has_key": True,
        "hint": None,
    }
    assert by_name["ollama"]["base_url"] == "http://localhost:11434/v1"
    assert by_name["ollama"]["has_key"] is False

    code, table = run(**env)
    assert code == 0, table
    assert "http://localhost:11434/v1" in table and "ollama/<model>" in table
    assert "openai/<model>" in table and "CHATLEDGER_ANTHROPIC_API_KEY" in table
    for shown in (out, table):
        assert OPENAI_KEY not in shown


@pytest.mark.parametrize("value", ["localhost:11434", "ftp://x"])
def test_a_bad_provider_setting_is_one_line_and_exit_1(value: str) -> None:
    code, out = run(CHATLEDGER_PROVIDERS__OLLAMA__BASE_URL=value)

    assert code == 1
    assert "invalid settings" in out and "must be an http:// or https:// URL" in out
