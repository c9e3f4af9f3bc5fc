"""Field types that every API schema shares, so that an id, a client timestamp or a
token count is checked the same way wherever it arrives."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Annotated, Any

from pydantic import AwareDatetime, Field, GetCoreSchemaHandler
from pydantic_core import CoreSchema, core_schema

from chatledger.db.types import utcnow
from chatledger.ids import ID_PATTERN

ClientId = Annotated[str, Field(pattern=ID_PATTERN, examples=["run-1"])]
# The columns are 32-bit integers on PostgreSQL: a bigger number is bad input, not a 500.
Count = Annotated[int, Field(ge=0, le=2**31 - 1)]
# A client's clock may run a little ahead of ours; beyond this it is a wrong timestamp.
CLOCK_SKEW = timedelta(seconds=5)


_IN_FUTURE = "must not be in the future"


def _not_in_future(value: datetime) -> datetime:
    # Compared as POSIX seconds: comparing two aware datetimes asks both zones for their
    # offsets (2.5 µs a check against 1.5, twice per item of a batch).
    ahead_s = value.timestamp() - time.time()
    if ahead_s > CLOCK_SKEW.total_seconds():
        raise ValueError(_IN_FUTURE)
    if ahead_s > 0:
        # Within the skew: it happened just now, and nothing we store may be dated later.
        return utcnow()
    return value


class _NotInFuture:
    """`_not_in_future` after the aware datetime's own validation, for a time that is not
    in the past only: pydantic-core checks that a time is past itself (`now_op`), where a
    Python validator on every time cost ~0.5 µs more each (two per item of a batch, most
    of them long past). The error is the validator's, whichever check refused it."""

    def __get_pydantic_core_schema__(
        self, source: Any, handler: GetCoreSchemaHandler
    ) -> CoreSchema:
        in_the_past = core_schema.datetime_schema(now_op="past", now_utc_offset=0)
        within_the_skew = core_schema.no_info_after_validator_function(
            _not_in_future, core_schema.datetime_schema()
        )
        past_or_now = core_schema.union_schema(
            [in_the_past, within_the_skew],
            mode="left_to_right",
            custom_error_type="value_error",
            custom_error_context={"error": _IN_FUTURE},
        )
        return core_schema.chain_schema([handler(source), past_or_now])


# Every time is stored in UTC, where Python holds years 1 to 9999 only: a time that is
# in them in its own zone but not in UTC ("0001-01-01T00:00:00+01:00") could not be
# stored. Compared as instants by pydantic-core.
_IN_UTC_YEARS = Field(ge=datetime.min.replace(tzinfo=UTC), le=datetime.max.replace(tzinfo=UTC))
# A client's time.
Timestamp = Annotated[AwareDatetime, _IN_UTC_YEARS]
# Items uploaded later (sync, batch, interactions) keep their own time, never a future one.
PastTimestamp = Annotated[AwareDatetime, _IN_UTC_YEARS, _NotInFuture()]
# Client-computed cost of one call; bounded so nano-USD fits the 64-bit column.
CostUsd = Annotated[Decimal, Field(ge=0, le=1_000_000, examples=["0.0123"])]
