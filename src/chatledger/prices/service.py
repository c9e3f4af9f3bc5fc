"""Per-project price overrides, and the price of a model call with them.

An override prices the models matching `model_pattern` (a glob: `gpt-4o*`, `*`) of one
provider, or of any when `provider` is None, from `effective_from` on. It wins over
genai-prices. When several apply, the latest `effective_from` wins (a new price list
replaces the old on its date); on the same date a provider-specific override beats an
any-provider one, then the longer pattern (the more specific) wins.

Everyone in the project reads its overrides (they explain its costs); its owners and
admins write them. Anyone else gets a 404, as for another tenant's row.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from chatledger import pricing
from chatledger.db.types import utcnow
from chatledger.errors import InvalidInput, NotFound
from chatledger.ids import new_id
from chatledger.prices import cache
from chatledger.prices.models import PriceOverride
from chatledger.pricing import Price, Rates
from chatledger.tenants.caller import Caller
from chatledger.tokens import TokenUsage

SOURCE_PREFIX = "override "


@dataclass(frozen=True, slots=True)
class NewOverride:
    model_pattern: str
    rates: Rates
    provider: str | None = None
    effective_from: datetime | None = None


async def create(session: AsyncSession, caller: Caller, new: NewOverride) -> PriceOverride:
    _check_manager(caller)
    if not new.model_pattern.strip():
        raise InvalidInput("model_pattern", "must not be empty")
    now = utcnow()
    row = PriceOverride(
        project_id=caller.project_id,
        id=new_id(),
        provider=new.provider,
        model_pattern=new.model_pattern,
        effective_from=new.effective_from or now,
        input_per_mtok_nano=new.rates.input,
        output_per_mtok_nano=new.rates.output,
        cache_read_per_mtok_nano=new.rates.cache_read,
        cache_write_per_mtok_nano=new.rates.cache_write,
        created_at=now,
    )
    session.add(row)
    await session.flush()
    cache.forget_on_commit(session, caller.project_id)
    return row


async def list_overrides(session: AsyncSession, caller: Caller) -> list[PriceOverride]:
    stmt = (
        select(PriceOverride)
        .where(PriceOverride.project_id == caller.project_id)
        .order_by(PriceOverride.effective_from.desc(), PriceOverride.id.desc())
    )
    return list(await session.scalars(stmt))


async def remove(session: AsyncSession, caller: Caller, override_id: str) -> None:
    _check_manager(caller, override_id)
    stmt = delete(PriceOverride).where(
        PriceOverride.project_id == caller.project_id, PriceOverride.id == override_id
    )
    if (await session.execute(stmt)).rowcount == 0:  # type: ignore[attr-defined]
        raise NotFound("price override", override_id)
    cache.forget_on_commit(session, caller.project_id)


@dataclass(frozen=True, slots=True)
class ProjectPrices:
    """A project's overrides as loaded once: prices many calls without a lookup each."""

    overrides: tuple[cache.Override, ...]

    def price(self, provider: str, model: str, usage: TokenUsage, at: datetime) -> Price:
        """What the call cost: the override in force at `at`, else genai-prices."""
        found = choose(self.overrides, provider, model, at) if self.overrides else None
        if found is None:
            return pricing.price_usage(provider, model, usage, at)
        return Price(found.rates.cost_nano(usage), f"{SOURCE_PREFIX}{found.id}")


async def for_project(session: AsyncSession, project_id: str) -> ProjectPrices:
    return ProjectPrices(await _overrides(session, project_id))


async def price(
    session: AsyncSession,
    project_id: str,
    provider: str,
    model: str,
    usage: TokenUsage,
    at: datetime,
) -> Price:
    """What the call cost: the project's override in force at `at`, else genai-prices."""
    return (await for_project(session, project_id)).price(provider, model, usage, at)


def choose(
    overrides: tuple[cache.Override, ...], provider: str, model: str, at: datetime
) -> cache.Override | None:
    """The override in force for `provider`/`model` at `at` (see the module's rules)."""
    applicable = [
        o
        for o in overrides
        if o.provider in (None, provider)
        and o.effective_from <= at
        and fnmatch.fnmatchcase(model, o.model_pattern)
    ]
    if not applicable:
        return None
    return max(
        applicable,
        key=lambda o: (o.effective_from, o.provider is not None, len(o.model_pattern), o.id),
    )


async def _overrides(session: AsyncSession, project_id: str) -> tuple[cache.Override, ...]:
    async def load() -> tuple[cache.Override, ...]:
        rows = await session.scalars(
            select(PriceOverride).where(PriceOverride.project_id == project_id)
        )
        return tuple(
            cache.Override(
                id=row.id,
                provider=row.provider,
                model_pattern=row.model_pattern,
                effective_from=row.effective_from,
                rates=row.rates,
            )
            for row in rows
        )

    return await cache.overrides(session, project_id, load)


def _check_manager(caller: Caller, override_id: str | None = None) -> None:
    if not caller.manages_project:
        raise NotFound("price override", override_id or caller.project_id)
