"""Liveness, readiness, metrics and the request size limit."""

from __future__ import annotations

import httpx
import pytest
from fastapi import FastAPI

from chatledger import Settings
from chatledger.server.app import create_app
from tests.server.conftest import BASE_URL, Account


async def test_healthz_and_readyz_need_no_key(http: httpx.AsyncClient) -> None:
    assert (await http.get("/healthz")).json() == {"status": "ok"}
    ready = await http.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["database"] in ("sqlite", "postgresql")


async def test_readyz_says_when_the_database_is_unreachable(tmp_path: object) -> None:
    # A PostgreSQL URL where nothing listens: the process is alive but not ready. The
    # lifespan (which migrates) is not entered, as it could not be.
    url = "postgresql+psycopg://nobody@127.0.0.1:9/none?connect_timeout=1"
    app = create_app(Settings(database_url=url))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BASE_URL) as c:
        assert (await c.get("/healthz")).status_code == 200
        ready = await c.get("/readyz")
    assert ready.status_code == 503
    assert ready.json()["status"] == "unavailable"


async def test_metrics_count_requests_by_route_template(alice: Account) -> None:
    for run_id in ("one", "two"):
        assert (await alice.client.put(f"/v1/runs/{run_id}", json={})).status_code == 201
    assert (await alice.client.get("/v1/runs/missing")).status_code == 404
    text = (await alice.client.get("/metrics")).text
    assert (
        'chatledger_http_requests_total{method="PUT",route="/v1/runs/{run_id}",status="201"} 2.0'
        in text
    )
    assert 'route="/v1/runs/{run_id}",status="404"' in text
    assert "chatledger_live_replies 0.0" in text
    assert "/v1/runs/one" not in text  # ids never become label values


@pytest.mark.parametrize("chunked", [False, True])
async def test_an_oversized_body_is_413_before_anything_is_written(
    settings: Settings, chunked: bool
) -> None:
    app: FastAPI = create_app(settings.model_copy(update={"max_request_bytes": 1000}), no_auth=True)
    big = b'{"id": "r", "metadata": {"blob": "' + b"x" * 5000 + b'"}}'

    async def body() -> object:
        for start in range(0, len(big), 500):
            yield big[start : start + 500]

    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url=BASE_URL) as client:
            content = body() if chunked else big
            headers = {"content-type": "application/json"}
            response = await client.put("/v1/runs/r", content=content, headers=headers)
            assert response.status_code == 413
            assert response.json()["error"]["code"] == "payload_too_large"
            assert (await client.get("/v1/runs/r")).status_code == 404
            small = await client.put("/v1/runs/r", json={"metadata": {"a": 1}})
            assert small.status_code == 201
