"""`chatledger verify`: prove every total equals the rows it sums; exit 1 naming any drift."""

from __future__ import annotations

from typing import Annotated

import typer

from chatledger.cli.context import console, errors, run_with_ledger
from chatledger.ledger import Ledger
from chatledger.verify import Drift


def verify(
    ctx: typer.Context,
    fix: Annotated[
        bool, typer.Option("--repair", help="Rewrite drifted totals from their rows.")
    ] = False,
) -> None:
    """Recompute run aggregates and daily usage from the rows; exit 1 on any drift."""

    async def work(ledger: Ledger) -> list[Drift]:
        return await ledger.verify(fix=fix)

    drifts = run_with_ledger(ctx, work)
    if not drifts:
        console.print("verify: every total equals its rows")
        return
    for drift in drifts:
        (console if fix else errors).print(f"{'repaired' if fix else 'drift'}: {drift}")
    if not fix:
        raise typer.Exit(1)
