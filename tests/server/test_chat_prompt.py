"""Chat with a prompt over HTTP (SQLite and PostgreSQL): the first turn renders the
prompt, stores its messages as the run's first rows and sends them before the user's
message; the run records the version it used and the values; follow-ups and retries
replay it; a missing variable or an unknown prompt is refused before anything is
written; and a run that has started keeps its prompt."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import httpx
from fastapi import FastAPI

from chatledger.providers import ChatMessage
from chatledger.providers.echo import count_input_tokens
from tests.server.conftest import Account, authed
from tests.server.test_chat_api import assert_no_drift, sse_body

GUIDE = {
    "name": "guide",
    "messages": [
        {"role": "system", "content": "You are {{persona}} for {{team}}. Today: {{current_date}}."}
    ],
    "variables": [{"name": "persona", "default": "a guide"}],
    "settings": {"temperature": 0.2},
}


def ok(response: httpx.Response, status: int = 200) -> Any:
    assert response.status_code == status, response.text
    return response.json()


async def chat(client: httpx.AsyncClient, content: str, **body: Any) -> httpx.Response:
    message = {
        "content": content,
        **({"id": body.pop("message_id")} if "message_id" in body else {}),
    }
    return await client.post("/v1/chat", json={"message": message, "stream": False, **body})


def tokens_for(*messages: tuple[str, str]) -> int:
    """What echo counts for a model request of exactly these messages."""
    return count_input_tokens(tuple(ChatMessage(role, content) for role, content in messages))


async def setup_guide(account: Account) -> dict[str, Any]:
    ok(await account.client.post("/v1/prompts", json=GUIDE), 201)
    team = f"/v1/variables/project/{account.project_id}/team"
    ok(await account.client.put(team, json={"value": "Platform"}), 201)
    return ok(await account.client.get("/v1/prompts/guide"))


async def test_the_first_turn_renders_the_prompt_before_the_users_message(
    app: FastAPI, alice: Account
) -> None:
    prompt = await setup_guide(alice)

    before = datetime.now(UTC).date().isoformat()
    body = ok(await chat(alice.client, "hello", prompt="guide", variables={"persona": "a pirate"}))
    after = datetime.now(UTC).date().isoformat()

    assert body["status"] == "completed" and body["text"] == "Echo: hello"
    run = ok(await alice.client.get(f"/v1/runs/{body['run_id']}"))
    assert run["prompt_id"] == prompt["version"]["id"]
    today = run["variable_values"].pop("current_date")
    assert today in {before, after}
    assert run["variable_values"] == {"persona": "a pirate", "team": "Platform"}
    system = f"You are a pirate for Platform. Today: {today}."
    assert [(m["role"], m["content"]) for m in run["messages"]] == [
        ("system", system),
        ("user", "hello"),
        ("assistant", "Echo: hello"),
    ]
    assert run["messages"][0]["metadata"]["prompt"] == {
        "name": "guide",
        "version": 1,
        "id": prompt["version"]["id"],
        "builtin": False,
    }
    assert run["name"] == "hello" and run["message_count"] == 3
    assert run["settings"] == {"temperature": 0.2, "model": "echo"}
    # The model was sent the rendered system message, then the user's.
    task = ok(await alice.client.get(f"/v1/tasks/{body['task_id']}"))
    assert task["input_tokens"] == tokens_for(("system", system), ("user", "hello"))
    assert task["request"]["settings"] == {"temperature": 0.2}
    await assert_no_drift(app)


async def test_follow_ups_reuse_the_runs_prompt(app: FastAPI, alice: Account) -> None:
    await setup_guide(alice)
    first = ok(await chat(alice.client, "one", prompt="guide"))
    run_id = first["run_id"]

    second = ok(await chat(alice.client, "two", run_id=run_id))
    # Sending the same prompt again (a client that always does) changes nothing.
    third = ok(await chat(alice.client, "three", run_id=run_id, prompt={"name": "guide"}))

    run = ok(await alice.client.get(f"/v1/runs/{run_id}"))
    roles = [m["role"] for m in run["messages"]]
    assert roles == ["system", *["user", "assistant"] * 3]
    system = run["messages"][0]["content"]
    assert system.startswith("You are a guide for Platform.")
    task = ok(await alice.client.get(f"/v1/tasks/{third['task_id']}"))
    history = [(m["role"], m["content"]) for m in run["messages"][:-1]]
    assert task["input_tokens"] == tokens_for(*history)
    assert second["text"] == "Echo: two" and run["task_count"] == 3
    await assert_no_drift(app)


async def test_a_started_run_keeps_its_prompt(alice: Account) -> None:
    first_version = (await setup_guide(alice))["version"]["id"]
    first = ok(await chat(alice.client, "one", prompt="guide"))
    await alice.client.post("/v1/prompts/guide/versions", json={"settings": {}})

    for prompt in ({"name": "guide", "label": "latest"}, "summarize"):
        response = await chat(alice.client, "two", run_id=first["run_id"], prompt=prompt)
        assert response.status_code == 409, response.text
    run = ok(await alice.client.get(f"/v1/runs/{first['run_id']}"))
    assert run["message_count"] == 3
    # Naming its own prompt is fine: a bare name keeps the version the run started with,
    # even once production has moved; the first version by number is that version too.
    ok(await alice.client.put("/v1/prompts/guide/labels/production", json={"version": 2}))
    for prompt in ("guide", {"name": "guide", "version": 1}):
        ok(await chat(alice.client, "again", run_id=first["run_id"], prompt=prompt))
    run = ok(await alice.client.get(f"/v1/runs/{first['run_id']}"))
    assert [m["role"] for m in run["messages"]].count("system") == 1
    assert run["prompt_id"] == first_version
    # A plain run that has started takes no prompt either.
    plain = ok(await chat(alice.client, "no prompt"))
    late = await chat(alice.client, "now one", run_id=plain["run_id"], prompt="summarize")
    assert late.status_code == 409, late.text


async def test_an_empty_run_takes_a_prompt_on_its_first_turn(alice: Account) -> None:
    ok(await alice.client.put("/v1/runs/prepared", json={"settings": {"temperature": 0.9}}), 201)

    body = ok(
        await chat(
            alice.client,
            "Bonjour",
            run_id="prepared",
            prompt={"name": "translate", "version": 1},
            variables={"language": "English"},
        )
    )

    run = ok(await alice.client.get("/v1/runs/prepared"))
    assert run["messages"][0]["role"] == "system"
    assert "into English." in run["messages"][0]["content"]
    assert run["variable_values"] == {"language": "English"}
    assert run["settings"] == {"temperature": 0.9}  # the run's own settings are kept
    assert body["text"] == "Echo: Bonjour"
    # Follow-ups need not repeat the values: the prompt is not rendered again.
    again = await chat(alice.client, "Merci", run_id="prepared", prompt="translate")
    assert again.status_code == 200, again.text


async def test_refused_before_anything_is_written(alice: Account) -> None:
    await setup_guide(alice)

    missing = await chat(alice.client, "hi", prompt="translate")
    unknown = await chat(alice.client, "hi", prompt="nope")
    unknown_version = await chat(alice.client, "hi", prompt={"name": "guide", "version": 4})
    alone = await chat(alice.client, "hi", variables={"language": "French"})
    bad_zone = await chat(
        alice.client, "hi", prompt="guide", variables={"user_timezone": "Mars/Base"}
    )

    assert missing.status_code == 422, missing.text
    assert missing.json()["error"]["details"] == {"field": "variables", "missing": ["language"]}
    assert unknown.status_code == 404 and unknown_version.status_code == 404
    assert alone.status_code == 422 and alone.json()["error"]["details"]["field"] == "variables"
    assert bad_zone.status_code == 422, bad_zone.text
    assert "Mars/Base" in bad_zone.json()["error"]["message"]
    assert ok(await alice.client.get("/v1/runs"))["items"] == []


async def test_a_bad_prompt_reference_is_422(alice: Account) -> None:
    for prompt, field in (
        ({"name": "guide", "version": 1, "label": "production"}, "prompt"),
        ({"name": "a/b"}, "prompt.name"),
        ("builtins", "prompt.name"),
        ({"version": 1}, "prompt.name"),
        ({"name": "guide", "label": "Not A Label"}, "prompt.label"),
        (42, "prompt"),
    ):
        response = await chat(alice.client, "hi", prompt=prompt)
        assert response.status_code == 422, response.text
        fields = {p["field"] for p in response.json()["error"]["details"]["errors"]}
        assert fields == {field}


async def test_a_streamed_chat_with_a_prompt(alice: Account) -> None:
    response = await alice.client.post(
        "/v1/chat",
        json={"message": {"content": "Long text here."}, "prompt": "summarize"},
    )

    assert response.status_code == 200, response.text
    events = sse_body(response)
    assert [kind for _, kind, _ in events][-2:] == ["usage", "done"]
    run_id = events[0][2]["id"]
    run = ok(await alice.client.get(f"/v1/runs/{run_id}"))
    assert "in three sentences." in run["messages"][0]["content"]
    assert run["variable_values"] == {"length": "three sentences"}
    builtin = ok(await alice.client.get("/v1/prompts/summarize"))
    assert run["prompt_id"] == builtin["version"]["id"]


async def test_a_retried_first_turn_replays_the_prompt(alice: Account) -> None:
    await setup_guide(alice)
    failed = await chat(
        alice.client, "try me", prompt="guide", settings={"fail_at": 0}, message_id="m1"
    )
    assert failed.status_code == 502, failed.text

    retried = ok(await alice.client.post("/v1/messages/m1/retry", json={"stream": False}))

    run = ok(await alice.client.get(f"/v1/runs/{retried['run_id']}"))
    assert [m["role"] for m in run["messages"]] == ["system", "user", "assistant"]
    task = ok(await alice.client.get(f"/v1/tasks/{retried['task_id']}"))
    system = run["messages"][0]["content"]
    assert task["input_tokens"] == tokens_for(("system", system), ("user", "try me"))


async def test_a_service_key_chats_for_an_end_user_with_their_values(
    app: FastAPI, alice: Account
) -> None:
    await setup_guide(alice)
    key = ok(await alice.client.post("/v1/keys", json={"kind": "service"}), 201)
    opened: list[httpx.AsyncClient] = []
    service = authed(app, key["secret"], opened)
    try:
        ok(await service.put("/v1/variables/user/u1/persona", json={"value": "u1's coach"}), 201)

        body = ok(await chat(service, "hi", prompt="guide", user_id="u1"))

        run = ok(await service.get(f"/v1/runs/{body['run_id']}"))
        assert run["user_id"] == "u1"
        assert run["variable_values"]["persona"] == "u1's coach"
        assert run["messages"][0]["content"].startswith("You are u1's coach for Platform.")
    finally:
        for client in opened:
            await client.aclose()


async def test_the_prompts_model_is_used_unless_the_chat_names_one(alice: Account) -> None:
    template = {**GUIDE, "name": "modelled", "settings": {"model": "echo/echo"}}
    ok(await alice.client.post("/v1/prompts", json=template), 201)
    broken = {**GUIDE, "name": "broken", "settings": {"model": "nope/x"}}
    ok(await alice.client.post("/v1/prompts", json=broken), 201)
    team = f"/v1/variables/project/{alice.project_id}/team"
    ok(await alice.client.put(team, json={"value": "T"}), 201)

    by_prompt = ok(await chat(alice.client, "a", prompt="modelled"))
    by_chat = ok(await chat(alice.client, "b", prompt="broken", model="echo"))
    refused = await chat(alice.client, "c", prompt="broken")

    assert ok(await alice.client.get(f"/v1/runs/{by_prompt['run_id']}"))["settings"] == {
        "model": "echo/echo"
    }
    assert ok(await alice.client.get(f"/v1/runs/{by_chat['run_id']}"))["settings"]["model"] == (
        "echo"
    )
    assert refused.status_code == 422, refused.text
    assert refused.json()["error"]["details"]["field"] == "model"
