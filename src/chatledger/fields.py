"""Field types that every API schema shares, so that an id, a client timestamp or a
token count is checked the same way wherever it arrives."""

from __future__ import annotations

import time
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
    # Compared as POSIX seconds: comparing two aware datetimes asks both zones for their
    # offsets (2.5 µs a check against 1.5, twice per item of a batch).
    ahead_s = value.timestamp() - time.time()
    if ahead_s > CLOCK_SKEW.total_seconds():
        raise ValueError("must not be in the future")
    if ahead_s > 0:
        # Within the skew: it happened just now, and nothing we store may be dated later.
        return utcnow()
    return value


# Items uploaded later (sync, batch, interactions) keep their own time, never a future one.
PastTimestamp = Annotated[AwareDatetime, AfterValidator(_not_in_future)]
# Client-computed cost of one call; bounded so nano-USD fits the 64-bit column.
CostUsd = Annotated[Decimal, Field(ge=0, le=1_000_000, examples=["0.0123"])]
