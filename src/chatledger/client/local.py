"""Local mode's transport: the app called in-process over ASGI, its response streamed to
the client as the app sends it.

httpx's own `ASGITransport` runs the app to the end before answering, so a chat's SSE
events would all arrive at once when the reply ended, and following a live reply
(`attach`) would wait for its end. Here the app runs on a task of its own and the body
reaches the client chunk by chunk; closing the response early tells the app the client
went away (`http.disconnect`), as a real server does.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, MutableMapping
from typing import Any

import httpx
from starlette.types import ASGIApp

# The app may still finish its work after the last byte (metrics, background tasks):
# closing a response waits this long for it before cancelling it.
FINISH_TIMEOUT_S = 5.0


class _End:
    """Marks the end of a response body in the queue."""


END = _End()


class StreamingASGITransport(httpx.AsyncBaseTransport):
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        body = await request.aread()
        started: asyncio.Future[tuple[int, list[tuple[bytes, bytes]]]]
        started = asyncio.get_running_loop().create_future()
        chunks: asyncio.Queue[bytes | _End] = asyncio.Queue()
        disconnected = asyncio.Event()
        request_sent = False

        async def receive() -> dict[str, Any]:
            nonlocal request_sent
            if not request_sent:
                request_sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            await disconnected.wait()
            return {"type": "http.disconnect"}

        async def send(message: MutableMapping[str, Any]) -> None:
            if message["type"] == "http.response.start":
                started.set_result((message["status"], list(message.get("headers", []))))
            elif message["type"] == "http.response.body":
                if message.get("body") and request.method != "HEAD":
                    chunks.put_nowait(bytes(message["body"]))
                if not message.get("more_body", False):
                    chunks.put_nowait(END)

        async def run() -> None:
            try:
                await self.app(_scope(request), receive, send)
            except Exception as exc:
                # Before the response started, the caller gets the exception; after it,
                # the app's error mapping has answered (500) and logged it already.
                if not started.done():
                    started.set_exception(exc)
            finally:
                if not started.done():
                    started.set_exception(RuntimeError("the app ended without a response"))
                chunks.put_nowait(END)

        app_task = asyncio.create_task(run())
        try:
            status, headers = await started
        except BaseException:
            app_task.cancel()
            raise
        stream = _ResponseBody(chunks, disconnected, app_task)
        return httpx.Response(status, headers=headers, stream=stream)


class _ResponseBody(httpx.AsyncByteStream):
    def __init__(
        self,
        chunks: asyncio.Queue[bytes | _End],
        disconnected: asyncio.Event,
        app_task: asyncio.Task[None],
    ) -> None:
        self._chunks = chunks
        self._disconnected = disconnected
        self._app_task = app_task

    async def __aiter__(self) -> AsyncIterator[bytes]:
        while not isinstance(chunk := await self._chunks.get(), _End):
            yield chunk

    async def aclose(self) -> None:
        self._disconnected.set()
        await asyncio.wait({self._app_task}, timeout=FINISH_TIMEOUT_S)
        if not self._app_task.done():
            self._app_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._app_task


def _scope(request: httpx.Request) -> dict[str, Any]:
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": request.method,
        "headers": [(key.lower(), value) for key, value in request.headers.raw],
        "scheme": request.url.scheme,
        "path": request.url.path,
        "raw_path": request.url.raw_path.split(b"?")[0],
        "query_string": request.url.query,
        "server": (request.url.host, request.url.port),
        "client": ("127.0.0.1", 123),
        "root_path": "",
    }
