"""Field types that every API schema shares, so that an id, a client timestamp or a
token count is checked the same way wherever it arrives."""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal
from typing import Annotated

from pydantic import AfterValidator, AwareDatetime, Field

from chatledger.db.types import utcnow
from chatledger.ids import ID_PATTERN

ClientId = Annotated[str, Field(pattern=ID_PATTERN, examples=["run-1"])]
# The columns are 32-bit integers on PostgreSQL: a bigger number is bad input, not a 500.
Count = Annotated[int, Field(ge=0, le=2**31 - 1)]
# A client's clock may run a little ahead of ours; beyond this it is a wrong timestamp.
CLOCK_SKEW = timedelta(seconds=5)


def _not_in_future(value: datetime) -> datetime:
    now = utcnow()
    if value > now + CLOCK_SKEW:
        raise ValueError("must not be in the future")
    # Within the skew: it happened just now, and nothing we store may be dated later.
    return min(value, now)


# Items uploaded later (sync, batch, interactions) keep their own time, never a future one.
PastTimestamp = Annotated[AwareDatetime, AfterValidator(_not_in_future)]
# Client-computed cost of one call; bounded so nano-USD fits the 64-bit column.
CostUsd = Annotated[Decimal, Field(ge=0, le=1_000_000, examples=["0.0123"])]
