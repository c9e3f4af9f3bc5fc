"""The client's chat resource: send a message and get the recorded reply (`send`), the
same as a stream of events (`stream`), answer a failed message again (`retry`), and
follow a reply that is already streaming (`attach`).

A turn can start from a prompt of the library: `send("…", prompt="summarize",
variables={"length": "one line"})`, or `prompt={"name": …, "label": "staging"}`.

A reply that fails before its first token raises `ProviderError` whose `details` hold
the `run_id`, `task_id` and `message_id`, so the message can be retried by id.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from typing import Any, TypedDict, Unpack

from chatledger.chat.schemas import ChatResult
from chatledger.client.base import Resource, body
from chatledger.client.sse import Event, events


class TurnOptions(TypedDict, total=False):
    """What a message may say besides its content (all optional)."""

    run_id: str  # default: a new run, named from the message
    message_id: str  # the user message's id: sending it again is a retry, never a copy
    model: str  # "provider/model"; default: the run's, the prompt's, the server's
    settings: dict[str, Any]  # model settings for this turn only
    run_name: str
    user_id: str  # service keys only: the app's end user the run belongs to
    prompt: str | Mapping[str, Any]  # a prompt's name, or {"name", "version" | "label"}
    variables: Mapping[str, str]  # values for the prompt's variables


class Chat(Resource):
    async def stream(self, content: str, **options: Unpack[TurnOptions]) -> AsyncIterator[Event]:
        """Send a message and iterate the reply's events: run, task, delta…, usage, done
        (or error). Stopping early does not stop the server recording the reply."""
        request = {**_chat_body(content, options), "stream": True}
        async with self._t.stream("POST", "/v1/chat", json=request) as r:
            async for event in events(r):
                yield event

    async def send(self, content: str, **options: Unpack[TurnOptions]) -> ChatResult:
        """Send a message and wait for the recorded reply (no streaming). A reply that
        failed after some text comes back with `status` "failed" and the partial text."""
        request = {**_chat_body(content, options), "stream": False}
        response = await self._t.request("POST", "/v1/chat", json=request)
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


def _chat_body(content: str, options: TurnOptions) -> dict[str, Any]:
    fields: dict[str, Any] = dict(options)
    message = body(id=fields.pop("message_id", None), content=content)
    if isinstance(fields.get("variables"), Mapping):
        fields["variables"] = dict(fields["variables"])
    if isinstance(fields.get("prompt"), Mapping):
        fields["prompt"] = dict(fields["prompt"])
    return body(message=message, **fields)
