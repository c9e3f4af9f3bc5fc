"""`create_app(settings)`: the HTTP API. Collaborators (database, chat engine) are made
here or injected, so tests can swap them; errors are mapped in one place."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from fastapi import Depends, FastAPI

from chatledger import pricing
from chatledger.batch.router import router as batch_router
from chatledger.chat.router import router as chat_router
from chatledger.config import Settings
from chatledger.db.engine import Database
from chatledger.db.migrate import upgrade
from chatledger.engine.chat import ChatEngine
from chatledger.interactions.router import router as interactions_router
from chatledger.prices.router import router as prices_router
from chatledger.prompts.router import router as prompts_router
from chatledger.runs.router import router as runs_router
from chatledger.server import errors, health, heap, storable
from chatledger.server.deps import AppState
from chatledger.server.limits import BatchTurns, BodyLimit
from chatledger.tasks.router import router as tasks_router
from chatledger.tasks.sweeper import sweep
from chatledger.tenants import service as tenants
from chatledger.tenants.router import router as tenants_router
from chatledger.traces.router import router as traces_router
from chatledger.usage.router import router as usage_router
from chatledger.variables.router import router as variables_router

log = logging.getLogger(__name__)

# The routes a request is matched against in this order, each one's own check (FastAPI
# matches an included router's routes twice, ~1 µs a route each time): the writes an app
# makes all the time come first. No path of one router is a path of another, so the
# order decides nothing else (tests/fuzz/test_openapi.py walks them all).
ROUTERS = (
    chat_router,
    interactions_router,
    traces_router,
    batch_router,
    health.router,
    tenants_router,
    runs_router,
    tasks_router,
    usage_router,
    prompts_router,
    variables_router,
    prices_router,
)


def create_app(
    settings: Settings | None = None,
    *,
    database: Database | None = None,
    no_auth: bool = False,
    sweep_interval_s: float | None = None,
    serving: bool = False,
    one_of_several: bool = False,
) -> FastAPI:
    """`serving`: the app is what this process serves until it ends (`chatledger serve`),
    so its heap is settled once it has started (server/heap.py). `one_of_several`: it is
    one of the worker processes sharing a port (`serve --workers N`; server/limits.py
    `BatchTurns`)."""
    settings = settings or Settings()
    database = database or Database.configured(settings)
    state = AppState(settings, database, ChatEngine(database, settings), no_auth=no_auth)

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await upgrade(database)
        if no_auth:
            async with database.transaction() as session:
                await tenants.ensure_project(session, settings.local_project)
                await tenants.ensure_user(session, settings.local_user)
        sweeper = asyncio.create_task(
            _sweep_forever(state, sweep_interval_s or settings.task_lease_seconds / 2)
        )
        if serving:
            pricing.load_catalogue()  # then frozen with the rest of startup
            heap.settle()
        try:
            yield
        finally:
            sweeper.cancel()
            await state.engine.shutdown()
            await database.dispose()

    app = FastAPI(
        title="chatledger",
        version="1",
        summary="The persistence and accounting layer for AI chat and agent applications.",
        lifespan=lifespan,
        # Before every route: what neither database can store is a 422, never a 500.
        dependencies=[Depends(storable.refuse_unstorable)],
    )
    app.state.chatledger = state
    app.state.metrics = health.Metrics()
    # Outermost last: a body over the size limit is refused before it waits its turn,
    # and the metrics count a batch's wait for its turn as part of its time.
    app.add_middleware(
        BatchTurns,
        limit=settings.batch_concurrency or (1 if one_of_several else 2),
        one_of_several=one_of_several,
    )
    app.add_middleware(health.RequestMetrics, metrics=app.state.metrics)
    app.add_middleware(BodyLimit, max_bytes=settings.max_request_bytes)
    errors.install(app)
    for router in ROUTERS:
        app.include_router(router, responses=errors.RESPONSES)
    return app


async def _sweep_forever(state: AppState, interval_s: float) -> None:
    """Tasks whose writer died (a crashed replica) end `interrupted` after the lease."""
    while True:
        await asyncio.sleep(interval_s)
        try:
            await sweep(state.database, state.settings.task_lease_seconds)
        except Exception:
            log.exception("sweeping stale tasks failed; trying again next interval")
