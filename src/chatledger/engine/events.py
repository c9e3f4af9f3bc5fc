"""The events of one reply, kept in order with ids so that any number of watchers can
follow it live, or join late and resume after the last id they saw."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class ChatEvent:
    id: int
    kind: str  # run | task | delta | usage | done | error
    data: dict[str, Any]


class EventLog:
    def __init__(self) -> None:
        self.events: list[ChatEvent] = []
        self.closed = False
        self._grew = asyncio.Event()

    def emit(self, kind: str, data: dict[str, Any]) -> ChatEvent:
        event = ChatEvent(len(self.events) + 1, kind, data)
        self.events.append(event)
        self._wake()
        return event

    def close(self) -> None:
        self.closed = True
        self._wake()

    def _wake(self) -> None:
        # Everyone waiting on the old Event wakes; later waiters get a fresh one.
        grew, self._grew = self._grew, asyncio.Event()
        grew.set()

    async def follow(self, after: int = 0) -> AsyncGenerator[ChatEvent, None]:
        """Every event with id > `after`, then each new one as it comes, until closed."""
        # Closed with this one: `async for` leaves an inner generator to the collector.
        async with contextlib.aclosing(self.follow_pinging(after, idle_s=None)) as events:
            async for event in events:
                assert event is not None  # no idle time given: no pings
                yield event

    async def follow_pinging(
        self, after: int = 0, *, idle_s: float | None
    ) -> AsyncGenerator[ChatEvent | None, None]:
        """As `follow`, and None each time no event came for `idle_s` (a stream's cue to
        send a keep-alive). Giving up a wait loses nothing: the events stay in the log."""
        position = after
        while True:
            grew = self._grew
            while position < len(self.events):
                yield self.events[position]
                position += 1
            if self.closed:
                return
            try:
                async with asyncio.timeout(idle_s):
                    await grew.wait()
            except TimeoutError:
                yield None
