"""The `chatledger` command: noun groups with a sensible default verb, the same flags
everywhere (`--json`, `-n/--limit`, `-q`)."""

from __future__ import annotations

from typing import Annotated

import typer

from chatledger.cli import chat, db, models, prices, prompts, runs, serve, tenancy, verify
from chatledger.cli import vars as variables
from chatledger.cli.context import State

app = typer.Typer(
    name="chatledger",
    help="The persistence and accounting layer for AI chat and agent applications.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)


@app.callback()
def main_options(
    ctx: typer.Context,
    database_url: Annotated[
        str | None,
        typer.Option(
            "--db",
            envvar="CHATLEDGER_DATABASE_URL",
            help="Database URL (default: a SQLite file in the user data dir).",
            show_envvar=True,
        ),
    ] = None,
) -> None:
    ctx.obj = State(database_url)


app.command("serve")(serve.serve)
app.command("chat")(chat.chat)
app.command("retry")(chat.retry)
app.command("demo")(chat.demo)
app.add_typer(runs.app, name="runs")
app.command("verify")(verify.verify)
app.command("models")(models.models)
app.add_typer(db.app, name="db")
app.add_typer(tenancy.users, name="users")
app.add_typer(tenancy.keys, name="keys")
app.add_typer(prompts.app, name="prompts")
app.add_typer(variables.app, name="vars")
app.add_typer(prices.app, name="prices")


def main() -> None:
    app()
