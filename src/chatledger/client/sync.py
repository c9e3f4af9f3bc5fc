"""`Client`: the blocking client. It drives an `AsyncClient` on an event loop of its own
(an anyio portal thread), so local mode (the app over ASGI) works from plain scripts too,
and every resource method is the async one, called and waited for."""

from __future__ import annotations

import contextlib
import functools
import inspect
from collections.abc import AsyncGenerator, Iterator
from contextlib import AbstractContextManager
from types import TracebackType
from typing import Any

from anyio.from_thread import BlockingPortal, start_blocking_portal


class _Blocking:
    """Calls the wrapped object's coroutine methods on the portal and waits; iterates its
    async generators item by item; wraps nested resources the same way."""

    def __init__(self, target: Any, portal: BlockingPortal) -> None:
        self._target = target
        self._portal = portal

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._target, name)
        if inspect.iscoroutinefunction(attribute):
            return lambda *a, **k: self._portal.call(functools.partial(attribute, *a, **k))
        if inspect.isasyncgenfunction(attribute):
            return lambda *a, **k: _iterate(self._portal, attribute(*a, **k))
        if hasattr(attribute, "_t"):  # a resource
            return _Blocking(attribute, self._portal)
        return attribute


def _iterate(portal: BlockingPortal, generator: AsyncGenerator[Any]) -> Iterator[Any]:
    try:
        while True:
            try:
                item = portal.call(generator.__anext__)
            except StopAsyncIteration:
                return
            yield item
    finally:
        # Stopped early (break, an exception): close it on its loop, so that what it
        # holds open (a streaming response) is released now. A portal already stopped
        # (the client was closed first) has closed the stream with its loop.
        with contextlib.suppress(RuntimeError):
            portal.call(generator.aclose)


class Client(_Blocking):
    """The same API as `AsyncClient`, blocking: `Client(url, api_key=…).runs.get(id)`."""

    def __init__(self, url: str | None = None, **options: Any) -> None:
        from chatledger.client import AsyncClient

        self._portal_cm: AbstractContextManager[BlockingPortal] = start_blocking_portal()
        portal = self._portal_cm.__enter__()
        target = portal.call(functools.partial(_make, AsyncClient, url, options))
        super().__init__(target, portal)

    def close(self) -> None:
        try:
            self._portal.call(self._target.aclose)
        finally:
            self._portal_cm.__exit__(None, None, None)

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


async def _make(factory: Any, url: str | None, options: dict[str, Any]) -> Any:
    # Built on the portal's loop, so its httpx client belongs to that loop.
    return factory(url, **options)
