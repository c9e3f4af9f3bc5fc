"""The client's resources, one per area of the API, returning the server's own schemas
so results are typed the same on both sides."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from chatledger.client.base import Transport
from chatledger.client.sse import Event, events
from chatledger.messages.schemas import MessageRead
from chatledger.runs.schemas import RunDetail, RunRead
from chatledger.server.pagination import Page
from chatledger.tenants.schemas import Me


def _body(**fields: Any) -> dict[str, Any]:
    """A request body without the fields left at None (the server's defaults apply)."""
    return {name: value for name, value in fields.items() if value is not None}


class Resource:
    def __init__(self, transport: Transport) -> None:
        self._t = transport


class Runs(Resource):
    async def create(
        self,
        id: str | None = None,
        *,
        name: str | None = None,
        settings: dict[str, Any] | None = None,
        metadata: dict[str, Any] | None = None,
        user_id: str | None = None,
    ) -> RunRead:
        """Create a run; the same id again returns the stored run."""
        body = _body(id=id, name=name, settings=settings, metadata=metadata, user_id=user_id)
        return RunRead.model_validate((await self._t.request("POST", "/v1/runs", json=body)).json())

    async def ensure(self, id: str, **fields: Any) -> RunRead:
        """Create the run if absent (PUT), else return it."""
        response = await self._t.request("PUT", f"/v1/runs/{id}", json=_body(**fields))
        return RunRead.model_validate(response.json())

    async def list(
        self, *, limit: int = 50, cursor: str | None = None, q: str | None = None
    ) -> Page[RunRead]:
        params = _body(limit=limit, cursor=cursor, q=q)
        response = await self._t.request("GET", "/v1/runs", params=params)
        return Page[RunRead].model_validate(response.json())

    async def iterate(
        self, *, q: str | None = None, page_size: int = 100
    ) -> AsyncIterator[RunRead]:
        """Every run, newest activity first, fetching page after page."""
        cursor = None
        while True:
            page = await self.list(limit=page_size, cursor=cursor, q=q)
            for run in page.items:
                yield run
            if page.next_cursor is None:
                return
            cursor = page.next_cursor

    async def get(self, id: str) -> RunDetail:
        return RunDetail.model_validate((await self._t.request("GET", f"/v1/runs/{id}")).json())

    async def rename(self, id: str, name: str) -> RunRead:
        response = await self._t.request("PATCH", f"/v1/runs/{id}", json={"name": name})
        return RunRead.model_validate(response.json())

    async def delete(self, id: str) -> None:
        await self._t.request("DELETE", f"/v1/runs/{id}")


class Messages(Resource):
    async def append(
        self, run_id: str, role: str, content: str, *, id: str | None = None, **fields: Any
    ) -> MessageRead:
        """Append a message; sending the same id and content again returns the stored one."""
        body = _body(id=id, role=role, content=content, **fields)
        response = await self._t.request("POST", f"/v1/runs/{run_id}/messages", json=body)
        return MessageRead.model_validate(response.json())

    async def list(self, run_id: str) -> list[MessageRead]:
        response = await self._t.request("GET", f"/v1/runs/{run_id}/messages")
        return [MessageRead.model_validate(item) for item in response.json()]


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
        body = _body(
            run_id=run_id,
            message={"id": message_id, "content": content} if message_id else {"content": content},
            model=model,
            settings=settings,
            run_name=run_name,
            user_id=user_id,
            stream=True,
        )
        async with self._t.stream("POST", "/v1/chat", json=body) as response:
            async for event in events(response):
                yield event

    async def send(self, content: str, **options: Any) -> dict[str, Any]:
        """Send a message and wait for the recorded reply (no streaming)."""
        message_id = options.pop("message_id", None)
        message = {"content": content, **({"id": message_id} if message_id else {})}
        body = _body(message=message, stream=False, **options)
        result: dict[str, Any] = (await self._t.request("POST", "/v1/chat", json=body)).json()
        return result

    async def retry(self, message_id: str, **options: Any) -> dict[str, Any]:
        """Answer a failed message again (same message id, a new task attempt)."""
        body = _body(stream=False, **options)
        response = await self._t.request("POST", f"/v1/messages/{message_id}/retry", json=body)
        result: dict[str, Any] = response.json()
        return result

    async def attach(self, task_id: str, after: int | None = None) -> AsyncIterator[Event]:
        """Follow a reply that is already streaming, resuming after event id `after`."""
        headers = {"Last-Event-ID": str(after)} if after is not None else {}
        async with self._t.stream("GET", f"/v1/tasks/{task_id}/stream", headers=headers) as r:
            async for event in events(r):
                yield event


class Account(Resource):
    async def me(self) -> Me:
        return Me.model_validate((await self._t.request("GET", "/v1/me")).json())
