"""`chatledger prompts`: the prompt library as the local user — list (the default),
show, create, version, label, render and builtins. A template is given with --system /
--user texts or --file (JSON: messages, variables, settings, description)."""

from __future__ import annotations

import json as jsonlib
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from pydantic import BaseModel, ValidationError
from rich.table import Table

from chatledger.cli.chat import parse_settings
from chatledger.cli.context import console, reported_errors, run_with_ledger
from chatledger.cli.render import as_json
from chatledger.cli.vars import parse_pairs
from chatledger.errors import InvalidInput
from chatledger.ledger import Ledger
from chatledger.prompts import rendering
from chatledger.prompts import service as prompts
from chatledger.prompts.builtins import SYSTEM_PROJECT, is_builtin
from chatledger.prompts.models import Prompt, PromptVersion
from chatledger.prompts.schemas import PromptCreate, VersionCreate

app = typer.Typer(
    help="Prompts: list (default), show, create, version, label, render, builtins.",
    no_args_is_help=False,
)

M = TypeVar("M", bound=BaseModel)
JsonFlag = Annotated[bool, typer.Option("--json", help="Output JSON.")]
Pairs = list[str] | None
SystemOption = Annotated[str | None, typer.Option("--system", help="The system message.")]
UserOption = Annotated[str | None, typer.Option("--user", help="A user message after it.")]
FileOption = Annotated[
    Path | None, typer.Option("--file", "-f", help="JSON: messages, variables, settings.")
]
DefaultOption = Annotated[
    Pairs, typer.Option("--default", help="Declare a variable with a default, NAME=VALUE.")
]
SetOption = Annotated[Pairs, typer.Option("--set", "-s", help="A model setting, KEY=VALUE.")]
VersionOption = Annotated[int | None, typer.Option("--version", "-v", help="This version.")]
LabelOption = Annotated[str | None, typer.Option("--label", "-l", help="The version so labelled.")]


def _validated(model: type[M], data: dict[str, Any]) -> M:
    """Checked as the API checks it; the first problem is the error, naming its field."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        error = exc.errors()[0]
        field = ".".join(str(part) for part in error["loc"]) or "prompt"
        raise InvalidInput(field, error["msg"]) from None


def _template(
    file: Path | None, system: str | None, user: str | None, defaults: Pairs, settings: Pairs
) -> dict[str, Any]:
    data: dict[str, Any] = {}
    if file is not None:
        try:
            data = jsonlib.loads(file.read_text())
        except (OSError, ValueError) as exc:
            raise InvalidInput("--file", f"not a readable JSON file: {exc}") from None
        if not isinstance(data, dict):
            raise InvalidInput("--file", "must hold a JSON object")
    texts = [("system", system), ("user", user)]
    if system is not None or user is not None:
        data["messages"] = [{"role": r, "content": text} for r, text in texts if text is not None]
    if defaults:
        declared = parse_pairs(defaults, "--default")
        data["variables"] = [{"name": n, "default": v} for n, v in declared.items()]
    if settings:
        data["settings"] = parse_settings(settings)
    return data


def _version_dict(prompt: Prompt, version: PromptVersion, labels: dict[str, int]) -> dict[str, Any]:
    return {
        "name": prompt.name,
        "description": prompt.description,
        "builtin": is_builtin(prompt.project_id),
        "labels": labels,
        "version": version.version,
        "version_id": version.id,
        "messages": version.messages,
        "variables": version.variables,
        "settings": version.settings,
    }


def _print_version(detail: dict[str, Any]) -> None:
    labels = ", ".join(f"{label}={n}" for label, n in detail["labels"].items())
    kind = " (built-in)" if detail["builtin"] else ""
    console.print(f"{detail['name']}{kind} v{detail['version']}  [{labels}]", markup=False)
    for message in detail["messages"]:
        console.print(f"--- {message['role']}", markup=False)
        console.print(message["content"], markup=False, highlight=False, soft_wrap=True)


async def _shown(
    ledger: Ledger, name: str, version: int | None, label: str | None
) -> dict[str, Any]:
    async with ledger.database.reading() as session:
        prompt = await prompts.find(session, ledger.caller, name)
        chosen = await prompts.select_version(session, prompt, version, label)
        labels = await prompts.labels_of(session, [prompt])
    return _version_dict(prompt, chosen, labels[(prompt.project_id, prompt.id)])


def _table(rows: list[dict[str, Any]]) -> Table:
    table = Table("name", "latest", "production", "description")
    for row in rows:
        labels = row["labels"]
        table.add_row(
            row["name"],
            str(labels.get("latest", "")),
            str(labels.get("production", "")),
            row["description"] or "",
        )
    return table


def _listing(
    ctx: typer.Context, project: str | None, limit: int, query: str | None, json: bool
) -> None:
    async def work(ledger: Ledger) -> list[dict[str, Any]]:
        async with ledger.database.reading() as session:
            found = await prompts.list_prompts(
                session, project or ledger.caller.project_id, limit=limit, query=query
            )
            labels = await prompts.labels_of(session, found)
        return [
            {
                "name": p.name,
                "description": p.description,
                "builtin": is_builtin(p.project_id),
                "labels": labels[(p.project_id, p.id)],
            }
            for p in found
        ]

    rows = run_with_ledger(ctx, work)
    if json:
        console.print_json(as_json(rows))
    else:
        console.print(_table(rows))


LimitOption = Annotated[int, typer.Option("--limit", "-n", help="How many; 0 = all.")]
QueryOption = Annotated[str | None, typer.Option("-q", help="Search prompt names.")]


@app.callback(invoke_without_command=True)
def default(
    ctx: typer.Context, limit: LimitOption = 50, query: QueryOption = None, json: JsonFlag = False
) -> None:
    """`chatledger prompts` alone lists prompts, as `prompts list` does."""
    if ctx.invoked_subcommand is None:
        _listing(ctx, None, limit, query, json)


@app.command("list")
def list_prompts(
    ctx: typer.Context, limit: LimitOption = 50, query: QueryOption = None, json: JsonFlag = False
) -> None:
    """Your project's prompts, by name."""
    _listing(ctx, None, limit, query, json)


