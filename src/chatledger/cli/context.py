"""What every command shares: the settings it was started with, a way to run async code,
and one place that turns chatledger's errors into a message and an exit code."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import TypeVar

import typer
from rich.console import Console

from chatledger.config import Settings
from chatledger.errors import ChatledgerError
from chatledger.ledger import Ledger

T = TypeVar("T")

console = Console()
errors = Console(stderr=True)


@dataclass
class State:
    database_url: str | None

    def settings(self) -> Settings:
        if self.database_url:
            return Settings(database_url=self.database_url)
        return Settings()


def state_of(ctx: typer.Context) -> State:
    """The options given to `chatledger` itself, from any subcommand."""
    state: State = ctx.find_root().obj
    return state


def run_with_ledger(ctx: typer.Context, work: Callable[[Ledger], Awaitable[T]]) -> T:
    """Open the ledger (migrating it if needed), run `work`, close it."""
    state = state_of(ctx)

    async def main() -> T:
        async with Ledger(state.settings()) as ledger:
            return await work(ledger)

    with reported_errors():
        return asyncio.run(main())


@contextlib.contextmanager
def reported_errors() -> Iterator[None]:
    try:
        yield
    except ChatledgerError as exc:
        errors.print(f"[red]error:[/red] {exc.message}")
        raise typer.Exit(1) from exc
