"""Interactions over the API: a finished exchange (prompt, response, model, usage) as a
client logs it, and the rows it became."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, Field

from chatledger.fields import ClientId, CostUsd, Count, PastTimestamp
from chatledger.interactions.service import NewInteraction
from chatledger.messages.schemas import MessageRead
from chatledger.runs.schemas import RunRead
from chatledger.tasks.schemas import TaskRead, UsageIn, cost_nano


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

    def new(self) -> NewInteraction:
        """What the service records (field by field: model_dump() would copy it again)."""
        return NewInteraction(
            id=self.id,
            prompt=self.prompt,
            response=self.response,
            model=self.model,
            provider=self.provider,
            usage=self.usage.tokens(),
            cost_nano=cost_nano(self.cost_usd),
            ttft_ms=self.ttft_ms,
            total_ms=self.total_ms,
            user_message_id=self.user_message_id,
            assistant_message_id=self.assistant_message_id,
            created_at=self.created_at,
            completed_at=self.completed_at,
            metadata=self.metadata,
        )


class InteractionRead(BaseModel):
    run: RunRead
    task: TaskRead
    user_message: MessageRead
    assistant_message: MessageRead