@app.command("builtins")
def builtins(ctx: typer.Context, json: JsonFlag = False) -> None:
    """The prompts shipped with chatledger (read-only; use them by name)."""
    _listing(ctx, SYSTEM_PROJECT, 0, None, json)


@app.command("show")
def show(
    ctx: typer.Context,
    name: str,
    version: VersionOption = None,
    label: LabelOption = None,
    json: JsonFlag = False,
) -> None:
    """A prompt's version: the one asked for, else `production`'s."""

    async def work(ledger: Ledger) -> dict[str, Any]:
        return await _shown(ledger, name, version, label)

    detail = run_with_ledger(ctx, work)
    if json:
        console.print_json(as_json(detail))
    else:
        _print_version(detail)


@app.command("create")
def create(
    ctx: typer.Context,
    name: str,
    system: SystemOption = None,
    user: UserOption = None,
    file: FileOption = None,
    defaults: DefaultOption = None,
    settings: SetOption = None,
    description: Annotated[str | None, typer.Option("--description", "-d")] = None,
) -> None:
    """A new prompt and its first version (labelled production and latest)."""
    with reported_errors():
        data = {**_template(file, system, user, defaults, settings), "name": name}
        if description is not None:
            data["description"] = description
        new = _validated(PromptCreate, data)

    async def work(ledger: Ledger) -> dict[str, Any]:
        async with ledger.database.transaction() as session:
            prompt, version = await prompts.create(session, ledger.caller, new)
        return await _shown(ledger, prompt.name, version.version, None)

    _print_version(run_with_ledger(ctx, work))


@app.command("version")
def add_version(
    ctx: typer.Context,
    name: str,
    system: SystemOption = None,
    user: UserOption = None,
    file: FileOption = None,
    defaults: DefaultOption = None,
    settings: SetOption = None,
    labels: Annotated[Pairs, typer.Option("--label", "-l", help="Also move this label.")] = None,
) -> None:
    """A new version (what is not given is copied from the newest); latest moves to it."""
    with reported_errors():
        data = _template(file, system, user, defaults, settings)
        data.pop("description", None)
        new = _validated(VersionCreate, {**data, "labels": labels or []})

    async def work(ledger: Ledger) -> dict[str, Any]:
        async with ledger.database.transaction() as session:
            prompt, version = await prompts.add_version(session, ledger.caller, name, new)
        return await _shown(ledger, prompt.name, version.version, None)

    _print_version(run_with_ledger(ctx, work))


@app.command("label")
def label(ctx: typer.Context, name: str, label: str, version: int) -> None:
    """Point a label at a version, e.g. `prompts label NAME production 3`."""

    async def work(ledger: Ledger) -> None:
        async with ledger.database.transaction() as session:
            await prompts.set_label(session, ledger.caller, name, label, version)

    run_with_ledger(ctx, work)
    console.print(f"{name}: {label} → v{version}", markup=False)


@app.command("render")
def render(
    ctx: typer.Context,
    name: str,
    variables: Annotated[
        Pairs, typer.Option("--var", help="A variable's value, NAME=VALUE.")
    ] = None,
    version: VersionOption = None,
    label: LabelOption = None,
    json: JsonFlag = False,
) -> None:
    """The prompt's messages with its variables filled, and where each value came from."""

    async def work(ledger: Ledger) -> rendering.Rendered:
        given = parse_pairs(variables, "--var")
        async with ledger.database.reading() as session:
            ref = prompts.PromptRef(name, version, label)
            return await rendering.render(session, ledger.caller, ref, given)

    rendered = run_with_ledger(ctx, work)
    if json:
        payload = {
            "prompt": rendered.prompt.name,
            "version": rendered.version.version,
            "messages": rendered.messages,
            "variables": {
                n: {"value": r.value, "source": r.source} for n, r in rendered.variables.items()
            },
        }
        console.print_json(as_json(payload))
        return
    for message in rendered.messages:
        console.print(f"--- {message['role']}", markup=False)
        console.print(message["content"], markup=False, highlight=False, soft_wrap=True)
    for name_, resolved in rendered.variables.items():
        console.print(f"{name_} = {resolved.value!r} ({resolved.source})", markup=False)
