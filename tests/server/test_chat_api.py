"""Live chat over HTTP (ASGI transport, SQLite and PostgreSQL): the save flow answered as
JSON, statuses decided before anything streams (422 bad input, 404 not yours, 502 a
model that fails before its first token, 409 a message already answered), and retries
that reuse the message id and count usage once. Streams as they arrive are in
test_chat_live.py, against a real server."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from chatledger.server.deps import AppState
from chatledger.verify import find_drift
from tests.server.conftest import Account, authed

CONTENT = "alpha beta gamma delta"
REPLY = f"Echo: {CONTENT}"


async def chat(client: httpx.AsyncClient, content: str = CONTENT, **body: Any) -> httpx.Response:
    message = {
        "content": content,
        **({"id": body.pop("message_id")} if "message_id" in body else {}),
    }
    return await client.post("/v1/chat", json={"message": message, "stream": False, **body})


def sse_body(response: httpx.Response) -> list[tuple[str, str, Any]]:
    """(id, event, data) of a whole SSE body."""
    events = []
    for block in response.text.strip().split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line)
        events.append((fields["id"], fields["event"], json.loads(fields["data"])))
    return events


def invalid_field(response: httpx.Response) -> str:
    assert response.status_code == 422, response.text
    details = response.json()["error"]["details"]
    if "errors" in details:
        return ".".join(p["field"] for p in details["errors"][:1])
    return str(details["field"])


async def assert_no_drift(app: FastAPI) -> None:
    state: AppState = app.state.chatledger
    async with state.database.reading() as session:
        assert await find_drift(session) == []


async def test_json_chat_records_the_run_and_a_follow_up_reuses_it(
    app: FastAPI, alice: Account
) -> None:
    first = await chat(alice.client, message_id="m1")
    assert first.status_code == 200, first.text
    body = first.json()
    assert body["status"] == "completed" and body["text"] == REPLY
    assert body["user_message_id"] == "m1" and body["error"] is None
    assert body["usage"]["input_tokens"] > 0 and body["usage"]["output_tokens"] > 0
    assert body["ttft_ms"] is not None and body["total_ms"] >= body["ttft_ms"]
    task = (await alice.client.get(f"/v1/tasks/{body['task_id']}")).json()
    assert (task["status"], task["response_text"], task["user_message_id"]) == (
        "completed",
        REPLY,
        "m1",
    )

    second = await chat(alice.client, "and again", run_id=body["run_id"])
    assert second.status_code == 200, second.text
    assert second.json()["run_id"] == body["run_id"]
    assert second.json()["text"] == "Echo: and again"
    run = (await alice.client.get(f"/v1/runs/{body['run_id']}")).json()
    assert run["name"] == CONTENT and run["user_id"] == "alice"
    assert (run["task_count"], run["message_count"]) == (2, 4)
    assert [(m["role"], m["content"], m["status"]) for m in run["messages"]] == [
        ("user", CONTENT, "complete"),
        ("assistant", REPLY, "complete"),
        ("user", "and again", "complete"),
        ("assistant", "Echo: and again", "complete"),
    ]
    assert run["messages"][1]["id"] == body["assistant_message_id"]
    assert (await alice.client.get("/v1/runs")).json()["items"][0]["id"] == body["run_id"]
    await assert_no_drift(app)


async def test_a_streamed_chat_sends_the_events_in_order(alice: Account) -> None:
    response = await alice.client.post(
        "/v1/chat", json={"message": {"content": CONTENT}, "run_name": "Greek letters"}
    )
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/event-stream")
    events = sse_body(response)
    kinds = [kind for _, kind, _ in events]
    assert kinds[:2] == ["run", "task"] and kinds[-2:] == ["usage", "done"]
    assert set(kinds[2:-2]) == {"delta"}
    assert [int(event_id) for event_id, _, _ in events] == list(range(1, len(events) + 1))
    run, task, done = events[0][2], events[1][2], events[-1][2]
    assert run["name"] == "Greek letters" and run["created"] is True
    assert response.headers["x-task-id"] == task["id"] == done["task_id"]
    assert "".join(data["text"] for _, kind, data in events if kind == "delta") == REPLY
    stored = (await alice.client.get(f"/v1/runs/{run['id']}")).json()
    assert stored["messages"][1]["id"] == done["message_id"]
    assert stored["messages"][1]["content"] == REPLY


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"message": {"content": ""}}, "message.content"),
        ({"message": {"content": "   "}}, "message.content"),
        ({"message": {}}, "message.content"),
        ({}, "message"),
        ({"message": {"content": "hi", "id": "not an id"}}, "message.id"),
        ({"message": {"content": "hi"}, "run_id": "a/b"}, "run_id"),
        ({"message": {"content": "hi"}, "model": "nope/x"}, "model"),
        ({"message": {"content": "hi"}, "model": "no-provider"}, "model"),
        ({"message": {"content": "hi"}, "settings": {"delay_ms": "slow"}}, "settings.delay_ms"),
        ({"message": {"content": "hi"}, "settings": {"fail_at": -1}}, "settings.fail_at"),
        ({"message": {"content": "hi"}, "run_name": " "}, "run_name"),
        ({"message": {"content": "hi"}, "stream": "maybe"}, "stream"),
    ],
)
async def test_bad_input_is_422_naming_the_field_and_writes_nothing(
    alice: Account, body: dict[str, Any], field: str
) -> None:
    for stream in (False, True):
        assert invalid_field(
            await alice.client.post("/v1/chat", json={"stream": stream} | body)
        ) == (field)
    assert (await alice.client.get("/v1/runs")).json()["items"] == []


async def test_runs_messages_and_tasks_of_others_are_404(
    app: FastAPI, alice: Account, bob: Account
) -> None:
    mine = (await chat(alice.client, run_id="r1", settings={"fail_at": 0})).json()
    assert mine["error"]["code"] == "provider_error"
    ids = mine["error"]["details"]
    # Bob in his own project, and Bob as a member of Alice's project.
    await alice.client.post(
        f"/v1/projects/{alice.project_id}/members", json={"user_id": "bob", "role": "member"}
    )
    key = (await bob.client.post("/v1/keys", json={"project_id": alice.project_id})).json()
    opened: list[httpx.AsyncClient] = []
    bob_there = authed(app, key["secret"], opened)
    for client in (bob.client, bob_there):
        retried = await client.post(f"/v1/messages/{ids['message_id']}/retry", json={})
        assert retried.status_code == 404, retried.text
        assert (await client.get(f"/v1/tasks/{ids['task_id']}/stream")).status_code == 404
    assert (await chat(bob_there, run_id="r1")).status_code == 404
    assert (await chat(bob_there, run_id="r1", stream=True)).status_code == 404
    # Nothing was written for Bob: Alice's run holds her one message.
    assert (await alice.client.get("/v1/runs/r1")).json()["message_count"] == 1
    assert (await bob_there.get("/v1/runs")).json()["items"] == []
    assert (await alice.client.get("/v1/tasks/nope/stream")).status_code == 404
    for client in opened:
        await client.aclose()


@pytest.mark.parametrize("stream", [False, True])
async def test_a_model_failing_before_its_first_token_is_502_then_a_retry_answers_it(
    app: FastAPI, alice: Account, stream: bool
) -> None:
    failed = await chat(alice.client, message_id="m1", settings={"fail_at": 0}, stream=stream)
    assert failed.status_code == 502, failed.text
    error = failed.json()["error"]
    assert error["code"] == "provider_error"
    details = error["details"]
    assert details["kind"] == "injected_failure" and details["retryable"] is False
    assert details["message_id"] == "m1"
    run_id, task_id = details["run_id"], details["task_id"]
    task = (await alice.client.get(f"/v1/tasks/{task_id}")).json()
    assert (task["status"], task["response_text"]) == ("failed", "")
    [message] = (await alice.client.get(f"/v1/runs/{run_id}/messages")).json()
    assert (message["id"], message["status"]) == ("m1", "error")
    assert message["error"]["task_id"] == task_id

    retried = await alice.client.post("/v1/messages/m1/retry", json={"stream": stream})
    assert retried.status_code == 200, retried.text
    if stream:
        _, kind, done = sse_body(retried)[-1]
        assert kind == "done"
        second_task, retried_answer = done["task_id"], done["message_id"]
    else:
        assert retried.json()["status"] == "completed"
        assert retried.json()["user_message_id"] == "m1"
        second_task, retried_answer = (
            retried.json()["task_id"],
            retried.json()["assistant_message_id"],
        )
    attempts = (await alice.client.get(f"/v1/runs/{run_id}/tasks")).json()
    assert [(t["id"], t["attempt"], t["status"]) for t in attempts] == [
        (task_id, 1, "failed"),
        (second_task, 2, "completed"),
    ]
    run = (await alice.client.get(f"/v1/runs/{run_id}")).json()
    assert [(m["id"], m["role"], m["status"]) for m in run["messages"]] == [
        ("m1", "user", "complete"),
        (retried_answer, "assistant", "complete"),
    ]
    assert (run["task_count"], run["message_count"]) == (1, 2)
    assert run["total_tokens"] == sum(t["input_tokens"] + t["output_tokens"] for t in attempts)

    again = await alice.client.post("/v1/messages/m1/retry")
    assert again.status_code == 409 and again.json()["error"]["code"] == "conflict"
    # The same message sent again is answered as a retry: it was answered, so 409 too.
    assert (await chat(alice.client, message_id="m1", run_id=run_id)).status_code == 409
    assert (await chat(alice.client, "other", message_id="m1")).status_code == 409
    assert len((await alice.client.get(f"/v1/runs/{run_id}/tasks")).json()) == 2
    await assert_no_drift(app)


async def test_a_failure_after_some_text_answers_the_partial_reply(
    app: FastAPI, alice: Account
) -> None:
    failed = await chat(alice.client, message_id="m1", settings={"fail_at": 2})
    assert failed.status_code == 200, failed.text
    body = failed.json()
    assert (body["status"], body["text"]) == ("failed", "Echo: alpha ")
    assert body["error"]["kind"] == "injected_failure"
    assert body["assistant_message_id"] is None
    # Tokens streamed were paid for: estimated and counted, once.
    assert body["usage"]["estimated"] is True and body["usage"]["output_tokens"] > 0

    retried = await alice.client.post(
        "/v1/messages/m1/retry", json={"stream": False, "settings": {"fail_at": "x"}}
    )
    assert invalid_field(retried) == "settings.fail_at"
    retried = await alice.client.post("/v1/messages/m1/retry", json={"stream": False})
    assert (retried.json()["status"], retried.json()["text"]) == ("completed", REPLY)
    assert (await alice.client.post("/v1/messages/nope/retry")).status_code == 404
    bad_id = await alice.client.post("/v1/messages/not%20an%20id/retry")
    assert invalid_field(bad_id) == "path.message_id"
    await assert_no_drift(app)


async def test_a_service_key_chats_for_its_end_users(app: FastAPI, alice: Account) -> None:
    key = (await alice.client.post("/v1/keys", json={"kind": "service"})).json()
    opened: list[httpx.AsyncClient] = []
    service = authed(app, key["secret"], opened)
    answered = await chat(service, user_id="end-user-7", run_id="support-1")
    assert answered.status_code == 200, answered.text
    run = (await service.get("/v1/runs/support-1")).json()
    assert (run["user_id"], run["message_count"]) == ("end-user-7", 2)
    # A user key may not act for someone else.
    assert (await chat(alice.client, user_id="end-user-7")).status_code == 403
    for client in opened:
        await client.aclose()
