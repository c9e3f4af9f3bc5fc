"""`chatledger prices`: the local project's price overrides — list (the default), add,
rm — and `quote`, what a call would cost here. Prices are USD per million tokens."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any

import typer
from pydantic import ValidationError
from rich.table import Table

from chatledger.cli.context import console, reported_errors, run_with_ledger
from chatledger.cli.render import as_json
from chatledger.db.types import utcnow
from chatledger.errors import InvalidInput
from chatledger.ledger import Ledger
from chatledger.prices import service as prices
from chatledger.prices.models import PriceOverride
from chatledger.prices.schemas import PriceOverrideCreate, PriceOverrideRead
from chatledger.pricing import Price, usd
from chatledger.providers import split_model
from chatledger.tokens import TokenUsage

app = typer.Typer(help="Price overrides: list (default), add, rm, quote.", no_args_is_help=False)

JsonFlag = Annotated[bool, typer.Option("--json", help="Output JSON.")]
Rate = Annotated[Decimal | None, typer.Option(help="USD per million tokens.")]
Tokens = Annotated[int, typer.Option(min=0)]


@app.callback(invoke_without_command=True)
def default(ctx: typer.Context, json: JsonFlag = False) -> None:
    """`chatledger prices` alone lists the overrides, as `prices list` does."""
    if ctx.invoked_subcommand is None:
        list_overrides(ctx, json=json)


@app.command("list")
def list_overrides(ctx: typer.Context, json: JsonFlag = False) -> None:
    """The project's overrides, the latest effective first."""

    async def work(ledger: Ledger) -> list[PriceOverride]:
        async with ledger.database.reading() as session:
            return await prices.list_overrides(session, ledger.caller)

    rows = [PriceOverrideRead.of(row).model_dump(mode="json") for row in run_with_ledger(ctx, work)]
    if json:
        console.print_json(as_json(rows))
        return
    table = Table("id", "provider", "models", "from", "input", "output", "cache read", "write")
    for row in rows:
        table.add_row(
            row["id"],
            row["provider"] or "any",
            row["model_pattern"],
            row["effective_from"][:19],
            *(_rate(row[name]) for name in _RATES),
        )
    console.print(table)


@app.command("add")
def add_override(
    ctx: typer.Context,
    model_pattern: Annotated[str, typer.Argument(help="A glob over model names: 'gpt-4o*'.")],
    input_rate: Annotated[Decimal, typer.Option("--input", help="USD per million tokens.")],
    output_rate: Annotated[Decimal, typer.Option("--output", help="USD per million tokens.")],
    cache_read: Rate = None,
    cache_write: Rate = None,
    provider: Annotated[str | None, typer.Option(help="Default: every provider.")] = None,
    effective_from: Annotated[
        datetime | None, typer.Option("--from", help="Default: now. Without a zone: UTC.")
    ] = None,
) -> None:
    """Price the matching models at these rates from a date on (owners and admins)."""
    with reported_errors():
        body = _validated(
            model_pattern=model_pattern,
            provider=provider,
            effective_from=None if effective_from is None else _aware(effective_from),
            input_per_mtok=input_rate,
            output_per_mtok=output_rate,
            cache_read_per_mtok=cache_read,
            cache_write_per_mtok=cache_write,
        )
    new = prices.NewOverride(
        model_pattern=body.model_pattern,
        rates=body.rates(),
        provider=body.provider,
        effective_from=body.effective_from,
    )

    async def work(ledger: Ledger) -> PriceOverride:
        async with ledger.database.transaction() as session:
            return await prices.create(session, ledger.caller, new)

    row = run_with_ledger(ctx, work)
    console.print(f"added {row.id}: {row.model_pattern} of {row.provider or 'any provider'}")


@app.command("rm")
def remove_override(ctx: typer.Context, override_id: str) -> None:
    """Delete an override: later calls are priced without it."""

    async def work(ledger: Ledger) -> None:
        async with ledger.database.transaction() as session:
            await prices.remove(session, ledger.caller, override_id)

    run_with_ledger(ctx, work)
    console.print(f"removed {override_id}", markup=False)


@app.command("quote")
def quote(
    ctx: typer.Context,
    model: Annotated[str, typer.Argument(help="provider/model, e.g. openai/gpt-4o")],
    input_tokens: Tokens = 0,
    output_tokens: Tokens = 0,
    cached_tokens: Tokens = 0,
    cache_write_tokens: Tokens = 0,
    json: JsonFlag = False,
) -> None:
    """What a call would cost in this project now, and which price says so."""
    provider, name = split_model(model)
    usage = TokenUsage(
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        cached_tokens=cached_tokens,
        cache_write_tokens=cache_write_tokens,
    )

    async def work(ledger: Ledger) -> Price:
        async with ledger.database.reading() as session:
            return await prices.price(
                session, ledger.caller.project_id, provider, name, usage, utcnow()
            )

    price = run_with_ledger(ctx, work)
    cost = usd(price.cost_nano)
    if json:
        shown_cost = None if cost is None else f"{cost:f}"
        console.print_json(as_json({"cost_usd": shown_cost, "price_source": price.source}))
        return
    shown = "unknown" if cost is None else f"${cost.normalize():f}"
    console.print(f"{shown} ({price.source})", markup=False)


_RATES = ("input_per_mtok", "output_per_mtok", "cache_read_per_mtok", "cache_write_per_mtok")
_OPTIONS = dict(zip(_RATES, ("--input", "--output", "--cache-read", "--cache-write"), strict=True))
_OPTIONS |= {"provider": "--provider", "effective_from": "--from"}


def _validated(**fields: Any) -> PriceOverrideCreate:
    """The options checked as the API checks a body: one rule for both."""
    try:
        return PriceOverrideCreate(**fields)
    except ValidationError as exc:
        error = exc.errors()[0]
        field = str(error["loc"][0])
        raise InvalidInput(_OPTIONS.get(field, field), error["msg"]) from None


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=utcnow().tzinfo)


def _rate(value: str | None) -> str:
    return "=input" if value is None else f"${Decimal(value).normalize():f}"
