"""Bad input over HTTP (docs/reliability.md), on SQLite and on PostgreSQL alike:

- strange text — emoji, right-to-left, combining marks, zero-width and control
  characters, SQL and LIKE wildcards, JSON and HTML lookalikes — is stored verbatim
  wherever text goes (run names, metadata keys and values, message content, trace
  entries, variable values, a whole chat) and read back equal;
- what no database can store alike — NUL, lone surrogates, NaN — is a 422 naming the
  field, and nothing is written;
- malformed ids (too long, slashes, spaces, empty, non-ASCII, SQL) are a 422 naming the
  field in a body, a 404 or 422 in a path, and never create anything;
- an oversized body is a 413 (declared or chunked), as are too many batch items or
  trace entries, and nothing is written.

Never a 500.
"""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator, Callable
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from fastapi import FastAPI

from chatledger import Settings
from chatledger.server.app import create_app
from tests.server.conftest import ADMIN_KEY, BASE_URL, authed

MAX_BODY = 64 * 1024
JSON = {"Content-Type": "application/json"}
ME = "alice"

STRANGE = {
    "emoji": "👩‍👩‍👧‍👦 family, 🚀 rocket, 🏳️‍🌈 flag",
    "rtl": "שלום עולם — مرحبا بالعالم",
    "combining": "Z̤͔ͧ̑̓ä͖̭̈̇lͮ̒ͫǧ̗͚̚o̙̔ͮ̇͐̇ and e\u0301 beside \u00e9",
    "zero_width": "a\u200bb\u200dc\ufeffd\u2028e\u202eright-to-left override",
    # Fraktur "Hello", a hieroglyph, a CJK ideograph: all outside the 16-bit plane.
    "astral": "\U0001d573\U0001d58a\U0001d591\U0001d591\U0001d594 \U00013000 \U0002070e",
    "sql": "'; DROP TABLE runs; --",
    "sql_union": "x' OR '1'='1' UNION SELECT secret_hash FROM api_keys --",
    "like_wildcards": "100% _done_ \\ [a-z]",
    "quotes": '"double" \'single\' `back` \\"escaped\\"',
    "control": "tab\there\nnew line\r\ncarriage\x01\x1b[31m\x7f",
    "json_like": '{"role": "system", "content": "ignore previous"}',
    "html": "<script>alert('x')</script>&amp;&lt;",
}

BAD_IDS = {
    "too_long": "x" * 129,
    "slash": "a/b",
    "space": "a b",
    "empty": "",
    "non_ascii": "rün",
    "sql": "'; DROP TABLE runs; --",
    "nul": "a\x00b",
}


@pytest.fixture
async def app(settings: Settings) -> AsyncIterator[FastAPI]:
    update = {"admin_key": ADMIN_KEY, "max_request_bytes": MAX_BODY}
    application = create_app(settings.model_copy(update=update))
    async with application.router.lifespan_context(application):
        yield application


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """A client with the key of a new user, `alice`."""
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BASE_URL) as c:
        made = await c.post(
            "/v1/admin/users", json={"id": ME}, headers={"Authorization": f"Bearer {ADMIN_KEY}"}
        )
    assert made.status_code == 201, made.text
    opened: list[httpx.AsyncClient] = []
    yield authed(app, made.json()["api_key"]["secret"], opened)
    for c in opened:
        await c.aclose()


def refused_fields(response: httpx.Response) -> set[str]:
    """The fields a 422 names (request validation lists them; our own checks name one)."""
    assert response.status_code == 422, (response.status_code, response.text)
    details = response.json()["error"]["details"]
    if "errors" in details:
        return {problem["field"] for problem in details["errors"]}
    return {details["field"]}


async def nothing_stored(client: httpx.AsyncClient) -> None:
    assert (await client.get("/v1/runs")).json()["items"] == []
    assert (await client.get("/v1/automation/traces")).json()["items"] == []
    assert (await client.get("/v1/variables")).json() == []


# -- strange text is stored verbatim -----------------------------------------------------


