"""The client's chat resource: send a message and get the recorded reply (`send`), the
same as a stream of events (`stream`), answer a failed message again (`retry`), and
follow a reply that is already streaming (`attach`).

A reply that fails before its first token raises `ProviderError` whose `details` hold
the `run_id`, `task_id` and `message_id`, so the message can be retried by id.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from chatledger.chat.schemas import ChatResult
from chatledger.client.base import Resource, body
from chatledger.client.sse import Event, events


class Chat(Resource):
    async def stream(
        self,
        content: str,
        *,
        run_id: str | None = None,
        message_id: str | None = None,
        model: str | None = None,
        settings: dict[str, Any] | None = None,
        run_name: str | None = None,
        user_id: str | None = None,
    ) -> AsyncIterator[Event]:
        """Send a message and iterate the reply's events: run, task, delta…, usage, done
        (or error). Stopping early does not stop the server recording the reply."""
        request = _chat_body(content, run_id, message_id, model, settings, run_name, user_id)
        async with self._t.stream("POST", "/v1/chat", json={**request, "stream": True}) as r:
            async for event in events(r):
                yield event

    async def send(
        self,
        content: str,
        *,
        run_id: str | None = None,
        message_id: str | None = None,
        model: str | None = None,
        settings: dict[str, Any] | None = None,
        run_name: str | None = None,
        user_id: str | None = None,
    ) -> ChatResult:
        """Send a message and wait for the recorded reply (no streaming). A reply that
        failed after some text comes back with `status` "failed" and the partial text."""
        request = _chat_body(content, run_id, message_id, model, settings, run_name, user_id)
        response = await self._t.request("POST", "/v1/chat", json={**request, "stream": False})
        return ChatResult.model_validate(response.json())

    async def retry(
        self,
        message_id: str,
        *,
        model: str | None = None,
        settings: dict[str, Any] | None = None,
    ) -> ChatResult:
        """Answer a failed message again (same message id, a new task attempt)."""
        request = body(model=model, settings=settings, stream=False)
        response = await self._t.request("POST", f"/v1/messages/{message_id}/retry", json=request)
        return ChatResult.model_validate(response.json())

    async def attach(self, task_id: str, after: int | None = None) -> AsyncIterator[Event]:
        """Follow a reply that is already streaming, resuming after event id `after`."""
        headers = {"Last-Event-ID": str(after)} if after is not None else {}
        async with self._t.stream("GET", f"/v1/tasks/{task_id}/stream", headers=headers) as r:
            async for event in events(r):
                yield event


def _chat_body(
    content: str,
    run_id: str | None,
    message_id: str | None,
    model: str | None,
    settings: dict[str, Any] | None,
    run_name: str | None,
    user_id: str | None,
) -> dict[str, Any]:
    message = body(id=message_id, content=content)
    return body(
        run_id=run_id,
        message=message,
        model=model,
        settings=settings,
        run_name=run_name,
        user_id=user_id,
    )
