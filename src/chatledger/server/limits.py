"""Limits on what requests may hold in memory.

- Size, enforced while the body arrives: a declared Content-Length over the limit is
  refused before reading, and a chunked body is cut off as soon as it passes the limit,
  so an oversized upload never sits in memory.
- Bulk uploads at once (`BatchTurns`): each batch in flight holds its parsed items, rows
  and answer (~4-5 MB for 500 interactions), so a client sending many at once would
  grow the process without bound; past the limit they wait their turn unread."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from chatledger.server.errors import error_body


class BodyLimit:
    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None and declared > self.max_bytes:
            await self._refuse(send)
            return
        received = 0
        refused = False

        async def counted_receive() -> Message:
            nonlocal received, refused
            if refused:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    # Answer now and tell the app the client has gone: it stops reading
                    # and whatever it would send is dropped below.
                    refused = True
                    await self._refuse(send)
                    return {"type": "http.disconnect"}
            return message

        async def guarded_send(message: Message) -> None:
            if not refused:
                await send(message)

        await self.app(scope, counted_receive, guarded_send)

    async def _refuse(self, send: Send) -> None:
        body = json.dumps(
            error_body(
                "payload_too_large",
                f"the request body is over the limit of {self.max_bytes} bytes",
                {"limit_bytes": self.max_bytes},
            )
        ).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [(b"content-type", b"application/json"), (b"connection", b"close")],
            }
        )
        await send({"type": "http.response.body", "body": body})


class BatchTurns:
    """At most `limit` batch uploads (`POST /v1/batch`) are read and stored at once in
    this process; the others wait here before their bodies are read (the server stops
    reading a waiting one's socket once its buffer fills). Two keep a SQLite writer
    busy (one batch checked while the other writes) and PostgreSQL's writes on two
    cores; more would only hold more memory."""

    PATH = "/v1/batch"

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self._turns = asyncio.Semaphore(limit)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != self.PATH or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        async with self._turns:
            await self.app(scope, receive, send)


def _content_length(scope: Scope) -> int | None:
    headers: Any = scope.get("headers") or []
    for name, value in headers:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None
