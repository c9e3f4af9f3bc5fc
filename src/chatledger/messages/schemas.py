"""Messages over the API."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import AliasChoices, BaseModel, ConfigDict, Field

from chatledger.fields import PastTimestamp
from chatledger.ids import ID_PATTERN

MessageId = Annotated[str, Field(pattern=ID_PATTERN)]


class MessageCreate(BaseModel):
    id: MessageId | None = None
    role: Literal["system", "user", "assistant", "tool"]
    content: str
    status: Literal["pending", "complete", "error"] = "complete"
    error: dict[str, Any] | None = None
    task_id: MessageId | None = None
    parent_id: MessageId | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)
    created_at: PastTimestamp | None = None


class MessageRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    run_id: str
    seq: int
    parent_id: str | None
    role: str
    content: str
    status: str
    error: dict[str, Any] | None
    task_id: str | None
    metadata: dict[str, Any] = Field(validation_alias=AliasChoices("metadata_", "metadata"))
    created_at: datetime
    updated_at: datetime
