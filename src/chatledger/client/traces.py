"""The client's traces resource: an agent's node executions saved per thread, and their
CRUD. An agent sends its whole trace so far every time (`upsert_thread`); the server
keeps one trace id per thread and stores only the entries it does not have yet.

Entries are given as `TraceEntryCreate` models or mappings of the same fields
(`node`, `status`, `data`, `idx`, `started_at`, `ended_at`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Mapping
from enum import Enum
from typing import Any, Literal

from chatledger.client.base import Resource, body, model_body
from chatledger.server.pagination import Page
from chatledger.traces.schemas import TraceDetail, TraceEntryCreate, TraceRead, TraceSaved

PATH = "/v1/automation/traces"

Entry = TraceEntryCreate | Mapping[str, Any]


class _Unset(Enum):
    UNSET = "unset"


# "Leave as it is" for `update`, where None means "clear".
UNSET: Literal[_Unset.UNSET] = _Unset.UNSET


class Traces(Resource):
    async def save(
        self,
        thread_id: str,
        entries: Iterable[Entry] = (),
        *,
        id: str | None = None,
        name: str | None = None,
        user_id: str | None = None,
    ) -> TraceSaved:
        """Save a thread's trace (POST; the thread's run is ensured). If the thread has a
        trace already, only the entries it lacks are added. `created` counts them."""
        payload = _trace_body(entries, id=id, name=name, user_id=user_id, thread_id=thread_id)
        response = await self._t.request("POST", PATH, json=payload)
        return TraceSaved.model_validate(response.json())

    async def upsert_thread(
        self,
        thread_id: str,
        entries: Iterable[Entry] = (),
        *,
        id: str | None = None,
        name: str | None = None,
        user_id: str | None = None,
    ) -> TraceSaved:
        """Upsert by thread (PUT): send the whole trace so far; the trace id stays the
        same and re-sent entries are not duplicated."""
        payload = _trace_body(entries, id=id, name=name, user_id=user_id)
        response = await self._t.request("PUT", f"{PATH}/thread/{thread_id}", json=payload)
        return TraceSaved.model_validate(response.json())

    async def get(self, id: str) -> TraceDetail:
        """A trace with its entries in idx order."""
        return TraceDetail.model_validate((await self._t.request("GET", f"{PATH}/{id}")).json())

    async def get_by_thread(self, thread_id: str) -> TraceDetail:
        response = await self._t.request("GET", f"{PATH}/thread/{thread_id}")
        return TraceDetail.model_validate(response.json())

    async def list(
        self, *, limit: int = 50, cursor: str | None = None, thread_id: str | None = None
    ) -> Page[TraceRead]:
        """One page of traces, newest activity first; pass `next_cursor` as `cursor`."""
        params = body(limit=limit, cursor=cursor, thread_id=thread_id)
        response = await self._t.request("GET", PATH, params=params)
        return Page[TraceRead].model_validate(response.json())

    async def iterate(
        self, *, thread_id: str | None = None, page_size: int = 100
    ) -> AsyncIterator[TraceRead]:
        """Every trace, newest activity first, fetching page after page."""
        cursor = None
        while True:
            page = await self.list(limit=page_size, cursor=cursor, thread_id=thread_id)
            for trace in page.items:
                yield trace
            if page.next_cursor is None:
                return
            cursor = page.next_cursor

    async def update(
        self,
        id: str,
        *,
        name: str | _Unset | None = UNSET,
        data: dict[str, Any] | _Unset | None = UNSET,
    ) -> TraceRead:
        """Rename and/or replace the trace-level data; what is not given stays, None
        clears it. The entries are not changed here."""
        changes: dict[str, Any] = {}
        if name is not UNSET:
            changes["name"] = name
        if data is not UNSET:
            changes["data"] = data
        response = await self._t.request("PATCH", f"{PATH}/{id}", json=model_body(changes))
        return TraceRead.model_validate(response.json())

    async def delete(self, id: str) -> None:
        """Delete a trace and its entries; the thread's run stays."""
        await self._t.request("DELETE", f"{PATH}/{id}")


def _trace_body(entries: Iterable[Entry], **fields: Any) -> dict[str, Any]:
    return body(entries=[model_body(entry) for entry in entries], **fields)
