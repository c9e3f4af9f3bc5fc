"""The keep-alive pings of a streamed reply (chat/stream.py): a comment each time no
event came for a while, without ever losing, reordering or swallowing an event or the
error that ends the source."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from fastapi.sse import KEEPALIVE_COMMENT, ServerSentEvent

from chatledger.chat import stream


def _event(n: int) -> ServerSentEvent:
    return ServerSentEvent(event="delta", id=str(n), data={"text": f"t{n}"})


async def _slow_source(fail: bool) -> AsyncIterator[ServerSentEvent]:
    yield _event(1)
    await asyncio.sleep(0.25)  # long enough for several pings
    yield _event(2)
    yield _event(3)  # right after: no ping between
    if fail:
        raise RuntimeError("the source broke")


@pytest.fixture
def short_pings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(stream, "PING_INTERVAL_S", 0.05)


async def test_pings_fill_silences_and_every_event_arrives_in_order(short_pings: None) -> None:
    chunks = [chunk async for chunk in stream._encoded(_slow_source(fail=False))]

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
        async for chunk in stream._encoded(_slow_source(fail=True)):
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

    encoded = stream._encoded(endless())
    assert b"id: 1" in await anext(encoded)
    await encoded.aclose()
    await asyncio.sleep(0.05)
    stopped_at = len(read)
    await asyncio.sleep(0.05)
    assert len(read) == stopped_at
