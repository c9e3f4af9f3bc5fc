"""`chatledger runs`: list runs (the default) and show one with its messages and tasks."""

from __future__ import annotations

from typing import Annotated

import typer

from chatledger.cli.context import console, run_with_ledger
from chatledger.cli.render import as_json, run_dict, run_tables, runs_table, task_dict
from chatledger.ledger import Ledger

app = typer.Typer(help="Conversations: list (default) and show.", no_args_is_help=False)

JsonFlag = Annotated[bool, typer.Option("--json", help="Output JSON.")]


LimitOption = Annotated[int, typer.Option("--limit", "-n", help="How many; 0 = all.")]
QueryOption = Annotated[str | None, typer.Option("-q", help="Search run names.")]


@app.callback(invoke_without_command=True)
def default(
    ctx: typer.Context, limit: LimitOption = 20, query: QueryOption = None, json: JsonFlag = False
) -> None:
    """`chatledger runs` alone lists runs, and takes the same options as `runs list`."""
    if ctx.invoked_subcommand is None:
        list_runs(ctx, limit=limit, query=query, json=json)


@app.command("list")
def list_runs(
    ctx: typer.Context, limit: LimitOption = 20, query: QueryOption = None, json: JsonFlag = False
) -> None:
    """Runs, most recent activity first."""

    async def work(ledger: Ledger) -> None:
        runs = await ledger.list_runs(limit=limit, query=query)
        if json:
            console.print_json(as_json([run_dict(run) for run in runs]))
        else:
            console.print(runs_table(runs))

    run_with_ledger(ctx, work)


@app.command("show")
def show(ctx: typer.Context, run_id: str, json: JsonFlag = False) -> None:
    """One run: aggregates, messages and tasks."""

    async def work(ledger: Ledger) -> None:
        detail = await ledger.get_run(run_id)
        if json:
            payload = run_dict(detail.run)
            payload["messages"] = [
                {"id": m.id, "seq": m.seq, "role": m.role, "status": m.status, "content": m.content}
                for m in detail.messages
            ]
            payload["tasks"] = [task_dict(task) for task in detail.tasks]
            console.print_json(as_json(payload))
            return
        for table in run_tables(detail):
            console.print(table)

    run_with_ledger(ctx, work)
