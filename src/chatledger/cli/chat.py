"""`chatledger chat`, `retry` and `demo`: run the save flow from a terminal, streaming the
reply as it comes and then showing what was recorded."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer

from chatledger.cli.context import console, run_with_ledger
from chatledger.cli.render import run_tables, turn_table
from chatledger.cli.vars import parse_pairs
from chatledger.engine.chat import Turn
from chatledger.engine.turn import TurnResult
from chatledger.errors import InvalidInput
from chatledger.ledger import Ledger
from chatledger.prompts.service import PromptRef

SettingOption = Annotated[
    list[str] | None,
    typer.Option(
        "--set", "-s", help="A model setting for this turn, KEY=VALUE (e.g. delay_ms=50)."
    ),
]


def parse_settings(pairs: list[str] | None) -> dict[str, Any]:
    settings: dict[str, Any] = {}
    for pair in pairs or []:
        key, eq, raw = pair.partition("=")
        if not eq or not key:
            raise InvalidInput("--set", f"expected KEY=VALUE, got {pair!r}")
        try:
            settings[key] = json.loads(raw)
        except json.JSONDecodeError:
            settings[key] = raw
    return settings


async def stream_turn(turn: Turn) -> TurnResult:
    """Print the reply as it streams, then the record of it."""
    async for event in turn.events():
        if event.kind == "delta":
            console.print(event.data["text"], end="", markup=False, highlight=False)
        elif event.kind == "error":
            console.print(f"\n[red]reply failed:[/red] {event.data['message']}", end="")
    console.print()
    result = await turn.result()
    console.print(turn_table(result))
    return result


def chat(
    ctx: typer.Context,
    message: Annotated[str, typer.Argument(help="What to say.")],
    run: Annotated[str | None, typer.Option("--run", "-r", help="Continue this run.")] = None,
    model: Annotated[str | None, typer.Option("--model", "-m", help="provider/model")] = None,
    settings: SettingOption = None,
    prompt: Annotated[
        str | None, typer.Option("--prompt", "-p", help="Start the run from this prompt.")
    ] = None,
    prompt_version: Annotated[
        int | None, typer.Option("--prompt-version", help="That prompt's version.")
    ] = None,
    prompt_label: Annotated[
        str | None, typer.Option("--prompt-label", help="That prompt's version so labelled.")
    ] = None,
    variables: Annotated[
        list[str] | None, typer.Option("--var", help="A prompt variable, NAME=VALUE.")
    ] = None,
) -> None:
    """Send a message (a new run, or --run to continue one) and stream the reply. With
    --prompt, the prompt's messages (variables filled) come first in the run."""

    async def work(ledger: Ledger) -> TurnResult:
        ref = None
        if prompt is not None:
            ref = PromptRef(prompt, prompt_version, prompt_label)
        elif prompt_version is not None or prompt_label is not None:
            raise InvalidInput("--prompt", "name the prompt whose version or label to use")
        turn = await ledger.chat(
            message,
            run_id=run,
            model=model,
            settings=parse_settings(settings),
            prompt=ref,
            variables=parse_pairs(variables, "--var"),
        )
        return await stream_turn(turn)

    if run_with_ledger(ctx, work).status != "completed":
        raise typer.Exit(1)


def retry(
    ctx: typer.Context,
    message_id: Annotated[str, typer.Argument(help="The user message whose reply failed.")],
    model: Annotated[str | None, typer.Option("--model", "-m")] = None,
    settings: SettingOption = None,
) -> None:
    """Answer a failed message again: same message, a new task attempt."""

    async def work(ledger: Ledger) -> TurnResult:
        options: dict[str, Any] = {"settings": parse_settings(settings)}
        if model:
            options["model"] = model
        return await stream_turn(await ledger.retry(message_id, **options))

    if run_with_ledger(ctx, work).status != "completed":
        raise typer.Exit(1)


DEMO_TURNS = (
    "I want to become an NBA basketball player. Where do I start?",
    "And what should I eat on game days?",
)


def demo(ctx: typer.Context) -> None:
    """A short scripted conversation (a first message and a follow-up in one run), then
    the run as stored and a verification of its totals."""

    async def work(ledger: Ledger) -> int:
        console.rule(f"[bold]chatledger demo[/bold] on {ledger.settings.database_url}")
        run_id = None
        for content in DEMO_TURNS:
            console.print(f"[bold cyan]you:[/bold cyan] {content}")
            console.print("[bold green]echo:[/bold green] ", end="")
            turn = await ledger.chat(content, run_id=run_id, settings={"delay_ms": 15})
            run_id = (await stream_turn(turn)).run_id
        assert run_id is not None
        for table in run_tables(await ledger.get_run(run_id)):
            console.print(table)
        drifts = await ledger.verify()
        console.print(f"verify: {'clean' if not drifts else f'{len(drifts)} drifts'}")
        return len(drifts)

    if run_with_ledger(ctx, work):
        raise typer.Exit(1)
