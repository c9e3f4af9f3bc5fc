"""A batch's body (batch/body.py): a batch whose items are all valid is validated in one
pass from its JSON text, and lands exactly as when its items are validated one by one;
a body that is not a batch is answered exactly as FastAPI answers a declared
`BatchRequest` body, since the route reads it itself."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from chatledger.batch import service
from chatledger.batch.schemas import BatchRequest
from chatledger.server import errors
from tests.server.conftest import BASE_URL, Account
from tests.server.test_batch_bulk import interaction, mixed_batch, state, verdicts

NOT_A_BATCH = {"kind": "spaceship"}  # fails validation: the items are then read one by one


@pytest.fixture
def validated_one_by_one(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """How many items `service.check` validated one at a time."""
    validated: list[int] = []
    real = service._ITEM

    class Counting:
        def validate_python(self, raw: Any) -> Any:
            validated.append(1)
            return real.validate_python(raw)

    monkeypatch.setattr(service, "_ITEM", Counting())
    return validated


async def test_a_valid_batch_is_validated_in_one_pass(
    alice: Account, validated_one_by_one: list[int]
) -> None:
    # Every item valid as sent (some are still refused: a reply before its question, a
    # model without its provider, ids used twice), so none is validated on its own.
    items = [item for item in mixed_batch() if item != NOT_A_BATCH]
    answer = await alice.client.post("/v1/batch", json={"items": items})
    assert answer.status_code == 200, answer.text
    assert validated_one_by_one == []
    assert answer.json()["created"] > 0

    answer = await alice.client.post("/v1/batch", json={"items": [*items, NOT_A_BATCH]})
    assert answer.status_code == 200, answer.text
    assert len(validated_one_by_one) == len(items) + 1


async def test_a_batch_lands_the_same_read_either_way(alice: Account, bob: Account) -> None:
    items = [item for item in mixed_batch() if item != NOT_A_BATCH]
    in_one_pass = await alice.client.post("/v1/batch", json={"items": items})
    # Bob's copy ends with an item that is no batch item: read item by item.
    one_by_one = await bob.client.post("/v1/batch", json={"items": [*items, NOT_A_BATCH]})
    assert in_one_pass.status_code == one_by_one.status_code == 200
    assert verdicts(one_by_one.json())[-1][3] == "rejected"
    assert verdicts(in_one_pass.json()) == verdicts(one_by_one.json())[:-1]
    assert {"rejected", "duplicate", "created"} <= {v[3] for v in verdicts(in_one_pass.json())}
    assert await state(alice.client) == await state(bob.client)


@pytest.mark.parametrize(
    ("spelled", "field"),
    [
        ('"a\\u0000b"', "items.1.metadata.note"),
        ("1e999", "items.1.metadata.note"),
        ('[1, {"deep": -Infinity}]', "items.1.metadata.note.1.deep"),
    ],
    ids=["nul", "too-large-for-a-float", "infinity-nested"],
)
async def test_a_valid_item_no_database_can_store_is_rejected_alone(
    alice: Account, validated_one_by_one: list[int], spelled: str, field: str
) -> None:
    # Every item validates, so the batch is read in one pass; what cannot be stored is
    # found then, and the batch read again item by item: the one item rejected.
    items = [json.dumps(interaction(n, run_id="r")) for n in range(3)]
    items[1] = items[1].replace('"metadata": {', f'"metadata": {{"note": {spelled}, ', 1)
    body = '{"items": [' + ", ".join(items) + "]}"
    answer = await alice.client.post("/v1/batch", content=body, headers={"content-type": JSON})
    assert answer.status_code == 200, answer.text
    results = answer.json()["results"]
    assert [r["status"] for r in results] == ["created", "rejected", "created"]
    assert results[1]["error"]["details"]["field"] == field
    assert len(validated_one_by_one) == 2  # the others, read again (the bad one is refused first)
    run = (await alice.client.get("/v1/runs/r")).json()
    assert (run["task_count"], run["message_count"]) == (2, 4)


def reference_app() -> FastAPI:
    """A route that declares its body as a `BatchRequest`, answered by the same handlers."""
    reference = FastAPI()
    errors.install(reference)

    @reference.post("/v1/batch")
    async def ingest(body: BatchRequest) -> dict[str, int]:
        return {"items": len(body.items)}

    return reference


JSON = "application/json"
NOT_BATCHES = [
    pytest.param(b"", JSON, id="empty"),
    pytest.param(b'{"items": []}', None, id="no-content-type"),
    pytest.param(b'{"items": []}', "text/plain", id="text"),
    pytest.param(b'{"items": [', JSON, id="cut-off"),
    pytest.param(b'{"items": [}', JSON, id="not-json"),
    pytest.param(b'{"items": ["\xff"]}', JSON, id="not-utf-8"),
    pytest.param(b"[" * 100_000 + b"]" * 100_000, JSON, id="nested-too-deep"),
    pytest.param(b"[]", JSON, id="a-list"),
    pytest.param(b'"items"', JSON, id="a-string"),
    pytest.param(b"{}", JSON, id="no-items"),
    pytest.param(b'{"items": 5}', JSON, id="items-not-a-list"),
    pytest.param(b'{"items": [1, "x", null]}', JSON, id="items-not-objects"),
    pytest.param(b'{"items": [{"kind": "spaceship"}]}', JSON, id="a-bad-item"),
    pytest.param(b'{"items": []}', "application/vnd.sync+json; charset=utf-8", id="json-subtype"),
    pytest.param(b'{"items": []}', "Application/JSON", id="type-in-capitals"),
]


@pytest.mark.parametrize(("body", "content_type"), NOT_BATCHES)
async def test_a_body_is_answered_as_fastapi_answers_a_declared_one(
    alice: Account, body: bytes, content_type: str | None
) -> None:
    headers = {} if content_type is None else {"content-type": content_type}
    transport = httpx.ASGITransport(app=reference_app())
    async with httpx.AsyncClient(transport=transport, base_url=BASE_URL) as reference:
        expected = await reference.post("/v1/batch", content=body, headers=headers)
    answer = await alice.client.post("/v1/batch", content=body, headers=headers)
    assert answer.status_code == expected.status_code, (answer.text, expected.text)
    if expected.status_code == 200:
        assert len(answer.json()["results"]) == len(json.loads(body)["items"])
    else:
        assert answer.json() == expected.json()


@pytest.mark.parametrize("body", [b'{"items": [', b'{"items": ["\xff"]}', b"[]"])
async def test_a_body_without_a_valid_key_is_answered_401_whatever_it_holds(
    http: httpx.AsyncClient, body: bytes
) -> None:
    # The key is checked before the body is read: FastAPI, reading a declared body
    # first, answered a body that is not JSON (422, 400) before the key.
    answer = await http.post("/v1/batch", content=body, headers={"content-type": JSON})
    assert answer.status_code == 401, answer.text
