"""`chatledger vars`: scoped variables as the local user — list (the default), set, get
and rm. The scope is `user` unless `--scope project|org` is given; the scope id is then
you, your project, or its org unless `--scope-id` names another one you may touch."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table
from sqlalchemy.ext.asyncio import AsyncSession

from chatledger.cli.context import console, run_with_ledger
from chatledger.cli.render import as_json
from chatledger.errors import InvalidInput
from chatledger.ledger import Ledger
from chatledger.variables import service as variables
from chatledger.variables.models import SCOPES, Variable

app = typer.Typer(help="Scoped variables: list (default), set, get, rm.", no_args_is_help=False)

JsonFlag = Annotated[bool, typer.Option("--json", help="Output JSON.")]
ScopeOption = Annotated[str, typer.Option("--scope", "-s", help="user | project | org")]
ScopeIdOption = Annotated[
    str | None,
    typer.Option("--scope-id", help="Default: you, your project, or your project's org."),
]


def parse_pairs(pairs: list[str] | None, option: str) -> dict[str, str]:
    """`NAME=VALUE` options as a dict; the value is text (may contain `=`)."""
    found: dict[str, str] = {}
    for pair in pairs or []:
        name, eq, value = pair.partition("=")
        if not eq or not name:
            raise InvalidInput(option, f"expected NAME=VALUE, got {pair!r}")
        found[name] = value
    return found


async def _scope_id(session: AsyncSession, ledger: Ledger, scope: str, given: str | None) -> str:
    if scope not in SCOPES:
        raise InvalidInput("--scope", f"must be one of {', '.join(SCOPES)}")
    if given is not None:
        return given
    if scope == "user":
        return ledger.caller.user_id
    if scope == "project":
        return ledger.caller.project_id
    org_id = await variables.org_of(session, ledger.caller)
    if org_id is None:
        raise InvalidInput("--scope-id", "your project is in no org; name one with --scope-id")
    return org_id


def _row(variable: Variable) -> dict[str, str | None]:
    return {
        "scope": variable.scope,
        "scope_id": variables.public_scope_id(variable),
        "key": variable.key,
        "value": variable.value,
        "description": variable.description,
        "updated_at": variable.updated_at.isoformat(),
    }


@app.callback(invoke_without_command=True)
def default(
    ctx: typer.Context,
    scope: Annotated[str | None, typer.Option("--scope", "-s", help="Only this scope.")] = None,
    json: JsonFlag = False,
) -> None:
    """`chatledger vars` alone lists variables, as `vars list` does."""
    if ctx.invoked_subcommand is None:
        list_variables(ctx, scope=scope, json=json)


@app.command("list")
def list_variables(
    ctx: typer.Context,
    scope: Annotated[str | None, typer.Option("--scope", "-s", help="Only this scope.")] = None,
    json: JsonFlag = False,
) -> None:
    """The variables that apply to you: your user's, your project's and its org's."""

    async def work(ledger: Ledger) -> list[Variable]:
        async with ledger.database.reading() as session:
            return await variables.list_variables(session, ledger.caller, scope)

    rows = [_row(variable) for variable in run_with_ledger(ctx, work)]
    if json:
        console.print_json(as_json(rows))
        return
    table = Table("scope", "scope id", "key", "value", "description")
    for row in rows:
        table.add_row(
            *(row[name] or "" for name in ("scope", "scope_id", "key", "value", "description"))
        )
    console.print(table)


@app.command("set")
def set_variable(
    ctx: typer.Context,
    key: str,
    value: str,
    scope: ScopeOption = "user",
    scope_id: ScopeIdOption = None,
    description: Annotated[str | None, typer.Option("--description", "-d")] = None,
) -> None:
    """Set a variable (creating or replacing it)."""

    async def work(ledger: Ledger) -> tuple[Variable, bool]:
        async with ledger.database.transaction() as session:
            owner = await _scope_id(session, ledger, scope, scope_id)
            return await variables.put(
                session,
                ledger.caller,
                scope,
                owner,
                key,
                value,
                description,
                keep_description=description is None,
            )

    variable, created = run_with_ledger(ctx, work)
    where = f"{variable.scope}/{variables.public_scope_id(variable)}"
    console.print(f"{'set' if created else 'updated'} {variable.key} at {where}", markup=False)


@app.command("get")
def get_variable(
    ctx: typer.Context,
    key: str,
    scope: ScopeOption = "user",
    scope_id: ScopeIdOption = None,
    json: JsonFlag = False,
) -> None:
    """Print a variable's value (as is, for scripts), or all of it with --json."""

    async def work(ledger: Ledger) -> Variable:
        async with ledger.database.reading() as session:
            owner = await _scope_id(session, ledger, scope, scope_id)
            return await variables.get(session, ledger.caller, scope, owner, key)

    variable = run_with_ledger(ctx, work)
    if json:
        console.print_json(as_json(_row(variable)))
        return
    console.print(variable.value, markup=False, highlight=False, soft_wrap=True)


@app.command("rm")
def remove_variable(
    ctx: typer.Context, key: str, scope: ScopeOption = "user", scope_id: ScopeIdOption = None
) -> None:
    """Delete a variable."""

    async def work(ledger: Ledger) -> str:
        async with ledger.database.transaction() as session:
            owner = await _scope_id(session, ledger, scope, scope_id)
            await variables.remove(session, ledger.caller, scope, owner, key)
            return owner

    owner = run_with_ledger(ctx, work)
    console.print(f"removed {key} from {scope}/{owner}", markup=False)
