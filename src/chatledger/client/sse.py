"""Reading a `text/event-stream` response into events (the few lines of the format
that chatledger's server writes: `id`, `event`, `data`, comments)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx


@dataclass(frozen=True)
class Event:
    id: int | None
    kind: str
    data: Any


async def events(response: httpx.Response) -> AsyncIterator[Event]:
    event_id: str | None = None
    kind = "message"
    data: list[str] = []
    async for line in response.aiter_lines():
        if line == "":
            if data:
                yield Event(_int(event_id), kind, json.loads("\n".join(data)))
            event_id, kind, data = None, "message", []
            continue
        if line.startswith(":"):
            continue  # a keep-alive comment
        field, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if field == "id":
            event_id = value
        elif field == "event":
            kind = value
        elif field == "data":
            data.append(value)
    if data:
        yield Event(_int(event_id), kind, json.loads("\n".join(data)))


def _int(value: str | None) -> int | None:
    return int(value) if value is not None and value.isdigit() else None