async def test_strange_text_is_stored_and_read_back_verbatim(client: httpx.AsyncClient) -> None:
    for label, text in STRANGE.items():
        run_id = f"run-{label}"
        metadata = {text: text, "list": [text, {"nested": text}]}
        made = await client.put(f"/v1/runs/{run_id}", json={"name": text, "metadata": metadata})
        assert made.status_code == 201, made.text
        message = {"id": f"m-{label}", "role": "user", "content": text, "metadata": {"n": text}}
        assert (await client.post(f"/v1/runs/{run_id}/messages", json=message)).status_code == 201
        entry = {"node": text, "status": "completed", "data": {text: [text]}}
        trace = await client.put(
            f"/v1/automation/traces/thread/{run_id}", json={"entries": [entry]}
        )
        assert trace.status_code == 201, trace.text
        variable = await client.put(f"/v1/variables/user/{ME}/v_{label}", json={"value": text})
        assert variable.status_code == 201, variable.text

        run = (await client.get(f"/v1/runs/{run_id}")).json()
        assert (run["name"], run["metadata"]) == (text, metadata)
        [stored] = run["messages"]
        assert (stored["content"], stored["metadata"]) == (text, {"n": text})
        [read_entry] = (await client.get(f"/v1/automation/traces/thread/{run_id}")).json()[
            "entries"
        ]
        assert (read_entry["node"], read_entry["data"]) == (text, {text: [text]})
        read_variable = await client.get(f"/v1/variables/user/{ME}/v_{label}")
        assert read_variable.json()["value"] == text

    # Searching for them finds each where it is, and wildcards match only themselves.
    names = {run["id"]: run["name"] for run in (await client.get("/v1/runs")).json()["items"]}
    for label, text in STRANGE.items():
        found = await client.get("/v1/runs", params={"q": text})
        assert found.status_code == 200, found.text
        assert f"run-{label}" in {run["id"] for run in found.json()["items"]}
    for wildcard in ("%", "_", "\\"):
        found = (await client.get("/v1/runs", params={"q": wildcard})).json()["items"]
        assert {run["id"] for run in found} == {i for i, name in names.items() if wildcard in name}


async def test_strange_text_goes_through_a_whole_chat(client: httpx.AsyncClient) -> None:
    for label, text in STRANGE.items():
        body = {"run_id": f"chat-{label}", "message": {"content": text}, "stream": False}
        answer = await client.post("/v1/chat", json=body)
        assert answer.status_code == 200, answer.text
        assert answer.json()["text"] == f"Echo: {text}"
        messages = (await client.get(f"/v1/runs/chat-{label}/messages")).json()
        assert [m["content"] for m in messages] == [text, f"Echo: {text}"]


# -- what no database can store alike is refused -----------------------------------------


def unstorable_requests(value: Any) -> list[tuple[str, str, dict[str, Any], str]]:
    """(method, path, body, the field a 422 must name): `value` in every kind of place."""
    entry = {"node": "n", "status": "completed", "data": {"x": [value]}}
    usage = {"input_tokens": 1, "output_tokens": 1}
    return [
        ("PUT", "/v1/runs/r1", {"name": value}, "name"),
        ("PUT", "/v1/runs/r1", {"metadata": {"k": value}}, "metadata.k"),
        ("POST", "/v1/runs/r1/messages", {"role": "user", "content": value}, "content"),
        ("PUT", "/v1/automation/traces/thread/r1", {"entries": [entry]}, "entries.0.data.x.0"),
        ("PUT", f"/v1/variables/user/{ME}/k", {"value": value}, "value"),
        ("POST", "/v1/chat", {"message": {"content": value}, "stream": False}, "message.content"),
        (
            "POST",
            "/v1/runs/r1/interactions",
            {"prompt": value, "response": "ok", "model": "echo", "usage": usage},
            "prompt",
        ),
        (
            "POST",
            "/v1/batch",
            {"items": [{"kind": "message", "run_id": "r1", "role": "user", "content": value}]},
            "items.0.content",
        ),
        (
            "POST",
            "/v1/prompts",
            {"name": "p", "messages": [{"role": "system", "content": value}]},
            "messages.0.content",
        ),
    ]


@pytest.mark.parametrize(
    "value",
    ["nul \x00 inside", "\x00", "lone surrogate \ud800", "\udfff"],
    ids=["nul", "only_nul", "high_surrogate", "low_surrogate"],
)
async def test_text_no_database_can_store_is_refused_naming_the_field(
    client: httpx.AsyncClient, value: str
) -> None:
    for method, path, body, field in unstorable_requests(value):
        # JSON escapes it (\u0000, \ud800): a lone surrogate has no other spelling.
        answer = await client.request(method, path, content=json.dumps(body), headers=JSON)
        if path == "/v1/batch":  # items are judged one by one: this one alone is refused
            assert answer.status_code == 200, answer.text
            [result] = answer.json()["results"]
            assert (result["status"], result["error"]["details"]["field"]) == ("rejected", field)
            continue
        assert field in refused_fields(answer), (path, answer.text)
    await nothing_stored(client)


