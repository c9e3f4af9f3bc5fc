"""Rate limits per API key: a burst, then a steady rate; past it 429 with Retry-After in
whole seconds and the standard error body, a throttled request writes nothing, and one
key's excess never slows another key or the admin key."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from fastapi import FastAPI

from chatledger import Settings
from chatledger.client import AsyncClient
from chatledger.errors import RateLimited
from chatledger.server.deps import AppState
from chatledger.server.ratelimit import RateLimiter
from tests.server.conftest import ADMIN_KEY, BASE_URL, Account

PER_MINUTE = 120  # two a second: a refused request waits about half a second
BURST = 5


@pytest.fixture
def settings(database_url: str) -> Settings:
    return Settings(
        database_url=database_url, rate_limit_per_minute=PER_MINUTE, rate_limit_burst=BURST
    )


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_bucket_allows_a_burst_then_the_steady_rate() -> None:
    clock = Clock()
    limiter = RateLimiter(per_minute=60, burst=3, clock=clock)
    for _ in range(3):
        limiter.take("k")
    with pytest.raises(RateLimited) as refused:
        limiter.take("k")
    assert refused.value.retry_after == 1
    limiter.take("other")  # a bucket per key
    clock.now += 0.5
    with pytest.raises(RateLimited) as refused:
        limiter.take("k")
    assert refused.value.retry_after == 1  # half a token: rounded up to a whole second
    clock.now += 0.5
    limiter.take("k")
    clock.now += 3600
    for _ in range(3):  # refilled to the burst, never beyond it
        limiter.take("k")
    with pytest.raises(RateLimited):
        limiter.take("k")


def test_a_limit_of_zero_is_no_limit() -> None:
    limiter = RateLimiter(per_minute=0, burst=1)
    for _ in range(10_000):
        limiter.take("k")


def test_idle_buckets_are_forgotten() -> None:
    clock = Clock()
    limiter = RateLimiter(per_minute=60, burst=2, clock=clock)
    for key in range(100):
        limiter.take(str(key))
    clock.now += 2  # long enough to refill: the same as no bucket at all
    limiter.take("new")
    assert len(limiter) == 1


async def test_past_its_limit_a_key_gets_429_with_retry_after(
    app: FastAPI, alice: Account, bob: Account
) -> None:
    for n in range(BURST):
        assert (await alice.client.put(f"/v1/runs/r{n}", json={})).status_code == 201
    refused = await alice.client.put("/v1/runs/one-too-many", json={})
    assert refused.status_code == 429
    assert refused.headers["Retry-After"] == "1"
    error = refused.json()["error"]
    assert error["code"] == "rate_limited"
    assert error["details"] == {"retry_after": 1}
    # Another key, and the admin key, each have their own allowance.
    assert (await bob.client.get("/v1/runs")).status_code == 200
    admin = {"Authorization": f"Bearer {ADMIN_KEY}"}
    made = await bob.client.post("/v1/admin/users", json={"id": "carol"}, headers=admin)
    assert made.status_code == 201
    # Waiting as long as told is enough; the refused write was never made.
    await asyncio.sleep(int(refused.headers["Retry-After"]))
    listed = await alice.client.get("/v1/runs")
    assert listed.status_code == 200
    assert sorted(run["id"] for run in listed.json()["items"]) == [f"r{n}" for n in range(BURST)]


async def test_an_unknown_key_is_refused_before_it_gets_a_bucket(
    app: FastAPI, http: httpx.AsyncClient
) -> None:
    stranger = {"Authorization": "Bearer cl_u_not-a-key"}
    for _ in range(BURST + 1):
        assert (await http.get("/v1/runs", headers=stranger)).status_code == 401
    state: AppState = app.state.chatledger
    assert len(state.rate_limiter) == 0


async def test_the_python_client_waits_out_a_429_and_retries(app: FastAPI, alice: Account) -> None:
    def transport() -> httpx.AsyncClient:
        return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BASE_URL)

    async with (
        AsyncClient(http_client=transport(), api_key=alice.key) as patient,
        AsyncClient(http_client=transport(), api_key=alice.key, retries=0) as impatient,
    ):
        # One more than the burst: the last waits for the bucket, then succeeds. The
        # impatient client shares the key, so its bucket is empty by then: it gives up.
        for index in range(BURST + 1):
            await patient.runs.ensure(f"r{index}")
        with pytest.raises(RateLimited) as limited:
            for index in range(BURST + 1):
                await impatient.runs.ensure(f"s{index}")
        assert limited.value.retry_after >= 1
        listed = (await patient.runs.list()).items
        assert {run.id for run in listed} >= {f"r{index}" for index in range(BURST + 1)}
