"""Daily usage over the API: rows of counters per day (and model and/or user), with the
totals of the range."""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, computed_field

from chatledger.pricing import usd

GroupBy = Literal["model", "user"]


class UsageCounts(BaseModel):
    requests: int = 0
    failed_requests: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cached_tokens: int = 0
    reasoning_tokens: int = 0
    # Known costs only: calls to models without a price add no cost.
    cost_nano: int = 0

    @computed_field  # type: ignore[prop-decorator]
    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens

    @computed_field  # type: ignore[prop-decorator]
    @property
    def cost_usd(self) -> Decimal:
        return usd(self.cost_nano) or Decimal(0)


class UsageRow(UsageCounts):
    day: date
    # Absent when summed over it (group_by=user, resp. group_by=model).
    model: str | None = None
    user_id: str | None = None


class DailyUsage(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    start: date = Field(alias="from")
    end: date = Field(alias="to")
    group_by: GroupBy | None
    rows: list[UsageRow]
    totals: UsageCounts
