"""The live-chat baseline: `POST /v1/chat` streaming the echo provider's reply as
Server-Sent Events, exactly as chatledger words them (`run`, `task`, `delta`…, `usage`,
`done`), with the same token timing and the same SSE encoding, but recording nothing:
no API key, no run, task or message, no progress writes. What chatledger adds to a
streamed reply is its latency minus this one's.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI
from fastapi.encoders import jsonable_encoder
from fastapi.sse import EventSourceResponse, format_sse_event
from pydantic import BaseModel

from chatledger.providers.base import ChatMessage, Delta, Finished, ModelRequest
from chatledger.providers.echo import EchoProvider

app = FastAPI(title="bare SSE baseline")
_echo = EchoProvider()


class _Message(BaseModel):
    content: str


class _Chat(BaseModel):
    message: _Message
    run_id: str | None = None
    settings: dict[str, Any] = {}


def _event(kind: str, event_id: int, data: dict[str, Any]) -> bytes:
    return format_sse_event(
        data_str=json.dumps(jsonable_encoder(data)), event=kind, id=str(event_id)
    )


async def _reply(body: _Chat) -> AsyncIterator[bytes]:
    run_id, task_id = body.run_id or str(uuid.uuid4()), str(uuid.uuid4())
    request = ModelRequest("echo", (ChatMessage("user", body.message.content),), body.settings)
    yield _event("run", 1, {"id": run_id, "name": body.message.content[:60], "created": True})
    yield _event("task", 2, {"id": task_id, "attempt": 1, "model": "echo"})
    event_id = 2
    async for event in _echo.stream(request):
        event_id += 1
        if isinstance(event, Delta):
            yield _event("delta", event_id, {"text": event.text})
        elif isinstance(event, Finished):
            usage = {
                "input_tokens": event.usage.input_tokens,
                "output_tokens": event.usage.output_tokens,
            }
            yield _event("usage", event_id, usage)
    yield _event("done", event_id + 1, {"task_id": task_id, "status": "completed"})


@app.post("/v1/chat")
async def chat(body: _Chat) -> EventSourceResponse:
    return EventSourceResponse(_reply(body))


@app.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}
