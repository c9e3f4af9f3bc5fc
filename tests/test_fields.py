"""Client timestamps (`PastTimestamp`): kept as sent when past, dated now when a client's
clock runs a little ahead, refused beyond that."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from pydantic import BaseModel, ValidationError

from chatledger.fields import CLOCK_SKEW, PastTimestamp


class Sent(BaseModel):
    at: PastTimestamp


def test_a_past_time_is_kept_as_sent_whatever_its_zone() -> None:
    lisbon_summer = timezone(timedelta(hours=1))
    sent = datetime(2026, 7, 1, 12, 30, 15, 123456, tzinfo=lisbon_summer)
    assert Sent(at=sent).at == sent
    assert Sent.model_validate({"at": "2026-07-01T12:30:15.123456+01:00"}).at == sent


def test_a_time_just_ahead_of_ours_is_dated_now() -> None:
    before = datetime.now(UTC)
    ahead = before + CLOCK_SKEW / 2
    at = Sent(at=ahead).at
    assert before <= at <= datetime.now(UTC) < ahead


@pytest.mark.parametrize("ahead", [CLOCK_SKEW * 2, timedelta(hours=1), timedelta(days=400)])
def test_a_time_beyond_the_skew_is_refused(ahead: timedelta) -> None:
    with pytest.raises(ValidationError, match="must not be in the future"):
        Sent(at=datetime.now(UTC) + ahead)


@pytest.mark.parametrize(
    "zone", [UTC, timezone(timedelta(hours=14)), timezone(-timedelta(hours=12))]
)
def test_the_time_is_checked_as_an_instant_whatever_its_zone(zone: timezone) -> None:
    # (pydantic-core decides whether a time is past: against now in UTC, as an instant.)
    now = datetime.now(UTC)
    past, ahead = (now - timedelta(seconds=60)).astimezone(zone), now + CLOCK_SKEW * 3
    for sent in (past, past.isoformat()):
        assert Sent.model_validate({"at": sent}).at == past
    for sent in (ahead.astimezone(zone), ahead.astimezone(zone).isoformat()):
        with pytest.raises(ValidationError) as refused:
            Sent.model_validate({"at": sent})
        [error] = refused.value.errors()
        assert (error["type"], error["msg"]) == (
            "value_error",
            "Value error, must not be in the future",
        )


def test_a_time_without_a_zone_is_refused() -> None:
    with pytest.raises(ValidationError, match="timezone"):
        Sent.model_validate({"at": "2026-07-01T12:30:15"})
