"""Which value a variable takes in one render, and where it came from. Highest first:

    computed   current_date, current_time, current_datetime, weekday
    request    given with the render or chat request
    project    the caller's project
    org        the org of the caller's project
    user       the caller's user (or a service key's end user)
    default    the prompt's declared default

Computed values are taken in the timezone named by `user_timezone` (resolved by the same
rules below `computed`, so a request can pass it too), else UTC. A name with no value
anywhere is an error naming every such name at once, so a client fixes them in one go.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy.ext.asyncio import AsyncSession

from chatledger.db.types import utcnow
from chatledger.errors import InvalidInput
from chatledger.tenants.caller import Caller
from chatledger.variables import service as variables

COMPUTED = ("current_date", "current_time", "current_datetime", "weekday")
SOURCES = ("computed", "request", "project", "org", "user", "default")
TIMEZONE_VARIABLE = "user_timezone"
WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")


@dataclass(frozen=True, slots=True)
class Resolved:
    value: str
    source: str  # one of SOURCES


class MissingVariables(InvalidInput):
    """Variables with no value anywhere; `details["missing"]` lists every one."""

    def __init__(self, missing: list[str]) -> None:
        super().__init__("variables", f"no value for {', '.join(missing)}")
        self.details["missing"] = missing


async def resolve(
    session: AsyncSession,
    caller: Caller,
    names: Iterable[str],
    given: Mapping[str, str],
    defaults: Mapping[str, str],
    now: datetime | None = None,
) -> dict[str, Resolved]:
    """The value and source of each name, in the order given."""
    wanted = list(dict.fromkeys(names))
    computes = any(name in COMPUTED for name in wanted)
    lookup = {*wanted, TIMEZONE_VARIABLE} if computes else set(wanted)
    stored = await variables.stored_values(session, caller, lookup - set(COMPUTED))
    layers = [
        ("request", given),
        ("project", stored.get("project", {})),
        ("org", stored.get("org", {})),
        ("user", stored.get("user", {})),
        ("default", defaults),
    ]

    def pick(name: str) -> Resolved | None:
        for source, values in layers:
            if name in values:
                return Resolved(values[name], source)
        return None

    computed: dict[str, str] = {}
    if computes:
        zone = pick(TIMEZONE_VARIABLE)
        computed = computed_values((now or utcnow()).astimezone(timezone(zone)))
    resolved: dict[str, Resolved] = {}
    missing: list[str] = []
    for name in wanted:
        found = Resolved(computed[name], "computed") if name in computed else pick(name)
        if found is None:
            missing.append(name)
        else:
            resolved[name] = found
    if missing:
        raise MissingVariables(missing)
    return resolved


def timezone(setting: Resolved | None) -> tzinfo:
    if setting is None or not setting.value.strip():
        return UTC
    try:
        return ZoneInfo(setting.value.strip())
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise InvalidInput(
            f"variables.{TIMEZONE_VARIABLE}",
            f"unknown timezone {setting.value!r} (from {setting.source}); "
            "use an IANA name such as 'Europe/Paris'",
        ) from None


def computed_values(now: datetime) -> dict[str, str]:
    """The computed variables at `now`, in `now`'s own timezone."""
    return {
        "current_date": now.date().isoformat(),
        "current_time": now.strftime("%H:%M"),
        "current_datetime": now.isoformat(timespec="seconds"),
        # Not strftime("%A"): that follows the process locale, and prompts want English.
        "weekday": WEEKDAYS[now.weekday()],
    }
