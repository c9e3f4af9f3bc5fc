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
        # One future per waiting follower, resolved by the next event: what an
        # asyncio.Event does, without an Event made per event and a coroutine per wait.
        self._waiting: list[asyncio.Future[None]] = []
        # Wakes idle followers so they can ping: one timer for the whole log, set again
        # only when it rings. A timeout on every wait made and cancelled a timer per
        # event and follower (~12 µs an event: a third of following a live reply).
        self._alarm: asyncio.TimerHandle | None = None

    def emit(self, kind: str, data: dict[str, Any]) -> ChatEvent:
        event = ChatEvent(len(self.events) + 1, kind, data)
        self.events.append(event)
        self._wake()
        return event

    def close(self) -> None:
        self.closed = True
        if self._alarm is not None:
            self._alarm.cancel()
            self._alarm = None
        self._wake()

    def _wake(self) -> None:
        waiting, self._waiting = self._waiting, []
        for woken in waiting:
            if not woken.done():  # a follower cancelled while it waited has gone
                woken.set_result(None)

    def _wake_at(self, when: float) -> None:
        """Wake every follower at loop time `when` at the latest. An alarm set earlier
        stays: the followers it wakes too soon ask again."""
        if self._alarm is not None:
            if self._alarm.when() <= when:
                return
            self._alarm.cancel()
        self._alarm = asyncio.get_running_loop().call_at(when, self._ring)

    def _ring(self) -> None:
        self._alarm = None
        self._wake()

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
        loop = asyncio.get_running_loop()
        position = after
        quiet_since = loop.time()
        while True:
            if position < len(self.events):
                while position < len(self.events):
                    yield self.events[position]
                    position += 1
                quiet_since = loop.time()
            if self.closed:
                return
            if idle_s is not None:
                due = quiet_since + idle_s
                if loop.time() >= due:
                    yield None
                    quiet_since = loop.time()
                    continue
                self._wake_at(due)
            # Nothing yields between the last look at the log and this wait, so no event
            # can come unseen in between.
            woken = loop.create_future()
            self._waiting.append(woken)
            await woken
