"""`chatledger models`: the providers a `provider/model` string can name with the current
settings (echo always; openai, anthropic and named OpenAI-compatible servers when
configured, with their base URL), and the built-ins still to configure. Keys are never
shown, only whether one is set."""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated

import typer
from pydantic import ValidationError
from rich.table import Table

from chatledger import providers
from chatledger.cli.context import console, errors, state_of
from chatledger.cli.render import as_json

JsonFlag = Annotated[bool, typer.Option("--json", help="Output JSON.")]


def models(ctx: typer.Context, json: JsonFlag = False) -> None:
    """List the model providers configured (from CHATLEDGER_* settings) and how to use them."""
    try:
        settings = state_of(ctx).settings()
    except ValidationError as exc:
        errors.print(f"[red]error:[/red] invalid settings: {exc}")
        raise typer.Exit(1) from None
    infos = providers.Providers(settings).describe()
    if json:
        body = {"default_model": settings.default_model, "providers": [asdict(i) for i in infos]}
        console.print_json(as_json(body))
        return
    table = Table("provider", "kind", "key", "use as", title="model providers")
    table.add_column("base URL", overflow="fold")
    for info in infos:
        if info.configured:
            key = "set" if info.has_key else "-"
            table.add_row(info.name, info.kind, key, f"{info.name}/<model>", info.base_url or "-")
        else:
            table.add_row(info.name, info.kind, "-", "[dim]not configured[/dim]", "-")
    console.print(table)
    for info in infos:
        if info.hint:
            console.print(f"[dim]{info.hint}[/dim]")
    console.print(f"default model: {settings.default_model}")