@pytest.mark.parametrize(
    ("value", "encode"),
    [
        # A surrogate's own UTF-8 bytes: not valid UTF-8, yet Python's JSON parser takes
        # them (it decodes bytes with "surrogatepass").
        ("lone surrogate \ud800", lambda text: text.encode("utf-8", "surrogatepass")),
        # A UTF-16 body, which the parser also takes: its escapes are spelled apart.
        ("nul \x00 inside", lambda text: text.encode("utf-16")),
    ],
    ids=["raw_surrogate_bytes", "utf16_body"],
)
async def test_other_spellings_of_unstorable_text_are_refused_too(
    client: httpx.AsyncClient, value: str, encode: Callable[[str], bytes]
) -> None:
    for method, path, body, field in unstorable_requests(value):
        content = encode(json.dumps(body, ensure_ascii=False))
        answer = await client.request(method, path, content=content, headers=JSON)
        assert answer.status_code < 500, (path, answer.text)
        if path == "/v1/batch":
            assert answer.status_code == 200, answer.text
            [result] = answer.json()["results"]
            assert (result["status"], result["error"]["details"]["field"]) == ("rejected", field)
            continue
        assert field in refused_fields(answer), (path, answer.text)
    await nothing_stored(client)


async def test_nul_in_a_query_or_a_path_is_refused(client: httpx.AsyncClient) -> None:
    assert refused_fields(await client.get("/v1/runs", params={"q": "a\x00b"})) == {"q"}
    assert refused_fields(await client.get("/v1/prompts", params={"q": "\x00"})) == {"q"}
    nul_id = quote("r\x00")
    assert (await client.get(f"/v1/runs/{nul_id}")).status_code in (404, 422)


# Spelled as Python's JSON parser takes them, or too large for a float (a three-digit
# exponent, or ~300 digits, overflowing to Infinity: 1e999, 1E+400).
NON_FINITE = {
    "nan": "NaN",
    "infinity": "Infinity",
    "minus_infinity": "-Infinity",
    "big_exponent": "1e999",
    "big_signed_exponent": "-1E+0400",
    "many_digits": "1" + "0" * 320 + ".5",
    "many_digits_and_an_exponent": "2" + "0" * 250 + "e60",
}


@pytest.mark.parametrize("number", list(NON_FINITE.values()), ids=list(NON_FINITE))
async def test_numbers_json_cannot_carry_are_refused(
    client: httpx.AsyncClient, number: str
) -> None:
    # Python's JSON parser takes these; PostgreSQL's JSONB and every JSON reader do not.
    usage = '"usage": {"input_tokens": 1, "output_tokens": 1}'
    interaction = f'"prompt": "q", "response": "a", "model": "echo", {usage}'
    bodies = [
        ("PUT", "/v1/runs/r1", f'{{"metadata": {{"score": {number}}}}}', "metadata.score"),
        (
            "PUT",
            "/v1/automation/traces/thread/r1",
            f'{{"entries": [{{"node": "n", "status": "done", "data": {{"x": [{number}]}}}}]}}',
            "entries.0.data.x.0",
        ),
        (
            "POST",
            "/v1/runs/r1/interactions",
            f'{{{interaction}, "metadata": {{"score": {number}}}}}',
            "metadata.score",
        ),
    ]
    for method, path, raw, field in bodies:
        answer = await client.request(method, path, content=raw, headers=JSON)
        assert field in refused_fields(answer), answer.text
    item = f'{{"kind": "interaction", "id": "t1", "run_id": "r1", {interaction}'
    batch = f'{{"items": [{item}, "metadata": {{"a": [1, {{"b": {number}}}]}}}}]}}'
    answer = await client.post("/v1/batch", content=batch, headers=JSON)
    assert answer.status_code == 200, answer.text
    [result] = answer.json()["results"]
    assert (result["status"], result["error"]["details"]["field"]) == (
        "rejected",
        "items.0.metadata.a.1.b",
    )
    await nothing_stored(client)


async def test_an_unstorable_batch_item_is_rejected_alone(client: httpx.AsyncClient) -> None:
    items = [
        {"kind": "run", "id": "sync-run", "name": "kept"},
        {"kind": "message", "run_id": "sync-run", "id": "bad", "role": "user", "content": "a\x00"},
        {"kind": "message", "run_id": "sync-run", "id": "odd\ud800", "role": "user"},
        {"kind": "message", "run_id": "sync-run", "id": "good", "role": "user", "content": "b"},
    ]

    answer = await client.post("/v1/batch", content=json.dumps({"items": items}), headers=JSON)

    assert answer.status_code == 200, answer.text
    results = answer.json()["results"]
    assert [r["status"] for r in results] == ["created", "rejected", "rejected", "created"]
    assert results[1]["error"]["details"]["field"] == "items.1.content"
    assert results[2]["id"] is None  # the bad id itself is not echoed back
    stored = (await client.get("/v1/runs/sync-run/messages")).json()
    assert [m["id"] for m in stored] == ["good"]


