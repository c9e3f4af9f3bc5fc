"""`chatledger db`: where the database is, bringing it up to date, and sweeping tasks
whose writer died."""

from __future__ import annotations

import typer
from sqlalchemy.engine import make_url

from chatledger.cli.context import console, run_with_ledger, state_of
from chatledger.db.migrate import current_revision
from chatledger.ledger import Ledger

app = typer.Typer(help="The database: path, upgrade, sweep.", no_args_is_help=True)


@app.command("path")
def path(ctx: typer.Context) -> None:
    """Print the database in use (the file for SQLite, the URL without password otherwise)."""
    url = make_url(state_of(ctx).settings().database_url)
    if url.get_backend_name() == "sqlite":
        console.print(url.database, markup=False, highlight=False, soft_wrap=True)
    else:
        console.print(url.render_as_string(hide_password=True), markup=False, soft_wrap=True)


@app.command("upgrade")
def upgrade(ctx: typer.Context) -> None:
    """Apply any pending migrations (opening the database does this too)."""

    async def work(ledger: Ledger) -> str | None:
        return await current_revision(ledger.database)

    console.print(f"database at revision {run_with_ledger(ctx, work)}")


@app.command("sweep")
def sweep(ctx: typer.Context) -> None:
    """End tasks with no heartbeat for the lease as `interrupted`, keeping their text."""

    async def work(ledger: Ledger) -> list[str]:
        return await ledger.sweep()

    swept = run_with_ledger(ctx, work)
    console.print(f"interrupted {len(swept)} task(s)")
    for task_id in swept:
        console.print(f"  {task_id}")
