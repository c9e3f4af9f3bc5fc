"""A worker's side of its supervisor (server/supervisor.py): uvicorn serving the listening
socket it was handed, saying on the readiness pipe once it serves, and ending when the
lifeline says the supervisor has gone.

Apart from the supervisor, which imports only the standard library: this module is
uvicorn's subclass.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import sys
from collections.abc import Callable
from typing import Any

import uvicorn

from chatledger.server.supervisor import (
    LIFELINE_FD_ENV,
    LISTEN_FD_ENV,
    READY_FD_ENV,
    STARTUP_FAILURE,
)

# How long, at most, a worker shutting down (SIGTERM: stopped, or replaced by SIGHUP)
# lets the connections it accepted just before read their first request, having stopped
# accepting. uvicorn closes a connection with no request yet at once, as an idle one; but
# a client that has just opened it has sent, or is sending, a request it will not send
# again. (A client that opens a connection ahead of its request, as browsers do, holds
# the shutdown up this long.)
FIRST_REQUEST_GRACE_S = 0.5
_LOOK_EVERY_S = 0.005


class HandedSocketServer(uvicorn.Server):
    """uvicorn on a socket handed over by the supervisor, with its readiness pipe and its
    lifeline (descriptors)."""

    def __init__(self, config: uvicorn.Config, *, ready_fd: int, lifeline: int) -> None:
        super().__init__(config)
        self.ready_fd = ready_fd
        self.lifeline = lifeline

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.started:
            # A supervisor already gone is seen on the lifeline below.
            with contextlib.suppress(BrokenPipeError):
                os.write(self.ready_fd, b"1")
            os.close(self.ready_fd)
            # A supervisor gone (killed, even) leaves no worker serving on its own.
            asyncio.get_running_loop().add_reader(self.lifeline, self.supervisor_gone)

    def supervisor_gone(self) -> None:
        asyncio.get_running_loop().remove_reader(self.lifeline)
        self.should_exit = True  # uvicorn's graceful shutdown, as for SIGTERM

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        # Accept no more (the other workers take the port's new connections), then let
        # those accepted read their first request (up to FIRST_REQUEST_GRACE_S) before
        # uvicorn closes the connections that have none.
        for server in self.servers:
            server.close()
        for _ in range(round(FIRST_REQUEST_GRACE_S / _LOOK_EVERY_S)):
            if not any(_awaits_first_request(c) for c in self.server_state.connections):
                break
            await asyncio.sleep(_LOOK_EVERY_S)
        await super().shutdown(sockets)


def _awaits_first_request(connection: Any) -> bool:
    """Whether an accepted connection has not begun a request yet (uvicorn's protocols
    make a cycle per request)."""
    return getattr(connection, "cycle", None) is None


def serve_listening(
    app: Callable[..., Any], *, factory: bool, log_level: str, access_log: bool
) -> None:
    """A worker's side: uvicorn serving `app` (an ASGI app, or what makes one if `factory`)
    on the socket the supervisor handed over, saying so on the readiness pipe once it
    serves."""
    if LISTEN_FD_ENV not in os.environ:
        sys.exit("a worker is started by its supervisor: chatledger serve --workers N")
    # Taken out of the environment and kept from any process this one starts: they are
    # this worker's alone.
    listen_fd, ready_fd, lifeline = (
        int(os.environ.pop(name)) for name in (LISTEN_FD_ENV, READY_FD_ENV, LIFELINE_FD_ENV)
    )
    for handed in (listen_fd, ready_fd, lifeline):
        os.set_inheritable(handed, False)
    config = uvicorn.Config(app, factory=factory, log_level=log_level, access_log=access_log)
    server = HandedSocketServer(config, ready_fd=ready_fd, lifeline=lifeline)
    server.run(sockets=[adopt(listen_fd)])
    if not server.started:
        sys.exit(STARTUP_FAILURE)


def adopt(listen_fd: int) -> socket.socket:
    """The socket object of a listening socket handed over by its descriptor.

    Its family is read from the socket itself: uvicorn's `--fd` labels any socket AF_UNIX,
    and asyncio then never sets TCP_NODELAY on the connections it accepts, which would
    hold a streamed reply's small writes back (Nagle's algorithm)."""
    return socket.socket(fileno=listen_fd)
