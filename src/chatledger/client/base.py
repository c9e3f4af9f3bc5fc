"""The transport under every client resource (one httpx client, auth, error mapping, and
retries of 503 "busy" and 429 "rate limited" after the server's Retry-After), and the
`Resource` base they share.

Given a server URL it talks HTTP. Given a database URL (`sqlite+aiosqlite:///…`,
`postgresql+psycopg://…`) it runs the app in-process over ASGI as the local user — the
same code path as a server, without one (local mode).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Mapping
from types import TracebackType
from typing import Any

import httpx
from pydantic_core import to_jsonable_python

from chatledger.client.errors import raise_for_error
from chatledger.errors import Busy, RateLimited

DEFAULT_URL = "http://127.0.0.1:8000"
LOCAL_BASE_URL = "http://chatledger.local"


def is_database_url(url: str) -> bool:
    scheme = url.partition("://")[0]
    return scheme.startswith(("sqlite", "postgresql"))


class Transport:
    def __init__(
        self,
        url: str | None,
        *,
        api_key: str | None,
        http_client: httpx.AsyncClient | None,
        timeout: float,
        retries: int,
    ) -> None:
        url = url or os.environ.get("CHATLEDGER_URL") or DEFAULT_URL
        self.retries = retries
        self._lifespan: contextlib.AbstractAsyncContextManager[Any] | None = None
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        if http_client is not None:
            self.http = http_client
            self.http.headers.update(headers)
        elif is_database_url(url):
            from chatledger.client.local import StreamingASGITransport
            from chatledger.config import Settings
            from chatledger.server.app import create_app

            app = create_app(Settings(database_url=url), no_auth=True)
            self._lifespan = app.router.lifespan_context(app)
            self.http = httpx.AsyncClient(
                transport=StreamingASGITransport(app),
                base_url=LOCAL_BASE_URL,
                headers=headers,
                timeout=timeout,
            )
        else:
            self.http = httpx.AsyncClient(base_url=url, headers=headers, timeout=timeout)
        self._opened = False

    async def open(self) -> None:
        if not self._opened and self._lifespan is not None:
            await self._lifespan.__aenter__()
        self._opened = True

    async def close(self) -> None:
        await self.http.aclose()
        if self._opened and self._lifespan is not None:
            await self._lifespan.__aexit__(None, None, None)
        self._opened = False

    async def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """Send, retrying 503 (busy) and 429 (rate limited) after the server's
        Retry-After; raise the mapped error."""
        await self.open()
        for attempt in range(self.retries + 1):
            response = await self.http.request(method, path, **kwargs)
            try:
                raise_for_error(response)
            except (Busy, RateLimited) as wait:
                if attempt == self.retries:
                    raise
                await asyncio.sleep(min(wait.retry_after, 10))
                continue
            return response
        raise AssertionError("unreachable")

    @contextlib.asynccontextmanager
    async def stream(self, method: str, path: str, **kwargs: Any) -> Any:
        await self.open()
        async with self.http.stream(method, path, **kwargs) as response:
            if response.status_code >= 400:
                await response.aread()
                raise_for_error(response)
            yield response


def body(**fields: Any) -> dict[str, Any]:
    """A JSON request body without the fields left at None (the server's defaults apply).
    Datetimes, dates, decimals, dataclasses (`TokenUsage`) and pydantic models become
    JSON the way the server parses them back."""
    kept = {name: value for name, value in fields.items() if value is not None}
    encoded: dict[str, Any] = to_jsonable_python(kept)
    return encoded


def model_body(value: Any) -> Any:
    """One nested input given as a pydantic model, a dataclass or a mapping, as JSON. A
    model sends only the fields that were set, so the server's defaults still apply."""
    if hasattr(value, "model_dump"):
        return value.model_dump(mode="json", exclude_unset=True)
    if isinstance(value, Mapping):
        value = dict(value)
    return to_jsonable_python(value)


class Resource:
    """One area of the API; `_t` is how the blocking `Client` recognises a resource."""

    def __init__(self, transport: Transport) -> None:
        self._t = transport


class ClientBase:
    """Open on first use; close with `aclose()` or `async with`."""

    transport: Transport

    async def aclose(self) -> None:
        await self.transport.close()

    async def __aenter__(self) -> Any:
        await self.transport.open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()
