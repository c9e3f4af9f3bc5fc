"""`chatledger serve`: the HTTP API under uvicorn. `--no-auth` (every request is the local
user) is for one person on one machine, so it is refused unless bound to loopback."""

from __future__ import annotations

import ipaddress
from typing import Annotated

import typer

from chatledger.cli.context import errors, state_of

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
) -> None:
    """Run the HTTP API (migrating the database first)."""
    if no_auth and not is_loopback(host):
        errors.print(
            f"[red]error:[/red] --no-auth serves anyone who can reach {host}: it is only "
            "allowed on a loopback address (127.0.0.1, ::1, localhost). Use API keys "
            "(chatledger keys) to serve other machines."
        )
        raise typer.Exit(USAGE_ERROR)
    # Imported here: the server's dependencies need not load for every command.
    import uvicorn

    from chatledger.server.app import create_app

    app = create_app(state_of(ctx).settings(), no_auth=no_auth)
    uvicorn.run(app, host=host, port=port)
