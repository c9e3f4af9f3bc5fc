"""Runs over the API: what a client sends to create or change one, and what it reads."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, computed_field

from chatledger.fields import PastTimestamp
from chatledger.ids import ID_PATTERN
from chatledger.messages.schemas import MessageRead
from chatledger.pricing import usd

ClientId = Annotated[str, Field(pattern=ID_PATTERN, examples=["run-1"])]


class RunCreate(BaseModel):
    id: ClientId | None = None
    name: Annotated[str, Field(min_length=1, max_length=200)] | None = None
    settings: dict[str, Any] = Field(default_factory=dict)
    metadata: dict[str, Any] = Field(default_factory=dict)
    # Service keys only: the app's own end user this run belongs to.
    user_id: ClientId | None = None
    created_at: PastTimestamp | None = None


class RunUpdate(BaseModel):
    name: Annotated[str, Field(min_length=1, max_length=200)]


class RunRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    user_id: str
    name: str
    name_source: str
    prompt_id: str | None
    settings: dict[str, Any]
    variable_values: dict[str, Any]
    metadata: dict[str, Any] = Field(validation_alias=AliasChoices("metadata_", "metadata"))
    task_count: int
    message_count: int
    total_tokens: int
    total_cost_nano: int
    last_message_at: datetime | None
    last_message_preview: str | None
    last_model: str | None
    created_at: datetime
    updated_at: datetime

    @computed_field  # type: ignore[prop-decorator]
    @property
    def total_cost_usd(self) -> Decimal:
        return usd(self.total_cost_nano) or Decimal(0)


class RunDetail(RunRead):
    messages: list[MessageRead] = Field(default_factory=list)
