"""The Python client: `AsyncClient` (and the blocking `Client`) with a resource per
area of the API. Give it a server URL and an API key, or a database URL for local mode.

    async with AsyncClient("http://127.0.0.1:8000", api_key="cl_u_…") as client:
        run = await client.runs.ensure("support-42")
        async for event in client.chat.stream("Hello", run_id=run.id):
            ...

Results are the server's own pydantic schemas; errors are `chatledger.errors`.
"""

from __future__ import annotations

import httpx

from chatledger.client.base import ClientBase, Transport
from chatledger.client.batch import Batch
from chatledger.client.chat import Chat
from chatledger.client.resources import Account, Keys, Messages, Runs
from chatledger.client.sse import Event
from chatledger.client.sync import Client
from chatledger.client.tasks import Interactions, Tasks
from chatledger.client.traces import Traces
from chatledger.client.usage import Usage
from chatledger.tenants.schemas import Me


class AsyncClient(ClientBase):
    def __init__(
        self,
        url: str | None = None,
        *,
        api_key: str | None = None,
        http_client: httpx.AsyncClient | None = None,
        timeout: float = 60.0,
        retries: int = 3,
    ) -> None:
        self.transport = Transport(
            url, api_key=api_key, http_client=http_client, timeout=timeout, retries=retries
        )
        self.runs = Runs(self.transport)
        self.messages = Messages(self.transport)
        self.chat = Chat(self.transport)
        self.tasks = Tasks(self.transport)
        self.interactions = Interactions(self.transport)
        self.traces = Traces(self.transport)
        self.batch = Batch(self.transport)
        self.usage = Usage(self.transport)
        self.keys = Keys(self.transport)
        self.account = Account(self.transport)

    async def me(self) -> Me:
        """Who the client acts as: user, project, org, role, key kind."""
        return await self.account.me()


__all__ = ["AsyncClient", "Client", "Event"]
