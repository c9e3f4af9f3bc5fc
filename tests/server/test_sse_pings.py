"""The keep-alive pings of a streamed reply (chat/stream.py, and a live turn's log in
engine/events.py): a comment each time no event came for a while, without ever losing,
reordering or swallowing an event or the error that ends the source."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator

import pytest
from fastapi.sse import KEEPALIVE_COMMENT, ServerSentEvent

from chatledger.chat import stream
from chatledger.engine.events import EventLog


def _event(n: int) -> ServerSentEvent:
    return ServerSentEvent(event="delta", id=str(n), data={"text": f"t{n}"})


async def _slow_source(fail: bool) -> AsyncIterator[ServerSentEvent]:
    yield _event(1)
    await asyncio.sleep(0.25)  # long enough for several pings
    yield _event(2)
    yield _event(3)  # right after: no ping between
    if fail:
        raise RuntimeError("the source broke")


def _pinged(source: AsyncIterator[ServerSentEvent]) -> AsyncGenerator[bytes, None]:
    """A stored source's stream, as `stream.response` sends it."""
    return stream._encoded(stream._with_pings(source))


@pytest.fixture
def short_pings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(stream, "PING_INTERVAL_S", 0.05)


async def test_pings_fill_silences_and_every_event_arrives_in_order(short_pings: None) -> None:
    chunks = [chunk async for chunk in _pinged(_slow_source(fail=False))]

    events = [c for c in chunks if c != KEEPALIVE_COMMENT]
    assert [b"id: 1" in events[0], b"id: 2" in events[1], b"id: 3" in events[2]] == [True] * 3
    assert len(events) == 3
    pings_between = chunks.index(events[1]) - chunks.index(events[0]) - 1
    assert pings_between >= 2
    assert chunks.index(events[2]) == chunks.index(events[1]) + 1
    assert b'data: {"text": "t1"}' in events[0]


async def test_the_error_that_ends_the_source_reaches_the_stream(short_pings: None) -> None:
    seen: list[bytes] = []
    with pytest.raises(RuntimeError, match="the source broke"):
        async for chunk in _pinged(_slow_source(fail=True)):
            seen.append(chunk)
    assert sum(chunk != KEEPALIVE_COMMENT for chunk in seen) == 3


async def test_a_client_going_away_stops_reading_the_source() -> None:
    read: list[int] = []

    async def endless() -> AsyncIterator[ServerSentEvent]:
        n = 0
        while True:
            n += 1
            read.append(n)
            yield _event(n)
            await asyncio.sleep(0.001)

    encoded = _pinged(endless())
    assert b"id: 1" in await anext(encoded)
    await encoded.aclose()
    await asyncio.sleep(0.05)
    stopped_at = len(read)
    await asyncio.sleep(0.05)
    assert len(read) == stopped_at


async def test_a_live_log_pings_while_idle_and_loses_no_event() -> None:
    log = EventLog()
    log.emit("delta", {"text": "a"})

    async def later() -> None:
        await asyncio.sleep(0.25)
        log.emit("delta", {"text": "b"})
        log.emit("done", {"status": "completed"})
        log.close()

    writer = asyncio.create_task(later())
    seen = [event async for event in log.follow_pinging(idle_s=0.05)]
    await writer

    events = [e for e in seen if e is not None]
    assert [(e.id, e.kind, e.data) for e in events] == [
        (1, "delta", {"text": "a"}),
        (2, "delta", {"text": "b"}),
        (3, "done", {"status": "completed"}),
    ]
    assert seen[0] == events[0] and seen.count(None) >= 2
    assert seen[-2:] == events[-2:]  # no ping between events that came together


async def test_followers_of_one_log_ping_each_on_their_own_interval() -> None:
    """One alarm serves the whole log: a follower woken before its time waits again, and
    each pings only once its own interval has passed without an event."""
    log = EventLog()

    async def follow(idle_s: float) -> list[float]:
        pings: list[float] = []
        async for event in log.follow_pinging(idle_s=idle_s):
            if event is None:
                pings.append(asyncio.get_running_loop().time())
        return pings

    started = asyncio.get_running_loop().time()
    often = asyncio.create_task(follow(0.05))
    rarely = asyncio.create_task(follow(0.2))
    await asyncio.sleep(0.45)
    log.emit("done", {"status": "completed"})
    log.close()
    frequent, rare = await often, await rarely

    assert len(frequent) >= 4 and 1 <= len(rare) <= 2, (frequent, rare)
    gaps = [b - a for a, b in zip([started, *frequent], frequent, strict=False)]
    assert all(gap >= 0.05 for gap in gaps), gaps
    assert rare[0] - started >= 0.2
    assert log._alarm is None  # closed: nothing left to ring
