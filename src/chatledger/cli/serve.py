"""`chatledger serve`: the HTTP API under uvicorn. `--no-auth` (every request is the local
user) is for one person on one machine, so it is refused unless bound to loopback.

`--workers N` runs N processes on one port, which is how the API uses more than one core:
each is a replica as DESIGN.md has them (stateless; a live reply another worker answers is
followed through the database; rate limits are per key and process). Each worker starts
afresh under chatledger's supervisor (server/supervisor.py), so what `serve` was given
travels in the environment (server/worker.py).
"""

from __future__ import annotations

import asyncio
import ipaddress
import os
import sys
from typing import Annotated

import typer

from chatledger.cli.context import errors, reported_errors, state_of
from chatledger.db.migrate import upgrade_at
from chatledger.server import supervisor, worker

# typer's own exit status for a usage error: this is one.
USAGE_ERROR = 2


def is_loopback(host: str) -> bool:
    """127.0.0.0/8, ::1 or localhost; anything else (0.0.0.0, a name…) may be reachable."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def serve(
    ctx: typer.Context,
    host: Annotated[str, typer.Option(help="Address to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535, help="Port to listen on.")] = 8000,
    no_auth: Annotated[
        bool,
        typer.Option(
            "--no-auth", help="No API keys: every request is the local user (loopback only)."
        ),
    ] = False,
    workers: Annotated[
        int, typer.Option(min=1, help="Processes serving the port (one per core).")
    ] = 1,
) -> None:
    """Run the HTTP API (migrating the database first)."""
    if no_auth and not is_loopback(host):
        errors.print(
            f"[red]error:[/red] --no-auth serves anyone who can reach {host}: it is only "
            "allowed on a loopback address (127.0.0.1, ::1, localhost). Use API keys "
            "(chatledger keys) to serve other machines."
        )
        raise typer.Exit(USAGE_ERROR)
    settings = state_of(ctx).settings()
    if workers == 1:
        # Imported here: the server's dependencies need not load for every command.
        import uvicorn

        from chatledger.server.app import create_app

        uvicorn.run(create_app(settings, no_auth=no_auth, serving=True), host=host, port=port)
        return
    # Migrated here, once, before the workers start: each then finds its schema up to
    # date and never loads alembic (~12 MB a worker, db/migrate.py), and a database that
    # cannot be migrated fails this command instead of every worker.
    with reported_errors():
        asyncio.run(upgrade_at(settings.database_url))
    os.environ[worker.DATABASE_URL_ENV] = settings.database_url
    os.environ[worker.NO_AUTH_ENV] = "1" if no_auth else "0"
    # The supervisor only watches its workers: this process becomes it (same pid, so
    # signals and process managers see no difference), without the ~60 MB that the CLI
    # and chatledger's imports hold here (server/supervisor.py).
    worker_command = [sys.executable, "-m", worker.__name__]
    options = ["--host", host, "--port", str(port), "--workers", str(workers)]
    os.execv(
        sys.executable,
        [sys.executable, "-m", supervisor.__name__, *options, "--", *worker_command],
    )
