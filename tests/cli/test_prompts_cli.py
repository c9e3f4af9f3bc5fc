"""`chatledger prompts`, `vars` and `chat --prompt`, through typer's CliRunner on a SQLite
file: variables set, read, listed and removed; prompts created, versioned, labelled,
shown and rendered; a chat that starts from a prompt with `--var` values; mistakes are
one line and exit 1."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tests.cli.results import failed, ok, query


def test_vars_set_get_list_rm(cli: Any) -> None:
    assert "set user_timezone at user/local" in ok(cli("vars", "set", "user_timezone", "UTC"))
    ok(cli("vars", "set", "team", "Platform", "--scope", "project", "-d", "who we are"))
    assert "updated" in ok(cli("vars", "set", "user_timezone", "Asia/Tokyo"))

    assert ok(cli("vars", "get", "user_timezone")).strip() == "Asia/Tokyo"
    assert ok(cli("vars", "get", "team", "--scope", "project")).strip() == "Platform"
    listed = json.loads(ok(cli("vars", "list", "--json")))
    assert [(v["scope"], v["key"], v["value"]) for v in listed] == [
        ("project", "team", "Platform"),
        ("user", "user_timezone", "Asia/Tokyo"),
    ]
    assert listed[0]["description"] == "who we are"
    assert "Platform" in ok(cli("vars"))  # the default verb lists
    only_user = json.loads(ok(cli("vars", "--scope", "user", "--json")))
    assert [v["key"] for v in only_user] == ["user_timezone"]

    ok(cli("vars", "rm", "team", "--scope", "project"))
    assert "variable 'project/local/team' not found" in failed(
        cli("vars", "get", "team", "--scope", "project")
    )
    assert "not found" in failed(cli("vars", "rm", "team", "--scope", "project"))


def test_vars_mistakes_are_one_line(cli: Any) -> None:
    assert "--scope" in failed(cli("vars", "set", "k", "v", "--scope", "galaxy"))
    assert "key" in failed(cli("vars", "set", "bad-key", "v"))
    assert "no org" in failed(cli("vars", "set", "k", "v", "--scope", "org"))


def test_prompts_create_version_label_show_render(cli: Any, tmp_path: Path) -> None:
    out = ok(
        cli(
            "prompts", "create", "tutor",
            "--system", "You teach {{subject}} to {{ audience }}.",
            "--default", "audience=beginners",
            "--set", "temperature=0.3",
            "-d", "a patient tutor",
        )
    )  # fmt: skip
    assert "tutor v1" in out and "production=1" in out
    template = {"messages": [{"role": "system", "content": "v2: {{subject}}"}]}
    (tmp_path / "v2.json").write_text(json.dumps(template))
    assert "tutor v2" in ok(cli("prompts", "version", "tutor", "--file", str(tmp_path / "v2.json")))

    shown = json.loads(ok(cli("prompts", "show", "tutor", "--json")))
    assert (shown["version"], shown["labels"]) == (1, {"latest": 2, "production": 1})
    assert shown["settings"] == {"temperature": 0.3}
    ok(cli("prompts", "label", "tutor", "production", "2"))
    assert json.loads(ok(cli("prompts", "show", "tutor", "--json")))["version"] == 2
    assert "You teach" in ok(cli("prompts", "show", "tutor", "--version", "1"))
    listed = json.loads(ok(cli("prompts", "--json")))
    assert [(p["name"], p["labels"]["production"]) for p in listed] == [("tutor", 2)]

    rendered = json.loads(
        ok(cli("prompts", "render", "tutor", "--version", "1", "--var", "subject=tides", "--json"))
    )
    assert rendered["messages"] == [{"role": "system", "content": "You teach tides to beginners."}]
    assert rendered["variables"]["audience"] == {"value": "beginners", "source": "default"}
    text = ok(cli("prompts", "render", "tutor", "--var", "subject=a={{b}}"))
    assert "v2: a={{b}}" in text and "(request)" in text


def test_prompts_mistakes_are_one_line(cli: Any) -> None:
    ok(cli("prompts", "create", "p", "--system", "{{a}} {{b}}"))

    assert "no value for a, b" in failed(cli("prompts", "render", "p"))
    assert "exists" in failed(cli("prompts", "create", "p", "--system", "x"))
    assert "messages" in failed(cli("prompts", "create", "q"))
    assert "name" in failed(cli("prompts", "create", "builtins", "--system", "x"))
    assert "no version 5" in failed(cli("prompts", "label", "p", "production", "5"))
    assert "read-only" in failed(cli("prompts", "label", "summarize", "production", "1"))
    assert "NAME=VALUE" in failed(cli("prompts", "render", "p", "--var", "novalue"))
    assert "not found" in failed(cli("prompts", "show", "missing"))


def test_builtins_are_listed_and_usable(cli: Any) -> None:
    names = [p["name"] for p in json.loads(ok(cli("prompts", "builtins", "--json")))]
    assert names == ["assistant", "summarize", "translate"]
    out = ok(cli("prompts", "show", "translate"))
    assert "(built-in)" in out and "{{language}}" in out


def test_chat_with_a_prompt_and_vars(cli: Any, db_file: Path) -> None:
    ok(cli("vars", "set", "team", "Platform", "--scope", "project"))
    ok(cli("prompts", "create", "guide", "--system", "You are {{persona}} for {{team}}."))

    out = ok(cli("chat", "--prompt", "guide", "--var", "persona=a pirate", "ahoy"))

    assert out.splitlines()[0] == "Echo: ahoy"
    [(run_id, prompt_id, values)] = query(
        db_file, "SELECT id, prompt_id, variable_values FROM runs"
    )
    [(version_id,)] = query(
        db_file, "SELECT id FROM prompt_versions WHERE version = 1 AND project_id = 'local'"
    )
    assert prompt_id == version_id
    assert json.loads(values) == {"persona": "a pirate", "team": "Platform"}
    assert query(db_file, "SELECT role, content FROM messages ORDER BY seq") == [
        ("system", "You are a pirate for Platform."),
        ("user", "ahoy"),
        ("assistant", "Echo: ahoy"),
    ]
    # A follow-up reuses the run's prompt.
    ok(cli("chat", "--run", run_id, "again"))
    roles = [role for (role,) in query(db_file, "SELECT role FROM messages ORDER BY seq")]
    assert roles == ["system", "user", "assistant", "user", "assistant"]


def test_chat_with_a_builtin_and_its_mistakes(cli: Any, db_file: Path) -> None:
    assert "no value for language" in failed(cli("chat", "-p", "translate", "hola"))
    assert "--prompt" in failed(cli("chat", "--prompt-version", "1", "hola"))
    assert "NAME=VALUE" in failed(cli("chat", "-p", "translate", "--var", "language", "hola"))
    assert query(db_file, "SELECT count(*) FROM runs") == [(0,)]

    ok(
        cli(
            "chat",
            "-p",
            "translate",
            "--prompt-label",
            "production",
            "--var",
            "language=German",
            "hola",
        )
    )

    [(content,)] = query(db_file, "SELECT content FROM messages WHERE role = 'system'")
    assert "into German." in content
