"""The client's batch resource: upload history made elsewhere or offline (runs, messages,
ended tasks, interactions, trace entries) in one call, insert-only and idempotent by id.

Items are mappings with a `kind` ("run", "message", "task", "interaction",
"trace_entries") or the matching models of `chatledger.batch.schemas` (`RunItem`, …).
Each item answers `created`, `duplicate` or `rejected` (with its error); a rejected item
does not stop the others, so the call raises only when the batch as a whole is refused
(over `chatledger.batch.schemas.MAX_ITEMS` items: PayloadTooLarge).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from pydantic import BaseModel

from chatledger.batch.schemas import BatchResult
from chatledger.client.base import Resource, model_body


class Batch(Resource):
    async def ingest(self, items: Iterable[BaseModel | Mapping[str, Any]]) -> BatchResult:
        """Store the items; uploading the same history again changes nothing."""
        payload = {"items": [model_body(item) for item in items]}
        response = await self._t.request("POST", "/v1/batch", json=payload)
        return BatchResult.model_validate(response.json())
