"""A real uvicorn serving the real app on 127.0.0.1 (a free port) inside the test's event
loop, for what the ASGI transport cannot show: a stream arriving while it is made, a
client going away mid-stream. Also a provider whose tokens come only when the test lets
them (so "mid-stream" is a fact, not a timing), and a small SSE reader that keeps ids
as sent."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncGenerator, AsyncIterator, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import httpx
import uvicorn
from fastapi import FastAPI

from chatledger.providers import Delta, ModelRequest, StreamEvent
from chatledger.providers.base import Finished, estimate_tokens
from chatledger.providers.echo import count_input_tokens, echo_reply
from chatledger.tokens import TokenUsage
from tests.registered import registered

STARTUP_TIMEOUT_S = 30


@contextlib.asynccontextmanager
async def serving(app: FastAPI) -> AsyncIterator[str]:
    """Serve `app` (its lifespan entered by uvicorn); yields the base URL."""
    config = uvicorn.Config(app, host="127.0.0.1", port=0, lifespan="on", log_level="warning")
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(), name="uvicorn")
    try:
        async with asyncio.timeout(STARTUP_TIMEOUT_S):
            while not server.started:
                if task.done():
                    task.result()  # raises what stopped it
                    raise RuntimeError("uvicorn exited before it started")
                await asyncio.sleep(0.01)
        port = server.servers[0].sockets[0].getsockname()[1]
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


@dataclass(frozen=True)
class Sse:
    id: str | None
    kind: str
    data: Any


async def sse_events(response: httpx.Response) -> AsyncIterator[Sse]:
    """The events of a `text/event-stream` response as they arrive (comments skipped)."""
    fields: dict[str, list[str]] = {}
    async for line in response.aiter_lines():
        if line == "":
            if "data" in fields:
                yield Sse(
                    fields["id"][-1] if "id" in fields else None,
                    fields.get("event", ["message"])[-1],
                    json.loads("\n".join(fields["data"])),
                )
            fields = {}
        elif not line.startswith(":"):
            name, _, value = line.partition(":")
            fields.setdefault(name, []).append(value.removeprefix(" "))


class GatedProvider:
    """Replies like echo, but each word waits for a permit from the test: `release(n)`."""

    name = "gated"

    def __init__(self) -> None:
        self._permits = asyncio.Semaphore(0)

    def release(self, n: int = 1) -> None:
        for _ in range(n):
            self._permits.release()

    def check_settings(self, settings: Mapping[str, Any]) -> None:
        pass

    async def stream(self, request: ModelRequest) -> AsyncGenerator[StreamEvent, None]:
        reply = echo_reply(request.messages)
        words = reply.split(" ")
        for index, word in enumerate(words):
            await self._permits.acquire()
            yield Delta(word if index == len(words) - 1 else f"{word} ")
        usage = TokenUsage(count_input_tokens(request.messages), estimate_tokens(reply))
        yield Finished(usage)


@contextlib.contextmanager
def gated_provider() -> Iterator[GatedProvider]:
    """`gated/<any>` models answered by a fresh GatedProvider, for one test."""
    with registered("gated", GatedProvider()) as provider:
        yield provider
