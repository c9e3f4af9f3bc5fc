"""The Python client: `AsyncClient` (and the blocking `Client`) with a resource per
area of the API. Give it a server URL and an API key, or a database URL for local mode.

    async with AsyncClient("http://127.0.0.1:8000", api_key="cl_u_…") as client:
        run = await client.runs.ensure("support-42")
        async for event in client.chat.stream("Hello", run_id=run.id):
            ...
"""

from __future__ import annotations

import httpx

from chatledger.client.base import ClientBase, Transport
from chatledger.client.resources import Account, Chat, Messages, Runs
from chatledger.client.sse import Event
from chatledger.client.sync import Client


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
        self.account = Account(self.transport)

    async def me(self) -> object:
        return await self.account.me()


__all__ = ["AsyncClient", "Client", "Event"]