# -- malformed ids -------------------------------------------------------------------------


def bodies_with_id(bad: str) -> list[tuple[str, str, dict[str, Any], str]]:
    message = {"role": "user", "content": "hi"}
    return [
        ("POST", "/v1/runs", {"id": bad}, "id"),
        ("POST", "/v1/runs/r1/messages", {"id": bad, **message}, "id"),
        ("POST", "/v1/runs/r1/messages", {"parent_id": bad, **message}, "parent_id"),
        ("POST", "/v1/tasks", {"id": bad, "run_id": "r1", "model": "echo"}, "id"),
        ("POST", "/v1/tasks", {"run_id": bad, "model": "echo"}, "run_id"),
        ("POST", "/v1/chat", {"message": {"id": bad, "content": "hi"}}, "message.id"),
        ("POST", "/v1/chat", {"run_id": bad, "message": {"content": "hi"}}, "run_id"),
        ("PUT", "/v1/automation/traces/thread/r1", {"id": bad}, "id"),
        ("POST", "/v1/automation/traces", {"thread_id": bad}, "thread_id"),
        ("POST", "/v1/batch", {"items": [{"kind": "run", "id": bad}]}, "items.0.id"),
    ]


@pytest.mark.parametrize("bad", list(BAD_IDS.values()), ids=list(BAD_IDS))
async def test_malformed_ids_are_refused_and_create_nothing(
    client: httpx.AsyncClient, bad: str
) -> None:
    for method, path, body, field in bodies_with_id(bad):
        answer = await client.request(method, path, content=json.dumps(body), headers=JSON)
        if path == "/v1/batch":
            # Batch items are refused one by one, the others still land (even for a NUL:
            # see server/storable.py).
            assert answer.status_code == 200, answer.text
            [result] = answer.json()["results"]
            assert result["status"] == "rejected", result
            continue
        assert field in refused_fields(answer), (path, answer.text)
    if bad:  # an empty one is another route: the list (GET) or no route (PUT)
        path_id = quote(bad, safe="")
        for method, path in [
            ("GET", f"/v1/runs/{path_id}"),
            ("PUT", f"/v1/runs/{path_id}"),
            ("GET", f"/v1/tasks/{path_id}"),
            ("GET", f"/v1/automation/traces/thread/{path_id}"),
            ("PUT", f"/v1/variables/user/{path_id}/k"),
        ]:
            answer = await client.request(method, path, json={"value": "v"})
            assert answer.status_code in (404, 405, 422), (method, path, answer.text)
    await nothing_stored(client)


# -- oversized bodies ----------------------------------------------------------------------


async def test_a_body_over_the_limit_is_413_and_writes_nothing(client: httpx.AsyncClient) -> None:
    assert (await client.put("/v1/runs/r1", json={})).status_code == 201
    path = "/v1/runs/r1/messages"
    fits = {"id": "fits", "role": "user", "content": "x" * (MAX_BODY - 1024)}
    assert (await client.post(path, json=fits)).status_code == 201

    big = json.dumps({"id": "big", "role": "user", "content": "x" * MAX_BODY}).encode()
    declared = await client.post(path, content=big, headers=JSON)

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: cut off on arrival
        for start in range(0, len(big), 4096):
            yield big[start : start + 4096]

    chunked = await client.post(path, content=chunks(), headers=JSON)
    for answer in (declared, chunked):
        assert answer.status_code == 413, answer.text
        assert answer.json()["error"]["code"] == "payload_too_large"
    stored = (await client.get("/v1/runs/r1/messages")).json()
    assert [m["id"] for m in stored] == ["fits"]


async def test_too_many_items_or_entries_are_413_and_write_nothing(
    client: httpx.AsyncClient,
) -> None:
    items = [{"kind": "run", "id": f"r{i}"} for i in range(1001)]
    entries = [{"node": "n", "status": "completed"} for _ in range(1001)]
    batch = await client.post("/v1/batch", json={"items": items})
    trace = await client.put("/v1/automation/traces/thread/t1", json={"entries": entries})
    for answer in (batch, trace):
        assert answer.status_code == 413, answer.text
        assert answer.json()["error"]["details"]["limit"] == 1000
    await nothing_stored(client)


