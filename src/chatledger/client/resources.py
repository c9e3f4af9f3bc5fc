"""The client's resources for runs, messages and the account (who am I, API keys),
returning the server's own schemas so results are typed the same on both sides. The
other areas have a module each: chat, tasks (and interactions), traces, batch, usage."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, Literal

from chatledger.client.base import Resource
from chatledger.client.base import body as _body
from chatledger.messages.schemas import MessageRead
from chatledger.runs.schemas import RunDetail, RunRead
from chatledger.server.pagination import Page
from chatledger.tenants.schemas import KeyCreated, KeyRead, Me


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


class Account(Resource):
    async def me(self) -> Me:
        return Me.model_validate((await self._t.request("GET", "/v1/me")).json())


class Keys(Resource):
    """API keys of the caller's project (user keys only: an app's service key cannot)."""

    async def create(
        self,
        *,
        kind: Literal["user", "service"] = "user",
        name: str | None = None,
        project_id: str | None = None,
    ) -> KeyCreated:
        """A new key; its `secret` is in this answer only."""
        response = await self._t.request(
            "POST", "/v1/keys", json=_body(kind=kind, name=name, project_id=project_id)
        )
        return KeyCreated.model_validate(response.json())

    async def list(self) -> list[KeyRead]:
        """All of the project's keys for owners and admins, else the caller's own."""
        response = await self._t.request("GET", "/v1/keys")
        return [KeyRead.model_validate(item) for item in response.json()]

    async def revoke(self, id: str) -> KeyRead:
        response = await self._t.request("DELETE", f"/v1/keys/{id}")
        return KeyRead.model_validate(response.json())
