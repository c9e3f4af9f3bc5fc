"""Interactions over the API: a finished exchange (prompt, response, model, usage) as a
client logs it, and the rows it became."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, Field

from chatledger.fields import ClientId, CostUsd, Count, PastTimestamp
from chatledger.messages.schemas import MessageRead
from chatledger.runs.schemas import RunRead
from chatledger.tasks.schemas import TaskRead, UsageIn


class InteractionCreate(BaseModel):
    # The interaction is its task: posting the same id again is a replay, never a copy.
    id: ClientId | None = None
    prompt: str
    response: str
    model: Annotated[str, Field(min_length=1, max_length=200, examples=["openai/gpt-4o"])]
    # Default: from a "provider/model" model string.
    provider: Annotated[str, Field(min_length=1, max_length=100)] | None = None
    usage: UsageIn
    cost_usd: CostUsd | None = None
    ttft_ms: Count | None = None
    total_ms: Count | None = None
    user_message_id: ClientId | None = None
    assistant_message_id: ClientId | None = None
    # When the prompt was sent; default now. The exchange ended at `completed_at`, by
    # default `created_at` + `total_ms` (its usage counts on that day).
    created_at: PastTimestamp | None = None
    completed_at: PastTimestamp | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)
    # Service keys only: the app's own end user the run belongs to.
    user_id: ClientId | None = None


class InteractionRead(BaseModel):
    run: RunRead
    task: TaskRead
    user_message: MessageRead
    assistant_message: MessageRead
