"""The batch (offline sync) endpoint's items: each carries its own id, so uploading the
same history again is recognised item by item."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field

from chatledger.fields import ClientId, CostUsd, Count, PastTimestamp
from chatledger.interactions.schemas import InteractionCreate
from chatledger.messages.schemas import MessageCreate
from chatledger.runs.schemas import RunCreate
from chatledger.tasks.schemas import TaskErrorIn, UsageIn
from chatledger.traces.schemas import TraceCreate

MAX_ITEMS = 1000


class RunItem(RunCreate):
    kind: Literal["run"]
    id: ClientId


class MessageItem(MessageCreate):
    kind: Literal["message"]
    id: ClientId
    run_id: ClientId
    user_id: ClientId | None = None


class TaskItem(BaseModel):
    """A model call that already ended (offline): created and ended in one go."""

    kind: Literal["task"]
    id: ClientId
    run_id: ClientId
    model: Annotated[str, Field(min_length=1, max_length=200)]
    provider: Annotated[str, Field(min_length=1, max_length=100)] | None = None
    status: Literal["completed", "failed", "cancelled"]
    user_message_id: ClientId | None = None
    response_text: str = ""
    usage: UsageIn | None = None
    cost_usd: CostUsd | None = None
    error: TaskErrorIn | None = None
    ttft_ms: Count | None = None
    total_ms: Count | None = None
    created_at: PastTimestamp | None = None
    completed_at: PastTimestamp | None = None
    user_id: ClientId | None = None


class InteractionItem(InteractionCreate):
    kind: Literal["interaction"]
    id: ClientId
    run_id: ClientId


class TraceItem(TraceCreate):
    kind: Literal["trace_entries"]


Item = Annotated[
    RunItem | MessageItem | TaskItem | InteractionItem | TraceItem, Field(discriminator="kind")
]


class BatchRequest(BaseModel):
    # Items are validated one by one (a bad item is rejected, not the whole batch).
    items: list[dict[str, Any]]


class ItemResult(BaseModel):
    index: int
    kind: str | None
    id: str | None
    status: Literal["created", "duplicate", "rejected"]
    error: dict[str, Any] | None = None


class BatchResult(BaseModel):
    results: list[ItemResult]
    created: int
    duplicate: int
    rejected: int
