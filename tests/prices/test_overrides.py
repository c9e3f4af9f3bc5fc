"""Per-project price overrides over HTTP (SQLite and PostgreSQL): an override in force
prices a completion instead of genai-prices and says so on the task; the latest
effective date wins, so a call is priced at the rates of its own day; a provider-specific
override beats an any-provider one; removing it takes genai-prices back at once; only the
project's managers write, everyone in it reads, and no other project is touched."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import httpx
import pytest

from tests.server.conftest import Account

# gpt-4o list prices in nano-USD per token: $2.50 input, $1.25 cached, $10 output per M.
GPT4O_INPUT, GPT4O_CACHED, GPT4O_OUTPUT = 2_500, 1_250, 10_000
JANUARY = datetime(2026, 1, 1, tzinfo=UTC)
MARCH = datetime(2026, 3, 15, tzinfo=UTC)
JUNE = datetime(2026, 6, 1, tzinfo=UTC)
JULY = datetime(2026, 7, 15, tzinfo=UTC)
USAGE = {"input_tokens": 1_000, "output_tokens": 200}
RUN_NUMBERS = itertools.count()


async def override(client: httpx.AsyncClient, **fields: Any) -> dict[str, Any]:
    body = {"model_pattern": "gpt-4o*", "input_per_mtok": "1", "output_per_mtok": "2", **fields}
    response = await client.post("/v1/prices", json=body)
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


async def interaction(
    client: httpx.AsyncClient,
    model: str = "openai/gpt-4o",
    at: datetime | None = None,
    usage: dict[str, int] | None = None,
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "prompt": "hi",
        "response": "hello",
        "model": model,
        "usage": usage or USAGE,
    }
    if at is not None:
        body["created_at"] = body["completed_at"] = at.isoformat()
    response = await client.post(f"/v1/runs/run-{next(RUN_NUMBERS)}/interactions", json=body)
    assert response.status_code == 201, response.text
    task: dict[str, Any] = response.json()["task"]
    return task


async def test_an_override_wins_over_genai_prices_and_is_named_on_the_task(
    alice: Account,
) -> None:
    created = await override(alice.client, provider="openai", cache_read_per_mtok="0.5")

    task = await interaction(
        alice.client, usage={"input_tokens": 1_000, "cached_tokens": 400, "output_tokens": 200}
    )

    # 600 fresh x $1 + 400 cached x $0.50 + 200 output x $2, per million tokens.
    assert task["cost_nano"] == 600 * 1_000 + 400 * 500 + 200 * 2_000
    assert task["price_source"] == f"override {created['id']}"
    assert Decimal(created["input_per_mtok"]) == 1
    assert created["cache_write_per_mtok"] is None  # the input rate


async def test_a_model_the_pattern_does_not_match_keeps_genai_prices(alice: Account) -> None:
    await override(alice.client, model_pattern="gpt-4o-mini*")

    task = await interaction(alice.client, model="openai/gpt-4o")

    assert task["cost_nano"] == 1_000 * GPT4O_INPUT + 200 * GPT4O_OUTPUT
    assert task["price_source"].startswith("genai-prices ")


async def test_each_call_is_priced_at_the_rates_of_its_own_day(alice: Account) -> None:
    january = await override(alice.client, effective_from=JANUARY.isoformat())
    june = await override(
        alice.client, effective_from=JUNE.isoformat(), input_per_mtok="3", output_per_mtok="6"
    )

    before = await interaction(alice.client, at=datetime(2025, 12, 31, tzinfo=UTC))
    march = await interaction(alice.client, at=MARCH)
    july = await interaction(alice.client, at=JULY)

    assert before["price_source"].startswith("genai-prices ")
    assert (march["cost_nano"], march["price_source"]) == (
        1_000 * 1_000 + 200 * 2_000,
        f"override {january['id']}",
    )
    assert (july["cost_nano"], july["price_source"]) == (
        1_000 * 3_000 + 200 * 6_000,
        f"override {june['id']}",
    )
    listed = (await alice.client.get("/v1/prices")).json()
    assert [o["id"] for o in listed] == [june["id"], january["id"]]


async def test_on_one_date_the_provider_specific_override_wins(alice: Account) -> None:
    await override(alice.client, model_pattern="*", effective_from=JANUARY.isoformat())
    specific = await override(
        alice.client, provider="openai", input_per_mtok="5", effective_from=JANUARY.isoformat()
    )
    await override(alice.client, provider="anthropic", input_per_mtok="9")

    task = await interaction(alice.client, at=MARCH)

    assert task["price_source"] == f"override {specific['id']}"
    assert task["cost_nano"] == 1_000 * 5_000 + 200 * 2_000


async def test_an_override_can_price_a_model_genai_prices_does_not_know(alice: Account) -> None:
    unknown = await interaction(alice.client, model="ollama/llama3.2")
    assert (unknown["cost_nano"], unknown["price_source"]) == (None, "unknown")

    await override(alice.client, provider="ollama", model_pattern="llama*")
    priced = await interaction(alice.client, model="ollama/llama3.2")

    assert priced["cost_nano"] == 1_000 * 1_000 + 200 * 2_000
    run = (await alice.client.get(f"/v1/runs/{priced['run_id']}")).json()
    assert Decimal(run["total_cost_usd"]) == Decimal("0.0014")


async def test_removing_an_override_takes_genai_prices_back_at_once(alice: Account) -> None:
    created = await override(alice.client)
    assert (await interaction(alice.client))["price_source"].startswith("override ")

    assert (await alice.client.delete(f"/v1/prices/{created['id']}")).status_code == 204

    assert (await interaction(alice.client))["price_source"].startswith("genai-prices ")
    assert (await alice.client.delete(f"/v1/prices/{created['id']}")).status_code == 404


async def test_a_quote_prices_as_a_completion_would(alice: Account) -> None:
    created = await override(alice.client, cache_write_per_mtok="1.25")
    body = {
        "model": "openai/gpt-4o",
        "usage": {"input_tokens": 1_000, "cache_write_tokens": 800, "output_tokens": 10},
    }

    response = await alice.client.post("/v1/prices/quote", json=body)

    assert response.status_code == 200, response.text
    quote = response.json()
    assert quote["cost_nano"] == 200 * 1_000 + 800 * 1_250 + 10 * 2_000
    assert Decimal(quote["cost_usd"]) == Decimal("0.00122")
    assert quote["price_source"] == f"override {created['id']}"
    assert (quote["provider"], quote["model"]) == ("openai", "gpt-4o")


async def test_other_projects_are_not_touched(alice: Account, bob: Account) -> None:
    created = await override(alice.client)

    task = await interaction(bob.client)

    assert task["price_source"].startswith("genai-prices ")
    assert (await bob.client.get("/v1/prices")).json() == []
    assert (await bob.client.delete(f"/v1/prices/{created['id']}")).status_code == 404


async def test_members_read_the_overrides_and_only_managers_write_them(
    alice: Account, bob_in_alices_project: httpx.AsyncClient
) -> None:
    created = await override(alice.client)
    member = bob_in_alices_project

    assert [o["id"] for o in (await member.get("/v1/prices")).json()] == [created["id"]]
    refused = await member.post(
        "/v1/prices", json={"model_pattern": "*", "input_per_mtok": 0, "output_per_mtok": 0}
    )
    assert refused.status_code == 404
    assert (await member.delete(f"/v1/prices/{created['id']}")).status_code == 404
    # A member's own calls are priced by the project's override too.
    assert (await interaction(member))["price_source"] == f"override {created['id']}"


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"input_per_mtok": "-1"}, "input_per_mtok"),
        ({"output_per_mtok": "1e7"}, "output_per_mtok"),
        ({"model_pattern": ""}, "model_pattern"),
        ({"provider": "Open AI"}, "provider"),
        ({"effective_from": "2026-01-01T00:00:00"}, "effective_from"),  # no timezone
    ],
)
async def test_bad_overrides_are_a_422_naming_the_field(
    alice: Account, fields: dict[str, Any], field: str
) -> None:
    body = {"model_pattern": "gpt-4o*", "input_per_mtok": "1", "output_per_mtok": "2", **fields}

    response = await alice.client.post("/v1/prices", json=body)

    assert response.status_code == 422
    assert field in response.text
    assert (await alice.client.get("/v1/prices")).json() == []


async def test_cache_writes_beyond_the_input_are_a_422(alice: Account) -> None:
    body = {
        "model": "openai/gpt-4o",
        "usage": {"input_tokens": 100, "cached_tokens": 60, "cache_write_tokens": 50},
    }

    response = await alice.client.post("/v1/prices/quote", json=body)

    assert response.status_code == 422
    assert "cache_write_tokens" in response.text
