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
    cores; more would only hold more memory.

    `one_of_several`: this process is one of the workers sharing a port (`serve
    --workers N`). A batch's answer then closes its connection, so that the client's
    next batch connects again and goes to a worker that is free. Otherwise a client's
    kept-alive connections stay where they first landed, and they land together: every
    worker waits on the port, and the first one woken accepts every connection pending
    (asyncio's accept loop), so all of a client's batches went to one worker in about
    half the ingest bench's runs while the other idled (one core busy of two; 11,000
    interactions/s on SQLite against 15,000-18,500 when they split)."""

    PATH = "/v1/batch"

    def __init__(self, app: ASGIApp, limit: int, one_of_several: bool = False) -> None:
        self.app = app
        self._turns = asyncio.Semaphore(limit)
        self._one_of_several = one_of_several

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != self.PATH or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        answer = _closing(send) if self._one_of_several else send
        async with self._turns:
            await self.app(scope, receive, answer)


def _closing(send: Send) -> Send:
    """`send`, its answer asking the client to close the connection after it."""

    async def closing(message: Message) -> None:
        if message["type"] == "http.response.start":
            message["headers"] = [*message.get("headers", []), (b"connection", b"close")]
        await send(message)

    return closing


def _content_length(scope: Scope) -> int | None:
    headers: Any = scope.get("headers") or []
    for name, value in headers:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None
