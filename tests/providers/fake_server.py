"""A real HTTP server for provider tests: uvicorn on 127.0.0.1 (a free port), in the
test's event loop, answering each request from a script the test queues.

An answer is a status, headers and parts sent one by one: bytes (an SSE frame, a JSON
body), `HOLD` (wait until the test calls `release()` or the client goes away; before any
byte it keeps the headers back, which is how a slow server looks) and `DROP` (cut the
connection mid-body). Every request is recorded with its headers and JSON body, and
`client_gone` is set when a client leaves while held: proof that it closed the stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import uvicorn

HOLD = b"<hold>"
DROP = b"<drop>"
STARTUP_TIMEOUT_S = 30


@dataclass
class Answer:
    parts: list[bytes]
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    content_type: str = "text/event-stream"


@dataclass(frozen=True)
class Received:
    path: str
    headers: dict[str, str]
    body: dict[str, Any]


class Dropped(Exception):
    """Raised inside the app to make uvicorn cut the connection mid-body."""


class FakeServer:
    def __init__(self, default: Callable[[Received], Answer]) -> None:
        self.default = default
        self.answers: deque[Answer] = deque()
        self.received: list[Received] = []
        self.client_gone = asyncio.Event()
        self.holding = asyncio.Event()
        self._released = asyncio.Event()
        self.base_url = ""

    def queue(self, *answers: Answer) -> None:
        self.answers.extend(answers)

    def release(self) -> None:
        self._released.set()

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        request = Received(scope["path"], headers, json.loads(body) if body else {})
        self.received.append(request)
        answer = self.answers.popleft() if self.answers else self.default(request)
        started = False
        for part in answer.parts:
            if part is HOLD:
                if await self._held_until_gone(receive):
                    return
                continue
            if part is DROP:
                raise Dropped("connection cut by the test script")
            if not started:
                await _start(send, answer)
                started = True
            await send({"type": "http.response.body", "body": part, "more_body": True})
        if not started:
            await _start(send, answer)
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    async def _held_until_gone(self, receive: Any) -> bool:
        """Wait for `release()`; True if the client went away first."""
        self.holding.set()
        released = asyncio.ensure_future(self._released.wait())
        # Once the body is read, uvicorn's receive() returns only when the client leaves.
        gone = asyncio.ensure_future(receive())
        done, pending = await asyncio.wait({released, gone}, return_when=asyncio.FIRST_COMPLETED)
        for task in pending:
            task.cancel()
        if gone in done:
            self.client_gone.set()
            return True
        return False


async def _start(send: Any, answer: Answer) -> None:
    headers = [(b"content-type", answer.content_type.encode())]
    headers += [(k.encode(), v.encode()) for k, v in answer.headers.items()]
    await send({"type": "http.response.start", "status": answer.status, "headers": headers})


@contextlib.asynccontextmanager
async def running(server: FakeServer, path: str = "") -> AsyncIterator[FakeServer]:
    """Serve `server` until the block ends; its `base_url` (+ `path`) is set meanwhile."""
    config = uvicorn.Config(server, host="127.0.0.1", port=0, lifespan="off", log_level="critical")
    uvicorn_server = uvicorn.Server(config)
    task = asyncio.create_task(uvicorn_server.serve(), name="fake-provider")
    try:
        async with asyncio.timeout(STARTUP_TIMEOUT_S):
            while not uvicorn_server.started:
                if task.done():
                    task.result()
                    raise RuntimeError("uvicorn exited before it started")
                await asyncio.sleep(0.01)
        port = uvicorn_server.servers[0].sockets[0].getsockname()[1]
        server.base_url = f"http://127.0.0.1:{port}{path}"
        yield server
    finally:
        server.release()  # no handler may still be held when uvicorn waits for them
        uvicorn_server.should_exit = True
        await task


# uvicorn reports the scripted drops as application errors; they are the point here.
logging.getLogger("uvicorn.error").setLevel(logging.CRITICAL)
