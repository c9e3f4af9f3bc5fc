"""`chatledger users` and `chatledger keys`: what an operator does on the server's
database directly — create users (with a personal project and a first key), and create,
list and revoke API keys. Secrets are printed once and never stored."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from chatledger.cli.context import console, run_with_ledger
from chatledger.cli.render import as_json, when
from chatledger.errors import NotFound
from chatledger.ledger import Ledger
from chatledger.tenants import keys as api_keys
from chatledger.tenants import service as tenants
from chatledger.tenants.models import ApiKey, Project

users = typer.Typer(help="Users: create.", no_args_is_help=True)
keys = typer.Typer(help="API keys: create, list, revoke.", no_args_is_help=True)

JsonFlag = Annotated[bool, typer.Option("--json", help="Output JSON.")]
ProjectOption = Annotated[str, typer.Option("--project", "-p", help="The project id.")]


@users.command("create")
def create_user(
    ctx: typer.Context,
    user_id: Annotated[str | None, typer.Option("--id", help="Default: a new UUIDv7.")] = None,
    email: Annotated[str | None, typer.Option("--email")] = None,
    name: Annotated[str | None, typer.Option("--name")] = None,
    json: JsonFlag = False,
) -> None:
    """A user with a personal project they own, and a user key for it (shown once)."""

    async def work(ledger: Ledger) -> dict[str, str]:
        async with ledger.database.transaction() as session:
            user, project = await tenants.create_user(session, user_id, email, name)
            new = await api_keys.create(session, project.id, user.id, "user", "created with user")
        return {
            "user_id": user.id,
            "project_id": project.id,
            "key_id": new.key.id,
            "key": new.secret,
        }

    created = run_with_ledger(ctx, work)
    if json:
        console.print_json(as_json(created))
        return
    console.print(f"user {created['user_id']} in project {created['project_id']}")
    console.print(f"API key (shown once, store it now): {created['key']}", markup=False)


@keys.command("create")
def create_key(
    ctx: typer.Context,
    project: ProjectOption,
    user: Annotated[str, typer.Option("--user", "-u", help="Who the key acts as (or made it).")],
    kind: Annotated[str, typer.Option("--kind", help="user | service")] = "user",
    name: Annotated[str | None, typer.Option("--name")] = None,
    json: JsonFlag = False,
) -> None:
    """A key for a user in a project (a service key acts for the whole project)."""

    async def work(ledger: Ledger) -> dict[str, str]:
        async with ledger.database.transaction() as session:
            if await session.get(Project, project) is None:
                raise NotFound("project", project)
            if kind == "user" and await tenants.project_role(session, project, user) is None:
                raise NotFound("membership of user in project", user)
            await tenants.ensure_user(session, user)
            new = await api_keys.create(session, project, user, kind, name)
        return {"key_id": new.key.id, "prefix": new.key.prefix, "key": new.secret}

    created = run_with_ledger(ctx, work)
    if json:
        console.print_json(as_json(created))
        return
    console.print(
        f"key {created['key_id']} (shown once, store it now): {created['key']}", markup=False
    )


@keys.command("list")
def list_keys(ctx: typer.Context, project: ProjectOption, json: JsonFlag = False) -> None:
    """A project's keys: prefixes only, never secrets."""

    async def work(ledger: Ledger) -> list[ApiKey]:
        async with ledger.database.reading() as session:
            return await api_keys.list_keys(session, project, None)

    found = run_with_ledger(ctx, work)
    rows = [
        {
            "id": k.id,
            "prefix": k.prefix,
            "kind": k.kind,
            "user_id": k.user_id,
            "name": k.name,
            "last_used_at": when(k.last_used_at),
            "revoked_at": when(k.revoked_at),
        }
        for k in found
    ]
    if json:
        console.print_json(as_json(rows))
        return
    table = Table("prefix", "kind", "user", "name", "last used", "revoked")
    table.add_column("id", no_wrap=True)
    for row in rows:
        table.add_row(
            row["prefix"],
            row["kind"],
            row["user_id"],
            row["name"] or "",
            row["last_used_at"],
            row["revoked_at"],
            row["id"],
        )
    console.print(table)


@keys.command("revoke")
def revoke_key(ctx: typer.Context, key_id: str, project: ProjectOption) -> None:
    """Revoke a key: requests with it fail from now on."""

    async def work(ledger: Ledger) -> ApiKey:
        async with ledger.database.transaction() as session:
            return await api_keys.revoke(session, project, key_id, None)

    key = run_with_ledger(ctx, work)
    console.print(f"revoked {key.id} ({key.prefix}…) at {when(key.revoked_at)}")
