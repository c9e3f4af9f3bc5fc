"""`Ledger`: chatledger embedded in a Python process. It opens (and migrates) the
database, acts as the configured local user, and offers the flows as methods. The CLI is
built on it; the HTTP server uses the same services with a caller per request.

What is done for the local user runs behind the database's wall for them (db/walls.py);
opening the database, `verify` and `sweep` are chatledger's own work and run without."""

from __future__ import annotations

from dataclasses import dataclass
from types import TracebackType
from typing import Any

from chatledger.config import Settings
from chatledger.db import walls
from chatledger.db.engine import Database
from chatledger.db.migrate import upgrade
from chatledger.engine.chat import ChatEngine, Turn
from chatledger.engine.turn import ChatRequest
from chatledger.messages import service as messages
from chatledger.messages.models import Message
from chatledger.runs import service as runs
from chatledger.runs.models import Run
from chatledger.tasks import service as tasks
from chatledger.tasks.models import Task
from chatledger.tasks.sweeper import sweep
from chatledger.tenants import service as tenants
from chatledger.tenants.caller import Caller
from chatledger.verify import Drift, find_drift, repair


@dataclass(frozen=True)
class RunDetail:
    run: Run
    messages: list[Message]
    tasks: list[Task]


class Ledger:
    def __init__(self, settings: Settings | None = None, **overrides: Any) -> None:
        self.settings = settings or Settings(**overrides)
        self.database = Database.configured(self.settings)
        self.caller = Caller(self.settings.local_project, self.settings.local_user)
        self.engine = ChatEngine(self.database, self.settings)

    async def open(self) -> Ledger:
        try:
            await upgrade(self.database)
            async with self.database.transaction() as session:
                await tenants.ensure_project(session, self.caller.project_id)
                await tenants.ensure_user(session, self.caller.user_id)
        except BaseException:
            await self.close()  # (`async with` closes only what it has opened)
            raise
        return self

    async def close(self) -> None:
        await self.engine.shutdown()
        await self.database.dispose()

    async def __aenter__(self) -> Ledger:
        return await self.open()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    # -- the save flow -------------------------------------------------------------------

    async def chat(self, content: str, **request: Any) -> Turn:
        """Send a message and start the reply; watch `turn.events()`, await `turn.result()`."""
        with walls.acting_as(self.caller):  # the reply's task inherits the caller
            return await self.engine.start(self.caller, ChatRequest(content=content, **request))

    async def retry(self, message_id: str, **request: Any) -> Turn:
        message_request = ChatRequest(content="", **request) if request else None
        with walls.acting_as(self.caller):
            return await self.engine.retry(self.caller, message_id, message_request)

    # -- reading -------------------------------------------------------------------------

    async def list_runs(self, limit: int = 50, query: str | None = None) -> list[Run]:
        with walls.acting_as(self.caller):
            async with self.database.reading() as session:
                return await runs.list_runs(session, self.caller, limit=limit, query=query)

    async def get_run(self, run_id: str) -> RunDetail:
        with walls.acting_as(self.caller):
            async with self.database.reading() as session:
                return RunDetail(
                    run=await runs.get(session, self.caller, run_id),
                    messages=await messages.list_messages(session, self.caller, run_id),
                    tasks=await tasks.list_for_run(session, self.caller, run_id),
                )

    async def get_task(self, task_id: str) -> Task:
        with walls.acting_as(self.caller):
            async with self.database.reading() as session:
                return await tasks.get(session, self.caller, task_id)

    # -- upkeep --------------------------------------------------------------------------

    async def verify(self, *, fix: bool = False) -> list[Drift]:
        if fix:
            async with self.database.transaction() as session:
                return await repair(session)
        async with self.database.reading() as session:
            return await find_drift(session)

    async def sweep(self) -> list[str]:
        return await sweep(self.database, self.settings.task_lease_seconds)
