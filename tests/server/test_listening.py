"""A worker's uvicorn (server/listening.py), in process: shutting down (stopped, or
replaced by a SIGHUP restart) it stops accepting, then lets a connection it had just
accepted read its first request and answers it, where uvicorn alone closed such a
connection as idle and its client's request went unanswered."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import uvicorn

from chatledger.server import listening

DEADLINE_S = 10


async def hello(scope: dict[str, Any], receive: Callable[[], Awaitable[Any]], send: Any) -> None:
    assert scope["type"] == "http"
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"hello"})


@contextlib.contextmanager
def handed_pipes() -> Iterator[tuple[int, int]]:
    """A readiness pipe's write end and a lifeline's read end, as a supervisor hands them
    (the lifeline's other end held open throughout)."""
    ready_read, ready_write = os.pipe()
    lifeline, kept = os.pipe()
    try:
        yield ready_write, lifeline
    finally:
        for fd in (ready_read, lifeline, kept):
            os.close(fd)


async def until(condition: Callable[[], bool]) -> None:
    """Each turn of the event loop, until `condition` holds."""
    for _ in range(DEADLINE_S * 1000):
        if condition():
            return
        await asyncio.sleep(0.001)
    raise AssertionError("waited in vain")


async def test_a_connection_accepted_as_shutdown_begins_is_answered() -> None:
    config = uvicorn.Config(hello, lifespan="off", log_level="warning")
    with handed_pipes() as (ready_fd, lifeline), socket.socket() as port:
        port.bind(("127.0.0.1", 0))
        port.listen()
        server = listening.HandedSocketServer(config, ready_fd=ready_fd, lifeline=lifeline)
        serving = asyncio.create_task(server.serve(sockets=[port]))
        await until(lambda: server.started)

        reader, writer = await asyncio.open_connection(*port.getsockname())
        await until(lambda: len(server.server_state.connections) == 1)  # accepted
        server.should_exit = True
        await until(lambda: not server.servers[0].is_serving())  # shutting down
        writer.write(b"GET / HTTP/1.1\r\nHost: worker\r\n\r\n")
        answer = await asyncio.wait_for(reader.read(), DEADLINE_S)
        writer.close()
        await asyncio.wait_for(serving, DEADLINE_S)
    # Read to its end: answered, then closed (the worker is ending).
    assert answer.startswith(b"HTTP/1.1 200"), answer
    assert b"\r\nhello\r\n" in answer