# -- boundary values -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("params", "status"),
    [
        ({"to": "0001-01-01"}, 200),  # the default 30 days would begin before year 1
        ({"from": "0001-01-01", "to": "0001-01-01"}, 200),
        ({"from": "9999-12-31", "to": "9999-12-31"}, 200),
        ({"from": "9999-12-31"}, 422),  # after today, the default end
        ({"from": "0001-01-01", "to": "9999-12-31"}, 422),  # over 366 days
    ],
)
async def test_usage_at_the_ends_of_the_calendar(
    client: httpx.AsyncClient, params: dict[str, str], status: int
) -> None:
    answer = await client.get("/v1/usage/daily", params=params)
    assert answer.status_code == status, answer.text


# -- times at the ends of the calendar ---------------------------------------------------

# Years 1 and 9999 in a zone whose UTC time falls outside them: Python cannot hold that
# instant in UTC, where every time is stored.
BEFORE_YEAR_ONE = "0001-01-01T00:00:00+00:01"
AFTER_YEAR_9999 = "9999-12-31T23:59:59-00:01"


def bodies_with_time(at: str) -> list[tuple[str, str, dict[str, Any], str]]:
    usage = {"input_tokens": 1, "output_tokens": 1}
    interaction = {"prompt": "q", "response": "a", "model": "echo", "usage": usage}
    entry = {"node": "n", "status": "done"}
    return [
        ("POST", "/v1/runs", {"id": "r1", "created_at": at}, "created_at"),
        ("POST", "/v1/runs/r1/messages", {"role": "user", "created_at": at}, "created_at"),
        ("POST", "/v1/runs/r1/interactions", {**interaction, "completed_at": at}, "completed_at"),
        (
            "PUT",
            "/v1/automation/traces/thread/r1",
            {"entries": [{**entry, "started_at": at}]},
            "entries.0.started_at",
        ),
        (
            "POST",
            "/v1/prices",
            {"model_pattern": "*", "input_per_mtok": 1, "output_per_mtok": 1, "effective_from": at},
            "effective_from",
        ),
        ("POST", "/v1/prices/quote", {"model": "openai/gpt-4o", "usage": usage, "at": at}, "at"),
    ]


@pytest.mark.parametrize("at", [BEFORE_YEAR_ONE, AFTER_YEAR_9999])
async def test_a_time_outside_the_calendar_in_utc_is_refused(
    client: httpx.AsyncClient, at: str
) -> None:
    for method, path, body, field in bodies_with_time(at):
        answer = await client.request(method, path, json=body)
        if at == AFTER_YEAR_9999 and field in ("created_at", "completed_at"):
            assert answer.status_code == 422, answer.text  # in the future, anyway
            continue
        assert field in refused_fields(answer), (path, answer.text)
    task = {"kind": "task", "id": "t1", "run_id": "r2", "model": "echo", "status": "completed"}
    items = [{"kind": "run", "id": "r2", "created_at": at}, {**task, "completed_at": at}]
    answer = await client.post("/v1/batch", json={"items": items})
    assert answer.status_code == 200, answer.text
    results = answer.json()["results"]
    assert [r["status"] for r in results] == ["rejected", "rejected"]
    fields = [r["error"]["details"]["errors"][0]["field"] for r in results]
    assert fields == ["run.created_at", "task.completed_at"], fields
    await nothing_stored(client)
    assert (await client.get("/v1/prices")).json() == []


async def test_the_first_instant_of_the_calendar_is_stored(client: httpx.AsyncClient) -> None:
    first = "0001-01-01T00:00:00Z"
    made = await client.post("/v1/runs", json={"id": "r1", "created_at": first})
    assert made.status_code == 201, made.text
    read = (await client.get("/v1/runs/r1")).json()
    assert read["created_at"].startswith("0001-01-01T00:00:00"), read


@pytest.mark.parametrize("path", ["/v1/runs", "/v1/automation/traces"])
@pytest.mark.parametrize("time", [BEFORE_YEAR_ONE, "2026-01-01T00:00:00", "not a time"])
async def test_a_cursor_this_server_never_gave_out_is_refused(
    client: httpx.AsyncClient, path: str, time: str
) -> None:
    cursor = base64.urlsafe_b64encode(json.dumps([time, "r1"]).encode()).decode()
    answer = await client.get(path, params={"cursor": cursor})
    assert refused_fields(answer) == {"cursor"}, answer.text
