"""The client's resources for model calls an app makes itself: `Tasks` (create one before
calling the model, report progress, end it exactly once) and `Interactions` (log a
finished exchange in one call).

Token usage is given as a `chatledger.TokenUsage` or a mapping of the same fields;
cost as a `Decimal` of USD (priced by the server from the usage when left out).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from decimal import Decimal
from typing import Any

import httpx

from chatledger.client.base import Resource, body, model_body
from chatledger.interactions.schemas import InteractionRead
from chatledger.tasks.schemas import TaskRead, UsageIn
from chatledger.tokens import TokenUsage

UsageInput = TokenUsage | UsageIn | Mapping[str, Any]


class Tasks(Resource):
    async def create(
        self,
        run_id: str,
        model: str,
        *,
        id: str | None = None,
        provider: str | None = None,
        user_message_id: str | None = None,
        service: str | None = None,
        task_name: str | None = None,
        request: dict[str, Any] | None = None,
        user_id: str | None = None,
    ) -> TaskRead:
        """Create a task before calling the model (its run is created if absent). The
        same id for the same run again returns the stored task."""
        payload = body(
            id=id,
            run_id=run_id,
            model=model,
            provider=provider,
            user_message_id=user_message_id,
            service=service,
            task_name=task_name,
            request=request,
            user_id=user_id,
        )
        return _task(await self._t.request("POST", "/v1/tasks", json=payload))

    async def get(self, id: str) -> TaskRead:
        return _task(await self._t.request("GET", f"/v1/tasks/{id}"))

    async def list_for_run(self, run_id: str) -> list[TaskRead]:
        """A run's tasks in the order they were created (retry attempts included)."""
        response = await self._t.request("GET", f"/v1/runs/{run_id}/tasks")
        return [TaskRead.model_validate(item) for item in response.json()]

    async def progress(self, id: str, response_text: str | None = None) -> TaskRead:
        """Mark the task `streaming` with the text so far (if given); also a heartbeat,
        so the task is not swept as interrupted. Raises Conflict once it has ended."""
        payload = body(response_text=response_text)
        return _task(await self._t.request("PATCH", f"/v1/tasks/{id}", json=payload))

    async def complete(
        self,
        id: str,
        response_text: str,
        usage: UsageInput,
        *,
        cost_usd: Decimal | None = None,
        ttft_ms: int | None = None,
        total_ms: int | None = None,
        completed_at: datetime | None = None,
    ) -> TaskRead:
        """End the task `completed`; its usage is counted once. The same completion again
        returns the task; a different one raises Conflict."""
        payload = body(
            response_text=response_text,
            usage=model_body(usage),
            cost_usd=cost_usd,
            ttft_ms=ttft_ms,
            total_ms=total_ms,
            completed_at=completed_at,
        )
        return _task(await self._t.request("POST", f"/v1/tasks/{id}/complete", json=payload))

    async def fail(
        self,
        id: str,
        error: str | Mapping[str, Any],
        *,
        response_text: str | None = None,
        usage: UsageInput | None = None,
        cost_usd: Decimal | None = None,
        ttft_ms: int | None = None,
        total_ms: int | None = None,
        completed_at: datetime | None = None,
    ) -> TaskRead:
        """End the task `failed`. `error` is a message, or a mapping with `message` (and
        `kind`, or any further fields, kept as sent). Usage already spent still counts."""
        payload = body(
            error={"message": error} if isinstance(error, str) else dict(error),
            response_text=response_text,
            usage=None if usage is None else model_body(usage),
            cost_usd=cost_usd,
            ttft_ms=ttft_ms,
            total_ms=total_ms,
            completed_at=completed_at,
        )
        return _task(await self._t.request("POST", f"/v1/tasks/{id}/fail", json=payload))

    async def cancel(
        self,
        id: str,
        reason: str | None = None,
        *,
        response_text: str | None = None,
        usage: UsageInput | None = None,
        cost_usd: Decimal | None = None,
        ttft_ms: int | None = None,
        total_ms: int | None = None,
        completed_at: datetime | None = None,
    ) -> TaskRead:
        """End the task `cancelled` (a live chat reply stops streaming)."""
        payload = body(
            reason=reason,
            response_text=response_text,
            usage=None if usage is None else model_body(usage),
            cost_usd=cost_usd,
            ttft_ms=ttft_ms,
            total_ms=total_ms,
            completed_at=completed_at,
        )
        return _task(await self._t.request("POST", f"/v1/tasks/{id}/cancel", json=payload))


class Interactions(Resource):
    async def record(
        self,
        run_id: str,
        prompt: str,
        response: str,
        model: str,
        usage: UsageInput,
        *,
        id: str | None = None,
        provider: str | None = None,
        cost_usd: Decimal | None = None,
        ttft_ms: int | None = None,
        total_ms: int | None = None,
        user_message_id: str | None = None,
        assistant_message_id: str | None = None,
        created_at: datetime | None = None,
        completed_at: datetime | None = None,
        metadata: dict[str, Any] | None = None,
        user_id: str | None = None,
    ) -> InteractionRead:
        """Record a prompt and its response in one call: the run is created if absent, a
        completed task carries model, usage and cost (counted once), and the user and
        assistant messages are appended. The same `id` again returns what was stored."""
        payload = body(
            id=id,
            prompt=prompt,
            response=response,
            model=model,
            provider=provider,
            usage=model_body(usage),
            cost_usd=cost_usd,
            ttft_ms=ttft_ms,
            total_ms=total_ms,
            user_message_id=user_message_id,
            assistant_message_id=assistant_message_id,
            created_at=created_at,
            completed_at=completed_at,
            metadata=metadata,
            user_id=user_id,
        )
        answer = await self._t.request("POST", f"/v1/runs/{run_id}/interactions", json=payload)
        return InteractionRead.model_validate(answer.json())


def _task(response: httpx.Response) -> TaskRead:
    return TaskRead.model_validate(response.json())
