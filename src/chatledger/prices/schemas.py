"""Price overrides over the API. Prices are USD per million tokens, as price lists write
them; they are stored as integer nano-USD per million tokens."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Annotated

from pydantic import BaseModel, Field

from chatledger.fields import Timestamp
from chatledger.prices.models import PriceOverride
from chatledger.pricing import Rates, to_nano, usd
from chatledger.tasks.schemas import UsageIn

# Bounded so a whole 32-bit token count times the rate fits comfortably in 64 bits.
UsdPerMillion = Annotated[Decimal, Field(ge=0, le=1_000_000, examples=["2.50"])]
PROVIDER_PATTERN = r"^[a-z0-9][a-z0-9_.-]{0,63}$"


class PriceOverrideCreate(BaseModel):
    # A glob over the model name (without the provider): "gpt-4o*", "claude-*", "*".
    model_pattern: Annotated[str, Field(min_length=1, max_length=200, examples=["gpt-4o*"])]
    # Left out: the override applies to the matching models of every provider.
    provider: Annotated[str, Field(pattern=PROVIDER_PATTERN, examples=["openai"])] | None = None
    # Left out: from now on. A past date reprices nothing already recorded.
    effective_from: Timestamp | None = None
    input_per_mtok: UsdPerMillion
    output_per_mtok: UsdPerMillion
    # Left out: the input rate.
    cache_read_per_mtok: UsdPerMillion | None = None
    cache_write_per_mtok: UsdPerMillion | None = None

    def rates(self) -> Rates:
        return Rates(
            input=to_nano(self.input_per_mtok),
            output=to_nano(self.output_per_mtok),
            cache_read=_nano(self.cache_read_per_mtok),
            cache_write=_nano(self.cache_write_per_mtok),
        )


class PriceOverrideRead(BaseModel):
    id: str
    model_pattern: str
    provider: str | None
    effective_from: datetime
    input_per_mtok: Decimal
    output_per_mtok: Decimal
    cache_read_per_mtok: Decimal | None
    cache_write_per_mtok: Decimal | None
    created_at: datetime

    @classmethod
    def of(cls, row: PriceOverride) -> PriceOverrideRead:
        return cls(
            id=row.id,
            model_pattern=row.model_pattern,
            provider=row.provider,
            effective_from=row.effective_from,
            input_per_mtok=usd(row.input_per_mtok_nano),
            output_per_mtok=usd(row.output_per_mtok_nano),
            cache_read_per_mtok=usd(row.cache_read_per_mtok_nano),
            cache_write_per_mtok=usd(row.cache_write_per_mtok_nano),
            created_at=row.created_at,
        )


class PriceQuoteRequest(BaseModel):
    """What a call would cost in this project, priced as a completion would be."""

    model: Annotated[str, Field(min_length=3, max_length=300, examples=["openai/gpt-4o"])]
    usage: UsageIn
    # Left out: now.
    at: Timestamp | None = None


class PriceQuote(BaseModel):
    provider: str
    model: str
    at: datetime
    # None when no price is known: unknown is not free.
    cost_nano: int | None
    cost_usd: Decimal | None
    price_source: str


def _nano(value: Decimal | None) -> int | None:
    return None if value is None else to_nano(value)
