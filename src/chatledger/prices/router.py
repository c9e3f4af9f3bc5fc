"""HTTP routes for a project's price overrides: list, add, remove, and a quote of what a
call would cost (priced exactly as a completion would be)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Response

from chatledger.db.types import utcnow
from chatledger.ids import ID_PATTERN
from chatledger.prices import service as prices
from chatledger.prices.schemas import (
    PriceOverrideCreate,
    PriceOverrideRead,
    PriceQuote,
    PriceQuoteRequest,
)
from chatledger.pricing import usd
from chatledger.providers import split_model
from chatledger.server.deps import CallerDep, DatabaseDep, WriterDep

router = APIRouter(prefix="/v1/prices", tags=["prices"])

OverrideId = Annotated[str, Path(pattern=ID_PATTERN)]


@router.get("", response_model=list[PriceOverrideRead])
async def list_overrides(db: DatabaseDep, caller: CallerDep) -> list[PriceOverrideRead]:
    """The project's price overrides, the latest effective first."""
    async with db.reading() as session:
        return [PriceOverrideRead.of(row) for row in await prices.list_overrides(session, caller)]


@router.post("", response_model=PriceOverrideRead, status_code=201)
async def create_override(
    body: PriceOverrideCreate, db: DatabaseDep, caller: WriterDep
) -> PriceOverrideRead:
    """Price the matching models with the project's own rates from `effective_from` on.
    Tasks already recorded keep their cost; owners and admins only."""
    new = prices.NewOverride(
        model_pattern=body.model_pattern,
        rates=body.rates(),
        provider=body.provider,
        effective_from=body.effective_from,
    )
    async with db.transaction() as session:
        return PriceOverrideRead.of(await prices.create(session, caller, new))


@router.delete("/{override_id}", status_code=204)
async def delete_override(override_id: OverrideId, db: DatabaseDep, caller: WriterDep) -> Response:
    async with db.transaction() as session:
        await prices.remove(session, caller, override_id)
    return Response(status_code=204)


@router.post("/quote", response_model=PriceQuote)
async def quote(body: PriceQuoteRequest, db: DatabaseDep, caller: CallerDep) -> PriceQuote:
    """What a call of `model` with `usage` costs in this project at `at` (now if left
    out): the override in force, else genai-prices, else unknown."""
    provider, model = split_model(body.model)
    at = body.at or utcnow()
    async with db.reading() as session:
        price = await prices.price(
            session, caller.project_id, provider, model, body.usage.tokens(), at
        )
    return PriceQuote(
        provider=provider,
        model=model,
        at=at,
        cost_nano=price.cost_nano,
        cost_usd=usd(price.cost_nano),
        price_source=price.source,
    )
