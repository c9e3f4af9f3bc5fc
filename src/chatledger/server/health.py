"""Liveness, readiness and metrics: what an orchestrator and Prometheus poll."""

from __future__ import annotations

import time

from fastapi import APIRouter, Request, Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from sqlalchemy import text
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from chatledger.server.deps import StateDep

router = APIRouter(tags=["health"])


class Metrics:
    """One registry per app, so two apps in one process (tests) never share counters."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "chatledger_http_requests",
            "HTTP requests answered, by route template and status.",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "chatledger_http_request_seconds",
            "Time to answer (streaming responses: time to headers).",
            ["method", "route"],
            registry=self.registry,
        )
        self.live_replies = Gauge(
            "chatledger_live_replies", "Replies being streamed now.", registry=self.registry
        )


class RequestMetrics:
    """ASGI middleware counting answers by route template; plain ASGI (not
    BaseHTTPMiddleware) so streaming responses pass through untouched."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def timed_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                self.metrics.latency.labels(scope["method"], _route(scope)).observe(
                    time.perf_counter() - started
                )
            await send(message)

        try:
            await self.app(scope, receive, timed_send)
        finally:
            self.metrics.requests.labels(scope["method"], _route(scope), str(status)).inc()


def _route(scope: Scope) -> str:
    # The template, not the path: ids in paths would make unbounded label values. The
    # router records the matched route in the scope.
    return str(getattr(scope.get("route"), "path", "unmatched"))


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """The process is up."""
    return {"status": "ok"}


@router.get("/readyz", responses={503: {"description": "the database is not reachable"}})
async def readyz(state: StateDep, response: Response) -> dict[str, str]:
    """The database answers; until it does, send no traffic here."""
    try:
        async with state.database.looking_up() as session:
            await session.execute(text("SELECT 1"))
    except Exception as exc:
        response.status_code = 503
        return {"status": "unavailable", "database": type(exc).__name__}
    return {"status": "ok", "database": state.database.dialect}


@router.get("/metrics", response_class=Response)
async def metrics(request: Request, state: StateDep) -> Response:
    """Prometheus text format."""
    registry: Metrics = request.app.state.metrics
    registry.live_replies.set(state.engine.live_count)
    return Response(generate_latest(registry.registry), media_type=CONTENT_TYPE_LATEST)
