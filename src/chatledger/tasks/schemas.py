"""Tasks over the API: creating one, reporting progress, ending it (complete, fail,
cancel), and what a client reads back. Also the pieces other endpoints that end a model
call reuse: token usage as clients report it, client timestamps, and the provider rule."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    computed_field,
    field_validator,
)

from chatledger.errors import InvalidInput
from chatledger.fields import ClientId, CostUsd, Count, PastTimestamp
from chatledger.pricing import to_nano, usd
from chatledger.providers.registry import split_model
from chatledger.tokens import TokenUsage


def provider_and_model(model: str, provider: str | None) -> tuple[str, str]:
    """The provider and the model name to store: "openai/gpt-4o" means provider openai,
    model gpt-4o (so that it can be priced); a bare model name needs its provider."""
    if provider is None:
        if "/" not in model and model != "echo":
            raise InvalidInput("provider", "is required unless model is 'provider/model'")
        return split_model(model)
    prefix = f"{provider}/"
    if model.startswith(prefix) and len(model) > len(prefix):
        return provider, model[len(prefix) :]
    return provider, model


def cost_nano(cost_usd: Decimal | None) -> int | None:
    return None if cost_usd is None else to_nano(cost_usd)


class UsageIn(BaseModel):
    """Token counts of one call. Cache reads and writes are parts of the input and
    reasoning tokens part of the output (see chatledger.tokens), so no part can exceed
    its whole."""

    input_tokens: Count
    output_tokens: Count
    cached_tokens: Count = 0
    reasoning_tokens: Count = 0
    cache_write_tokens: Count = 0
    # True when the client estimated the counts (its provider reported none).
    estimated: bool = False

    @field_validator("cached_tokens")
    @classmethod
    def _cached_within_input(cls, value: int, info: ValidationInfo) -> int:
        if value > info.data.get("input_tokens", value):
            raise ValueError("must not exceed input_tokens (cached tokens are part of them)")
        return value

    @field_validator("reasoning_tokens")
    @classmethod
    def _reasoning_within_output(cls, value: int, info: ValidationInfo) -> int:
        if value > info.data.get("output_tokens", value):
            raise ValueError("must not exceed output_tokens (reasoning tokens are part of them)")
        return value

    @field_validator("cache_write_tokens")
    @classmethod
    def _cache_writes_within_input(cls, value: int, info: ValidationInfo) -> int:
        cache_reads = info.data.get("cached_tokens", 0)
        if value + cache_reads > info.data.get("input_tokens", value + cache_reads):
            raise ValueError(
                "cached_tokens + cache_write_tokens must not exceed input_tokens "
                "(both are parts of the input)"
            )
        return value

    def tokens(self) -> TokenUsage:
        # Not TokenUsage(**self.model_dump()): a dict built to unpack, per batch item.
        return TokenUsage.of(self)


def tokens(usage: UsageIn | None) -> TokenUsage | None:
    return None if usage is None else usage.tokens()


class TaskCreate(BaseModel):
    id: ClientId | None = None
    run_id: ClientId
    user_message_id: ClientId | None = None
    model: Annotated[str, Field(min_length=1, max_length=200, examples=["openai/gpt-4o"])]
    # Default: from a "provider/model" model string.
    provider: Annotated[str, Field(min_length=1, max_length=100)] | None = None
    service: Annotated[str, Field(max_length=100)] | None = None
    task_name: Annotated[str, Field(max_length=100)] | None = None
    request: dict[str, Any] = Field(default_factory=dict)
    # Service keys only: the app's own end user the run belongs to.
    user_id: ClientId | None = None


class TaskProgress(BaseModel):
    response_text: str | None = None


class _Ending(BaseModel):
    response_text: str | None = None
    usage: UsageIn | None = None
    cost_usd: CostUsd | None = None
    ttft_ms: Count | None = None
    total_ms: Count | None = None
    completed_at: PastTimestamp | None = None


class TaskComplete(_Ending):
    response_text: str
    usage: UsageIn


class TaskErrorIn(BaseModel):
    # Further fields (a provider's code, retryable…) are kept as sent.
    model_config = ConfigDict(extra="allow")

    kind: Annotated[str, Field(max_length=100)] | None = None
    message: str


class TaskFail(_Ending):
    error: TaskErrorIn


class TaskCancel(_Ending):
    reason: str | None = None


class TaskRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    run_id: str
    user_id: str
    user_message_id: str | None
    attempt: int
    service: str | None
    task_name: str | None
    provider: str
    model: str
    request: dict[str, Any]
    status: str
    response_text: str
    error: dict[str, Any] | None
    input_tokens: int
    output_tokens: int
    cached_tokens: int
    reasoning_tokens: int
    cache_write_tokens: int
    usage_estimated: bool
    cost_nano: int | None
    price_source: str | None
    ttft_ms: int | None
    total_ms: int | None
    created_at: datetime
    updated_at: datetime
    heartbeat_at: datetime
    completed_at: datetime | None

    @computed_field  # type: ignore[prop-decorator]
    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens

    @computed_field  # type: ignore[prop-decorator]
    @property
    def cost_usd(self) -> Decimal | None:
        # None when the model has no known price: unknown is not free.
        return usd(self.cost_nano)
