"""An SDK client per event loop: an HTTP connection pool cannot move between loops
(each test, each `asyncio.run` of the CLI has its own), so the client is rebuilt when
the loop changes and closed only from the loop that made it."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, Generic, Protocol, TypeVar


class _Closable(Protocol):
    async def close(self) -> Any: ...


C = TypeVar("C", bound=_Closable)


class PerLoopClient(Generic[C]):
    def __init__(self, make: Callable[[], C]) -> None:
        self._make = make
        self._client: C | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def get(self) -> C:
        loop = asyncio.get_running_loop()
        if self._client is None or self._loop is not loop:
            self._client, self._loop = self._make(), loop
        return self._client

    async def aclose(self) -> None:
        """Close the HTTP connections; a later `get` opens new ones."""
        client, self._client = self._client, None
        # A pool made in another (closed) loop cannot be closed from this one.
        if client is not None and self._loop is asyncio.get_running_loop():
            await client.close()
