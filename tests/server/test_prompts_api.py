"""The prompt library over HTTP (SQLite and PostgreSQL): versions are immutable and
numbered, `latest` moves by itself while `production` stays until set, labels point only
at versions that exist; built-ins are listed for everyone, usable by name and read-only
(409 `read_only`); renders show each value's source and 422 on what is missing; and
another user's prompts are a 404."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

from tests.server.conftest import Account

PROMPTS = "/v1/prompts"
TEMPLATE = {
    "messages": [
        {"role": "system", "content": "You are {{persona}}. Answer in {{ language }}."},
        {"role": "user", "content": "Topic: {{topic}}"},
    ],
    "variables": [
        {"name": "persona", "default": "a tutor", "description": "who answers"},
        {"name": "language"},
    ],
    "settings": {"model": "echo", "temperature": 0.2},
}


def ok(response: httpx.Response, status: int = 200) -> Any:
    assert response.status_code == status, response.text
    return response.json()


def invalid(response: httpx.Response) -> set[str]:
    """The fields a 422 names."""
    assert response.status_code == 422, response.text
    details = response.json()["error"]["details"]
    if "errors" in details:
        return {problem["field"] for problem in details["errors"]}
    return {details["field"]}


async def create(client: httpx.AsyncClient, name: str = "tutor", **body: Any) -> Any:
    return ok(await client.post(PROMPTS, json={"name": name, **TEMPLATE, **body}), 201)


async def test_create_then_get_by_name(alice: Account) -> None:
    created = await create(alice.client, description="teaches things")

    assert created["name"] == "tutor" and created["builtin"] is False
    assert created["description"] == "teaches things"
    assert created["labels"] == {"latest": 1, "production": 1}
    assert created["latest_version"] == 1
    version = created["version"]
    assert version["version"] == 1 and version["created_by"] == "alice"
    assert version["messages"] == TEMPLATE["messages"]
    assert version["variables"] == [
        {"name": "persona", "default": "a tutor", "description": "who answers"},
        {"name": "language", "default": None, "description": None},
    ]
    assert version["settings"] == TEMPLATE["settings"]
    assert ok(await alice.client.get(f"{PROMPTS}/tutor")) == created
    listed = ok(await alice.client.get(PROMPTS))
    assert [p["name"] for p in listed["items"]] == ["tutor"]
    assert listed["items"][0]["labels"] == {"latest": 1, "production": 1}


async def test_versions_are_immutable_latest_moves_production_stays(alice: Account) -> None:
    first = await create(alice.client)
    changed = {"messages": [{"role": "system", "content": "v2 {{language}}"}]}

    second = ok(await alice.client.post(f"{PROMPTS}/tutor/versions", json=changed), 201)
    third = ok(
        await alice.client.post(f"{PROMPTS}/tutor/versions", json={"settings": {"x": 1}}), 201
    )

    assert (second["version"]["version"], third["version"]["version"]) == (2, 3)
    assert third["labels"] == {"latest": 3, "production": 1}
    # What a new version leaves out is copied from the newest one.
    assert second["version"]["variables"] == first["version"]["variables"]
    assert third["version"]["messages"] == changed["messages"]
    assert third["version"]["settings"] == {"x": 1}
    # Production (the default) is still version 1, exactly as it was written.
    default = ok(await alice.client.get(f"{PROMPTS}/tutor"))
    assert default["version"] == first["version"]
    assert (
        ok(await alice.client.get(f"{PROMPTS}/tutor?label=latest"))["version"] == (third["version"])
    )
    assert (
        ok(await alice.client.get(f"{PROMPTS}/tutor?version=2"))["version"] == (second["version"])
    )
    history = ok(await alice.client.get(f"{PROMPTS}/tutor/versions"))
    assert [v["version"] for v in history] == [3, 2, 1]
    assert history[2] == first["version"]
    # There is no way to change a version in place.
    path = f"{PROMPTS}/tutor/versions/1"
    assert (await alice.client.put(path, json=changed)).status_code in (404, 405)
    assert (await alice.client.patch(path, json=changed)).status_code in (404, 405)


async def test_labels_move_only_when_set(alice: Account) -> None:
    await create(alice.client)
    await alice.client.post(f"{PROMPTS}/tutor/versions", json={"settings": {}})

    moved = ok(await alice.client.put(f"{PROMPTS}/tutor/labels/production", json={"version": 2}))
    staging = ok(await alice.client.put(f"{PROMPTS}/tutor/labels/staging", json={"version": 1}))

    assert moved == {
        "prompt": "tutor",
        "label": "production",
        "version": 2,
        "version_id": moved["version_id"],
    }
    assert staging["version"] == 1
    detail = ok(await alice.client.get(f"{PROMPTS}/tutor"))
    assert detail["version"]["version"] == 2
    assert detail["labels"] == {"latest": 2, "production": 2, "staging": 1}
    assert ok(await alice.client.get(f"{PROMPTS}/tutor?label=staging"))["version"]["version"] == 1
    # A new version with labels moves them at once.
    third = ok(
        await alice.client.post(
            f"{PROMPTS}/tutor/versions", json={"settings": {}, "labels": ["staging"]}
        ),
        201,
    )
    assert third["labels"] == {"latest": 3, "production": 2, "staging": 3}


async def test_label_and_version_mistakes(alice: Account) -> None:
    await create(alice.client)
    label = f"{PROMPTS}/tutor/labels"

    assert invalid(await alice.client.put(f"{label}/production", json={"version": 7})) == {
        "version"
    }
    assert invalid(await alice.client.put(f"{label}/latest", json={"version": 1})) == {"label"}
    assert invalid(await alice.client.put(f"{label}/Bad Label", json={"version": 1})) == {
        "path.label"
    }
    assert invalid(await alice.client.put(f"{label}/production", json={"version": 0})) == {
        "version"
    }
    assert invalid(await alice.client.get(f"{PROMPTS}/tutor?version=1&label=production")) == {
        "version"
    }
    for missing in ("?version=9", "?label=staging"):
        response = await alice.client.get(f"{PROMPTS}/tutor{missing}")
        assert response.status_code == 404, response.text
    nope = await alice.client.put(f"{PROMPTS}/nope/labels/x", json={"version": 1})
    assert nope.status_code == 404, nope.text
    assert (await alice.client.get(f"{PROMPTS}/tutor?label=production")).status_code == 200


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"name": "builtins"}, "name"),
        ({"name": "a/b"}, "name"),
        ({"name": "-dash-first"}, "name"),
        ({"messages": []}, "messages"),
        ({"messages": [{"role": "tool", "content": "x"}]}, "messages.0.role"),
        ({"messages": [{"role": "user", "content": ""}]}, "messages.0.content"),
        ({"variables": [{"name": "a"}, {"name": "a"}]}, "variables"),
        ({"variables": [{"name": "bad-name"}]}, "variables.0.name"),
        ({"variables": [{"name": "v", "default": 3}]}, "variables.0.default"),
        ({"settings": {"model": 42}}, "settings"),
        ({"id": "not an id"}, "id"),
    ],
)
async def test_bad_templates_are_422_naming_the_field(
    alice: Account, body: dict[str, Any], field: str
) -> None:
    response = await alice.client.post(PROMPTS, json={"name": "p", **TEMPLATE, **body})

    assert invalid(response) == {field}
    assert ok(await alice.client.get(PROMPTS))["items"] == []


async def test_a_name_is_taken_once_per_project(alice: Account, bob: Account) -> None:
    await create(alice.client)

    again = await alice.client.post(PROMPTS, json={"name": "tutor", **TEMPLATE})

    assert again.status_code == 409, again.text
    await create(bob.client)  # another project: its own namespace


async def test_concurrent_versions_get_distinct_numbers(alice: Account) -> None:
    await create(alice.client)

    responses = await asyncio.gather(
        *(
            alice.client.post(f"{PROMPTS}/tutor/versions", json={"settings": {"n": n}})
            for n in range(6)
        )
    )

    numbers = sorted(ok(r, 201)["version"]["version"] for r in responses)
    assert numbers == [2, 3, 4, 5, 6, 7]
    assert ok(await alice.client.get(f"{PROMPTS}/tutor"))["labels"]["latest"] == 7


async def test_list_pages_by_name_and_searches(alice: Account) -> None:
    for name in ("delta", "alpha", "echo", "charlie", "bravo"):
        await create(alice.client, name)

    seen, cursor = [], None
    while True:
        params: dict[str, Any] = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        page = ok(await alice.client.get(PROMPTS, params=params))
        seen.append([p["name"] for p in page["items"]])
        cursor = page["next_cursor"]
        if cursor is None:
            break

    assert seen == [["alpha", "bravo"], ["charlie", "delta"], ["echo"]]
    found = ok(await alice.client.get(PROMPTS, params={"q": "HAR"}))["items"]
    assert [p["name"] for p in found] == ["charlie"]
    assert invalid(await alice.client.get(PROMPTS, params={"cursor": "garbage!"})) == {"cursor"}


async def test_builtins_are_visible_to_everyone_and_read_only(alice: Account, bob: Account) -> None:
    for account in (alice, bob):
        builtins = ok(await account.client.get(f"{PROMPTS}/builtins"))
        assert [b["name"] for b in builtins] == ["assistant", "summarize", "translate"]
        assert all(b["builtin"] and b["labels"]["production"] == 1 for b in builtins)
        summarize = ok(await account.client.get(f"{PROMPTS}/summarize"))
        assert summarize["builtin"] is True
        assert summarize["version"]["variables"][0]["name"] == "length"
        # Built-ins are not the project's own prompts.
        assert ok(await account.client.get(PROMPTS))["items"] == []

    writes = [
        alice.client.post(f"{PROMPTS}/summarize/versions", json={"settings": {}}),
        alice.client.put(f"{PROMPTS}/summarize/labels/production", json={"version": 1}),
        bob.client.put(f"{PROMPTS}/translate/labels/mine", json={"version": 1}),
    ]
    for response in await asyncio.gather(*writes):
        assert response.status_code == 409, response.text
        error = response.json()["error"]
        assert error["code"] == "read_only"
        assert "built-in prompts are read-only" in error["message"]
    assert ok(await bob.client.get(f"{PROMPTS}/summarize"))["labels"] == {
        "latest": 1,
        "production": 1,
    }


async def test_a_projects_own_prompt_shadows_the_builtin(alice: Account, bob: Account) -> None:
    mine = await create(alice.client, "summarize")

    assert ok(await alice.client.get(f"{PROMPTS}/summarize"))["id"] == mine["id"]
    ok(await alice.client.post(f"{PROMPTS}/summarize/versions", json={"settings": {}}), 201)
    assert ok(await bob.client.get(f"{PROMPTS}/summarize"))["builtin"] is True


async def test_render_resolves_and_names_sources(alice: Account) -> None:
    await create(alice.client)
    ok(
        await alice.client.put(
            f"/v1/variables/project/{alice.project_id}/topic", json={"value": "tides"}
        ),
        201,
    )

    rendered = ok(
        await alice.client.post(
            f"{PROMPTS}/tutor/render", json={"variables": {"language": "{{persona}}"}}
        )
    )

    assert rendered["prompt"] == "tutor" and rendered["version"] == 1
    assert rendered["messages"] == [
        {"role": "system", "content": "You are a tutor. Answer in {{persona}}."},
        {"role": "user", "content": "Topic: tides"},
    ]
    assert rendered["variables"] == {
        "persona": {"value": "a tutor", "source": "default"},
        "language": {"value": "{{persona}}", "source": "request"},
        "topic": {"value": "tides", "source": "project"},
    }
    assert rendered["settings"] == TEMPLATE["settings"]


async def test_render_names_every_missing_variable(alice: Account) -> None:
    await create(alice.client)

    response = await alice.client.post(f"{PROMPTS}/tutor/render", json={})

    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["details"] == {"field": "variables", "missing": ["language", "topic"]}
    assert "topic" in error["message"] and "language" in error["message"]


async def test_render_a_builtin_by_version_or_label(bob: Account) -> None:
    body = {"variables": {"language": "Japanese"}, "label": "production"}

    rendered = ok(await bob.client.post(f"{PROMPTS}/translate/render", json=body))
    by_version = ok(
        await bob.client.post(
            f"{PROMPTS}/translate/render", json={"variables": {"language": "x"}, "version": 1}
        )
    )

    assert rendered["builtin"] is True and by_version["version"] == 1
    assert "into Japanese." in rendered["messages"][0]["content"]
    summary = ok(await bob.client.post(f"{PROMPTS}/summarize/render"))
    assert summary["variables"]["length"] == {"value": "three sentences", "source": "default"}
    both = {"variables": {}, "version": 1, "label": "production"}
    assert invalid(await bob.client.post(f"{PROMPTS}/summarize/render", json=both)) == {""}


async def test_injection_attempts_stay_text(alice: Account) -> None:
    template = {
        "messages": [{"role": "system", "content": "Note: {{note}} | Secret: {{secret}}"}],
        "variables": [{"name": "secret", "default": "s3cr3t"}],
    }
    await alice.client.post(PROMPTS, json={"name": "notes", **template})
    long_value = "{" * 50_000 + "{{secret}}" + "}" * 49_990

    for note in ("{{secret}}", "{{ secret }}{{", "}}{{note}}", r"\g<0>\1", long_value):
        rendered = ok(
            await alice.client.post(f"{PROMPTS}/notes/render", json={"variables": {"note": note}})
        )
        assert rendered["messages"][0]["content"] == f"Note: {note} | Secret: s3cr3t"

    too_long = {"variables": {"note": "x" * 100_001}}
    assert invalid(await alice.client.post(f"{PROMPTS}/notes/render", json=too_long)) == {
        "variables.note"
    }


async def test_another_users_prompts_are_not_found(alice: Account, bob: Account) -> None:
    await create(alice.client, "alice-secret")

    for response in await asyncio.gather(
        bob.client.get(f"{PROMPTS}/alice-secret"),
        bob.client.get(f"{PROMPTS}/alice-secret/versions"),
        bob.client.post(f"{PROMPTS}/alice-secret/versions", json={"settings": {}}),
        bob.client.put(f"{PROMPTS}/alice-secret/labels/production", json={"version": 1}),
        bob.client.post(f"{PROMPTS}/alice-secret/render", json={}),
    ):
        assert response.status_code == 404, response.text
        assert "alice-secret" in response.json()["error"]["message"]
    assert ok(await bob.client.get(PROMPTS))["items"] == []
    assert ok(await alice.client.get(f"{PROMPTS}/alice-secret"))["labels"]["latest"] == 1
